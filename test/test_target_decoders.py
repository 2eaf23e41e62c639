"""The windowed add-on against the dense formulation, and the target-decoder parameter groups
for every model family."""
import copy

import pytest
import torch

from conftest import tiny_spec
from ditta_ros.adapt.ditta import AdaptConfig, DiTTAAdapter
from ditta_ros.model.addon import dense_local_attention, local_attention
from ditta_ros.model.build import ModelSpec, build_model
from ditta_ros.teacher.targets import Target


# grids smaller than a tile, several tiles with padding, radius beyond the tile side, a float
# budget small enough to cut the rows of tiles into several chunks, chunks without grid padding
# before one with padded rows, and a grid of whole tiles
@pytest.mark.parametrize('h,w,radius,budget', [(7, 9, 2, 8 << 20), (12, 5, 5, 8 << 20),
                                               (6, 6, 0, 8 << 20), (3, 11, 4, 8 << 20),
                                               (19, 26, 3, 8 << 20), (30, 17, 10, 8 << 20),
                                               (35, 22, 2, 20_000), (35, 24, 2, 20_000),
                                               (16, 24, 3, 20_000)])
def test_windowed_attention_equals_dense_values_and_gradients(h, w, radius, budget):
    torch.manual_seed(h * w + radius)
    q = (torch.randn(8, h, w) * 2).requires_grad_()
    k = (torch.randn(8, h, w) * 2).requires_grad_()
    v = torch.randn(5, h, w).requires_grad_()
    windowed = local_attention(q, k, v, radius, budget)
    dense = dense_local_attention(q, k, v, radius)
    torch.testing.assert_close(windowed, dense, atol=1e-5, rtol=1e-5)
    grads_w = torch.autograd.grad(windowed.square().sum(), (q, k, v))
    grads_d = torch.autograd.grad(dense.square().sum(), (q, k, v))
    for a, b in zip(grads_w, grads_d):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_windowed_attention_runs_on_a_full_resolution_grid():
    """1/4 of a 1024x2048 frame: 256 x 512 positions (the dense mask would need 17 G entries)."""
    q, k = torch.randn(16, 256, 512), torch.randn(16, 256, 512)
    v = torch.randn(19, 256, 512)
    out = local_attention(q, k, v, 5)
    assert out.shape == (19, 256, 512) and torch.isfinite(out).all()


@pytest.mark.parametrize('attention', ['windowed', 'dense'])
def test_folded_addon_gives_the_add_on_logits_of_the_two_mlps(attention):
    """Folding the key MLP's second layer into the query map shifts each query's attention
    logits by one constant, which the softmax removes: same add-on logits, in fp32 and under
    bf16 autocast (close to the fp32 ones)."""
    torch.manual_seed(3)
    head = build_model(tiny_spec(embed_dim=16, window=2)).decode_head.eval()
    head.attention = attention
    with torch.no_grad():
        for param in head.addon_parameters():      # away from the near-zero initial biases
            param.normal_(0, 0.5)
        e_prev, e, logits_prev = torch.randn(16, 9, 13), torch.randn(16, 9, 13), \
            torch.randn(19, 9, 13) * 3
        want = head.addon_logits(e_prev, e, logits_prev)
        folded = head.folded_addon()
        got = head.attend(folded.query(e), folded.key(e_prev), logits_prev)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            folded = head.folded_addon()
            reduced = head.attend(folded.query(e), folded.key(e_prev), logits_prev)
        assert folded.key(e_prev).dtype == torch.float32     # outside autocast: fp32 again
        assert (reduced.float() - want).abs().mean() < 0.1 * want.abs().mean()


FAMILIES = [tiny_spec(),
            ModelSpec(family='deeplabv3', variant='mobilenet_v3_large', num_classes=4, window=1),
            ModelSpec(family='lraspp', variant='mobilenet_v3_large', num_classes=4, window=1)]


def _one_step(model, target_decoder):
    frames = torch.randn(2, 3, 64, 96)
    obj_id = torch.zeros(64, 96, dtype=torch.int64)
    obj_id[10:40, 20:60] = 1
    obj_id[45:60, 5:30] = 2
    score = torch.zeros(3, model.num_classes)
    score[1, 1] = 0.9
    score[2, 2] = 0.8
    adapter = DiTTAAdapter(model, model.decode_head,
                           AdaptConfig(target_decoder=target_decoder, lr=1e-2))
    before = copy.deepcopy(adapter.head.state_dict())
    backbone_before = copy.deepcopy(model.backbone.state_dict())
    label = torch.randint(0, model.num_classes, (64, 96))
    losses = adapter.step(frames, (64, 96), label, Target(obj_id, score))
    return adapter, before, backbone_before, losses


@pytest.mark.parametrize('spec', FAMILIES, ids=lambda s: s.family)
@pytest.mark.parametrize('target_decoder', ['decoder', 'cls_head', 'addon'])
def test_only_the_chosen_parameters_change(spec, target_decoder):
    model = build_model(spec)
    adapter, before, backbone_before, losses = _one_step(model, target_decoder)
    assert set(losses) == {'distill', 'distill_addon', 'contra', 'total'}
    chosen = {id(p) for p in adapter.head.target_parameters(target_decoder)}
    after = adapter.head.state_dict()
    changed = {name for name, p in adapter.head.named_parameters()
               if not torch.equal(before[name], after[name])}
    should = {name for name, p in adapter.head.named_parameters() if id(p) in chosen}
    assert changed and changed <= should, (changed - should)
    # most of the chosen tensors move (a few may get zero gradient, e.g. biases before BN)
    assert len(changed) >= len(should) // 2
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[name]), name
    for name, value in model.decode_head.state_dict().items():  # the source head is a copy
        assert torch.equal(value, before[name]), name
