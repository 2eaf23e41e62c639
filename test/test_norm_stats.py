"""Normalisation statistics from the warm-up: pooled over every frame, blended with the
source's by a prior strength, and what they do to the head's BatchNorm."""
import numpy as np
import pytest
import torch

from conftest import synthetic_clip
from ditta_ros.adapt.norm_stats import statistics_norms, warmup_statistics, with_statistics
from ditta_ros.model.build import ModelSpec, build_model
from ditta_ros.predictor import frame_input
from ditta_ros.preprocess import InputSpec

SPEC = InputSpec(img_scale=(96, 64))


def shifted_clip(frames=4):
    """A foggy version of the synthetic clip: a shift of the features' statistics."""
    return [np.clip(0.4 * f + 140, 0, 255).astype(np.uint8) for f in synthetic_clip(frames)]


def norm_inputs(model, head, frames):
    """The input of the head's first statistics norm on each frame, [N, C, h, w] each."""
    seen = []
    norm = statistics_norms(head)[0]
    hook = norm.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    try:
        with torch.no_grad():
            for frame in frames:
                head(model.features(frame_input(frame, SPEC, 'cpu')))
    finally:
        hook.remove()
    return seen


def test_statistics_are_pooled_over_every_position_of_every_frame(tiny_model):
    frames = shifted_clip()
    stats = warmup_statistics(tiny_model, tiny_model.decode_head, frames, SPEC, 'cpu')
    inputs = torch.cat([x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
                        for x in norm_inputs(tiny_model, tiny_model.decode_head, frames)], dim=1)
    (mean, var), = stats.moments.values()
    assert stats.frames == len(frames)
    torch.testing.assert_close(mean, inputs.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var, inputs.var(1, unbiased=False), rtol=1e-3, atol=1e-5)


def test_the_renormalised_head_maps_the_warmup_features_to_its_affine_parameters(tiny_model):
    frames = shifted_clip()
    source = tiny_model.decode_head
    head = with_statistics(source, warmup_statistics(tiny_model, source, frames, SPEC, 'cpu'))
    norm = statistics_norms(head)[0]
    outputs = []
    hook = norm.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    with torch.no_grad():
        for frame in frames:
            head(tiny_model.features(frame_input(frame, SPEC, 'cpu')))
    hook.remove()
    out = torch.cat([o.permute(1, 0, 2, 3).reshape(o.shape[1], -1) for o in outputs], dim=1)
    torch.testing.assert_close(out.mean(1), norm.bias, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(out.std(1, unbiased=False), norm.weight.abs(), atol=1e-2,
                               rtol=1e-2)
    # the source's statistics do not: the shift is real, and the source head is untouched
    source_norm = statistics_norms(source)[0]
    assert not torch.allclose(source_norm.running_mean, norm.running_mean, atol=1e-2)
    assert head is not source and not head.training


def test_the_prior_strength_blends_source_and_warmup_statistics(tiny_model):
    source = tiny_model.decode_head
    stats = warmup_statistics(tiny_model, source, shifted_clip(4), SPEC, 'cpu')
    (mean, var), = stats.moments.values()
    src = statistics_norms(source)[0]
    for prior, share in ((0.0, 1.0), (4.0, 0.5), (12.0, 0.25)):
        norm = statistics_norms(with_statistics(source, stats, prior))[0]
        torch.testing.assert_close(norm.running_mean,
                                   src.running_mean + share * (mean - src.running_mean))
        torch.testing.assert_close(norm.running_var,
                                   src.running_var + share * (var - src.running_var))
    with pytest.raises(ValueError, match='prior strength'):
        with_statistics(source, stats, -1.0)


def test_a_norm_behind_global_pooling_keeps_its_running_statistics():
    model = build_model(ModelSpec(family='deeplabv3', variant='mobilenet_v3_large',
                                  num_classes=19, window=2)).eval()
    head = model.decode_head
    pooled = head.running_stat_norms()
    assert pooled and not {id(m) for m in pooled} & {id(m) for m in statistics_norms(head)}
    stats = warmup_statistics(model, head, synthetic_clip(2), SPEC, 'cpu')
    renormalised = with_statistics(head, stats)
    for before, after in zip(pooled, renormalised.running_stat_norms()):
        torch.testing.assert_close(before.running_mean, after.running_mean)
    assert len(stats.moments) == len(statistics_norms(head))
    for name, (mean, var) in stats.moments.items():
        assert torch.isfinite(mean).all() and (var >= 0).all(), name


def test_segformer_statistics_do_not_depend_on_the_order_of_the_frames(tiny_model):
    frames = shifted_clip(3)
    forward = warmup_statistics(tiny_model, tiny_model.decode_head, frames, SPEC, 'cpu')
    backward = warmup_statistics(tiny_model, tiny_model.decode_head, frames[::-1], SPEC, 'cpu')
    for name, (mean, var) in forward.moments.items():
        torch.testing.assert_close(mean, backward.moments[name][0])
        torch.testing.assert_close(var, backward.moments[name][1])

