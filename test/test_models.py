"""Model families, checkpoint formats and their errors."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_spec
from ditta_ros.model.build import CheckpointError, ModelSpec, build_model
from ditta_ros.prediction import resize_logits


def _state_in_reference_layout(model):
    state = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    state.update({f'decode_head.{k}': v for k, v in model.decode_head.state_dict().items()})
    return state


def _plain_logits(model, x):
    with torch.no_grad():
        logits, _ = model.clip_logits(model.decode_head, x)
    return logits


def test_reference_layout_round_trip_gives_identical_outputs(tmp_path):
    source = build_model(tiny_spec(init_seed=7)).eval()
    path = tmp_path / 'mmseg.pth'
    torch.save({'state_dict': _state_in_reference_layout(source), 'meta': {}}, path)
    loaded = build_model(tiny_spec(checkpoint=str(path), init_seed=99)).eval()
    x = torch.randn(1, 3, 64, 96)
    assert torch.equal(_plain_logits(source, x), _plain_logits(loaded, x))


@pytest.mark.parametrize('variant', ['b0', 'b1'])
def test_named_mit_variants_build_and_run(variant):
    model = build_model(ModelSpec(variant=variant, num_classes=5, embed_dim=32)).eval()
    logits = _plain_logits(model, torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 5, 16, 16)


def test_huggingface_segformer_folder_loads_with_identical_outputs(tmp_path):
    transformers = pytest.importorskip('transformers')
    config = transformers.SegformerConfig(
        num_labels=7, hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 2, 4, 8],
        depths=[1, 2, 1, 1], decoder_hidden_size=32, sr_ratios=[8, 4, 2, 1])
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        hf.decode_head.batch_norm.running_mean.uniform_(-0.5, 0.5)
        hf.decode_head.batch_norm.running_var.uniform_(0.5, 2.0)
    folder = tmp_path / 'hf_segformer'
    hf.save_pretrained(folder)
    assert json.loads((folder / 'config.json').read_text())['model_type'] == 'segformer'
    ours = build_model(ModelSpec(checkpoint=str(folder), num_classes=7, window=2)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = hf(pixel_values=x).logits
    got = _plain_logits(ours, x[:1])
    torch.testing.assert_close(got, want[:1], atol=1e-4, rtol=1e-4)
    assert ours.identity.variant.startswith('hf:')


TORCHVISION_CASES = [('deeplabv3', 'mobilenet_v3_large'), ('lraspp', 'mobilenet_v3_large'),
                     ('deeplabv3', 'resnet50')]


@pytest.mark.parametrize('family,variant', TORCHVISION_CASES)
def test_torchvision_state_dict_loads_with_identical_outputs(tmp_path, family, variant):
    from torchvision.models import segmentation as tv
    builder = {'deeplabv3/mobilenet_v3_large': tv.deeplabv3_mobilenet_v3_large,
               'lraspp/mobilenet_v3_large': tv.lraspp_mobilenet_v3_large,
               'deeplabv3/resnet50': tv.deeplabv3_resnet50}[f'{family}/{variant}']
    torch.manual_seed(1)
    kwargs = dict(weights=None, weights_backbone=None, num_classes=6)
    if family == 'deeplabv3':
        kwargs['aux_loss'] = True  # aux_classifier keys are present and ignored
    reference = builder(**kwargs).eval()
    path = tmp_path / 'tv.pth'
    torch.save(reference.state_dict(), path)
    ours = build_model(ModelSpec(family=family, variant=variant, checkpoint=str(path),
                                 num_classes=6, window=2)).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want = reference(x)['out']
        logits = _plain_logits(ours, x)
    got = resize_logits(logits, x.shape[-2:], x.shape[-2:])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        build_model(tiny_spec(checkpoint=str(tmp_path / 'nope.pth')))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = build_model(tiny_spec())
    path = tmp_path / 'cut.pth'
    torch.save({'state_dict': _state_in_reference_layout(model)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='cannot read'):
        build_model(tiny_spec(checkpoint=str(path)))


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match='not a model state dict'):
        build_model(tiny_spec(checkpoint=str(path)))


def test_wrong_family_is_a_clear_error(tmp_path):
    path = tmp_path / 'seg.pth'
    torch.save({'state_dict': _state_in_reference_layout(build_model(tiny_spec()))}, path)
    with pytest.raises(CheckpointError, match='wrong family or variant'):
        build_model(ModelSpec(family='lraspp', variant='mobilenet_v3_large',
                              checkpoint=str(path), num_classes=19))


def test_wrong_variant_shape_is_a_clear_error(tmp_path):
    path = tmp_path / 'seg.pth'
    torch.save({'state_dict': _state_in_reference_layout(build_model(tiny_spec()))}, path)
    with pytest.raises(CheckpointError, match='shape'):
        build_model(tiny_spec(checkpoint=str(path), embed_dim=64))


def test_class_count_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / 'seg.pth'
    torch.save({'state_dict': _state_in_reference_layout(build_model(tiny_spec()))}, path)
    with pytest.raises(CheckpointError, match='class-count mismatch.*19.*150'):
        build_model(tiny_spec(checkpoint=str(path), num_classes=150))


def test_missing_addon_is_initialised_reproducibly(tmp_path):
    state = _state_in_reference_layout(build_model(tiny_spec()))
    plain = {k: v for k, v in state.items()
             if not k.startswith(('decode_head.query_layer', 'decode_head.key_layer',
                                  'decode_head.proj_feat'))}
    path = tmp_path / 'plain.pth'
    torch.save(plain, path)
    torch.manual_seed(123)
    a = build_model(tiny_spec(checkpoint=str(path), init_seed=5))
    torch.manual_seed(456)
    b = build_model(tiny_spec(checkpoint=str(path), init_seed=5))
    for (name, pa), pb in zip(a.decode_head.named_parameters(), b.decode_head.parameters()):
        assert torch.equal(pa, pb), name


def test_unknown_family_and_variant_are_clear_errors():
    with pytest.raises(ValueError, match='unknown model family'):
        build_model(ModelSpec(family='unet'))
    with pytest.raises(ValueError, match='unknown SegFormer variant'):
        build_model(ModelSpec(variant='b9'))
    with pytest.raises(ValueError, match='unknown torchvision model'):
        build_model(ModelSpec(family='lraspp', variant='resnet50'))


def _mmseg_head_forward(head, features, dropout_seed=None):
    """The mmseg SegFormer head as written there: every stage embedded, upsampled to the 1/4
    grid, concatenated, fused by the 1x1 conv + BN + ReLU, dropout2d, classifier."""
    size = features[0].shape[2:]
    stages = ((head.linear_c4, features[3]), (head.linear_c3, features[2]),
              (head.linear_c2, features[1]), (head.linear_c1, features[0]))
    maps = [torch.nn.functional.interpolate(layer(x), size=size, mode='bilinear',
                                            align_corners=False) for layer, x in stages]
    embedding = head.linear_fuse(torch.cat(maps, dim=1))
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    dropped = torch.nn.functional.dropout2d(embedding, head.dropout_ratio, head.training)
    return embedding, head.linear_pred(dropped)


@pytest.mark.parametrize('training', [False, True])
def test_folded_segformer_head_equals_the_concatenating_head(training):
    """The head folds linear_fuse into the stage embeddings and the dropout mask into the
    classifier; values, gradients and the dropout random stream must match mmseg's head."""
    torch.manual_seed(0)
    model = build_model(tiny_spec(embed_dim=32)).train(training)
    head = model.decode_head
    features = [f.detach() for f in model.features(torch.randn(2, 3, 64, 96))]
    outputs, grads = [], []
    for forward in (lambda: _mmseg_head_forward(head, features, dropout_seed=3),
                    lambda: (torch.manual_seed(3), head(features))[1]):
        head.zero_grad()
        embedding, logits = forward()
        (embedding.square().mean() + logits.square().mean()).backward()
        outputs.append((embedding.detach(), logits.detach()))
        grads.append([p.grad.clone() for p in head.parameters() if p.grad is not None])
    for ours, theirs in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert len(grads[0]) == len(grads[1]) > 0
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('input_hw, frame_hw', [((48, 64), (48, 64)), ((48, 64), (60, 80)),
                                                 ((24, 32), (24, 32))])
def test_resize_logits_skipping_same_size_steps_equals_both_interpolations(input_hw, frame_hw):
    """The reference always resamples twice; a step at scale 1 must change nothing, in values
    or in gradients."""
    logits = (torch.randn(2, 5, 24, 32) * 20).requires_grad_()
    want = F.interpolate(F.interpolate(logits, size=input_hw, mode='bilinear',
                                       align_corners=False),
                         size=frame_hw, mode='bilinear', align_corners=False)
    got = resize_logits(logits, input_hw, frame_hw)
    assert torch.equal(got, want)
    weights = torch.randn_like(want)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), logits)
    (got_grad,) = torch.autograd.grad((got * weights).sum(), logits)
    assert torch.equal(got_grad, want_grad)
