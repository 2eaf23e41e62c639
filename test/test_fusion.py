"""Stage A/D arithmetic: entropy with exact zeros, reliability, the reliability-weighted fusion,
each against a direct float64 computation of the paper's formulas."""
import torch

import pytest

from ditta_ros import prediction
from ditta_ros.prediction import entropy, pixel_outputs, reliability


def _probs(seed: int, classes=6, h=9, w=13, sharpness=4.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(classes, h, w, generator=generator) * sharpness, dim=0)


def _entropy64(probs: torch.Tensor) -> torch.Tensor:
    p = probs.double()
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(0)


def test_entropy_matches_the_formula_and_counts_zero_probabilities_as_zero():
    probs = _probs(0)
    probs[:, :3, :4] = 0.0
    probs[2, :3, :4] = 1.0                        # certain pixels: exact zeros elsewhere
    probs[:, 5, 5] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    got = entropy(probs)
    assert torch.isfinite(got).all()
    assert torch.equal(got[:3, :4], torch.zeros(3, 4))
    torch.testing.assert_close(got.double(), _entropy64(probs), atol=1e-6, rtol=1e-5)
    assert abs(got[5, 5].item() - torch.log(torch.tensor(2.0)).item()) < 1e-6


def test_reliability_of_a_frame_certain_everywhere_is_one():
    probs = torch.zeros(4, 5, 7)
    probs[1] = 1.0
    assert torch.equal(reliability(probs), torch.ones(5, 7))


def _logits(seed: int, branches=2, classes=6, h=9, w=13, sharpness=2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(branches, classes, h, w, generator=generator) * sharpness


def test_fusion_keeps_reliable_plain_pixels_and_blends_the_rest_by_reliability():
    logits, tau = _logits(1), 0.6
    got = pixel_outputs(logits, tau, want_probs=True).probs
    plain, addon = torch.softmax(logits, dim=1)
    e0, e1 = _entropy64(plain), _entropy64(addon)
    r0, r1 = 1 - e0 / e0.max(), 1 - e1 / e1.max()
    w = r0 / (r0 + r1)
    want = torch.where(r0 >= tau, plain.double(), w * plain.double() + (1 - w) * addon.double())
    reliable = r0 >= tau
    assert 0 < reliable.sum() < reliable.numel()       # both cases occur
    assert torch.equal(got[:, reliable], plain[:, reliable])
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('branches', [1, 2])
def test_row_blocks_give_the_values_of_whole_maps(monkeypatch, branches):
    """Blocks of a few rows (the last one shorter) against one block of the whole frame: the
    same classes, probabilities and reliabilities up to a float's last bits."""
    logits = _logits(3, branches=branches, classes=19, h=37, w=53, sharpness=3.0)
    whole = pixel_outputs(logits, 0.7, want_reliability=True, want_probs=True)
    monkeypatch.setattr(prediction, 'ROW_BLOCK_FLOATS', branches * 19 * 53 * 4)
    blocks = pixel_outputs(logits, 0.7, want_reliability=True, want_probs=True)
    assert torch.equal(whole.label, blocks.label)
    torch.testing.assert_close(whole.probs, blocks.probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole.reliability, blocks.reliability, atol=1e-6, rtol=0)
    assert torch.equal(whole.label, whole.probs.max(0).indices)
    torch.testing.assert_close(whole.reliability, reliability(whole.probs), atol=1e-6, rtol=0)
    if branches == 1:
        torch.testing.assert_close(whole.probs, torch.softmax(logits[0], dim=0), atol=1e-6,
                                   rtol=0)
