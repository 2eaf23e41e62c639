"""Stage A/D arithmetic: entropy with exact zeros, reliability, the reliability-weighted fusion,
each against a direct float64 computation of the paper's formulas."""
import torch

from ditta_ros.inference import entropy, fuse, reliability


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


def test_fuse_keeps_reliable_plain_pixels_and_blends_the_rest_by_reliability():
    plain, addon, tau = _probs(1, sharpness=2.0), _probs(2, sharpness=2.0), 0.6
    got = fuse(plain, addon, tau)
    e0, e1 = _entropy64(plain), _entropy64(addon)
    r0, r1 = 1 - e0 / e0.max(), 1 - e1 / e1.max()
    w = r0 / (r0 + r1)
    want = torch.where(r0 >= tau, plain.double(), w * plain.double() + (1 - w) * addon.double())
    reliable = r0 >= tau
    assert 0 < reliable.sum() < reliable.numel()       # both cases occur
    assert torch.equal(got[:, reliable], plain[:, reliable])
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
