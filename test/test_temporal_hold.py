"""The temporal hold of stage D: a grid cell keeps the class it showed unless another class is
e^hold times as probable; none during the warm-up; the preset decides for DiTTA only."""
import numpy as np
import torch

from conftest import synthetic_clip
from ditta_ros.predictor import FramePredictor, held_logits
from ditta_ros.preprocess import InputSpec
from ditta_ros.ros.params import load_parameters
from ditta_ros import settings

SPEC = InputSpec(img_scale=(96, 64))


def test_held_logits_raise_the_held_class_by_the_margin_only():
    logits = torch.tensor([[[[1.0, 0.0]], [[0.5, 3.0]], [[0.0, 0.0]]]])   # [1, 3, 1, 2]
    held = torch.tensor([[1, 0]])
    out = held_logits(logits, held, 2.0)
    assert torch.equal(out[0, :, 0, 0], torch.tensor([1.0, 2.5, 0.0]))   # class 1 held
    assert torch.equal(out[0, :, 0, 1], torch.tensor([2.0, 3.0, 0.0]))   # class 0 held
    # the first cell flips to its held class; the second keeps class 1, whose lead of 3 in
    # logits is more than the margin gives class 0
    assert out.argmax(1).tolist() == [[[1, 1]]]
    assert held_logits(logits, None, 2.0) is logits and held_logits(logits, held, 0.0) is logits


def test_a_large_hold_freezes_the_classes_and_none_lets_them_change(tiny_model):
    first, second = synthetic_clip(frames=8)[0], synthetic_clip(frames=8)[7]
    head = tiny_model.decode_head
    plain = FramePredictor(tiny_model, SPEC, 'cpu')
    a, b = (plain.predict(head, f, fused=False).label for f in (first, second))
    assert (a != b).any(), 'the frames must differ for the test to mean anything'
    held = FramePredictor(tiny_model, SPEC, 'cpu', hold=1e3)
    a_held = held.predict(head, first, fused=False).label
    b_held = held.predict(head, second, fused=False).label
    assert torch.equal(a_held, a)          # nothing to hold on the first frame
    assert (b_held != b).any()             # the second frame shows the first frame's classes
    assert ((b_held == a) | (b_held == b)).float().mean() > 0.9
    # a per-call override of 0 (the warm-up's) is the plain prediction and keeps nothing
    assert torch.equal(held.predict(head, second, fused=False, hold=0.0).label, b)


def test_the_preset_hold_applies_to_ditta_and_no_other_method_unless_set():
    base = load_parameters(overrides={'model.allow_random_weights': True})
    assert settings.stream_config(dict(base, method='ditta')).hold == 2.0
    assert settings.stream_config(dict(base, method='ditta',
                                       **{'adapt.preset': 'reference'})).hold == 0.0
    for method in ('none', 'stats', 'tent'):
        assert settings.stream_config(dict(base, method=method)).hold == 0.0
    assert settings.stream_config(dict(base, method='none', **{'fusion.hold': 1.5})).hold == 1.5
    np.testing.assert_equal(settings.stream_config(dict(base, **{'fusion.hold': 0.0})).hold, 0.0)
