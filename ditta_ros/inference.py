"""Stage A (frozen ISS prediction + reliability) and stage D (reliability-weighted fusion).

Reliability (paper Eq. 2): R = 1 - E / max(E), E = -sum_c p_c log p_c per pixel, max over the
frame. Two guards the reference lacks, which change nothing on inputs it handles: 0 log 0 counts
as 0 (the reference gives NaN where a probability underflows to exactly 0), and a frame whose
entropy is 0 everywhere (all pixels certain) has reliability 1 instead of 0/0.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch


def class_ids(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """argmax over the class axis. `max(dim).indices` gives the same indices as `argmax` (the
    first maximum) and is several times faster on CPU for a leading class axis."""
    return scores.max(dim).indices


def entropy(probs: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Pixel-wise entropy of class probabilities along `dim` (the class axis), for predictions
    (no gradient). p log p as the reference computes it (torch.log, then the product), with
    0 log 0 = 0: probabilities are raised to the smallest normal float before the log (only
    exact zeros change, and their product stays 0). That also keeps zeros out of `log`, which is
    5x slower on them on CPU (53 vs 10 ms for 19 x 1024 x 512 values, 70 % zeros), and an
    adapted decoder's confident frames have millions of underflowed probabilities. `xlogy` has
    the same guard but runs unvectorised on CPU (16 ms instead of 5 ms for 19 x 1024 x 512).
    The log is taken in place: a fresh map of a full-resolution frame's size (over glibc's 32 MiB
    mmap threshold) costs more in page faults than the log itself."""
    tiny = torch.finfo(probs.dtype).tiny
    return probs.clamp_min(tiny).log_().mul_(probs).sum(dim).neg_()


def relative_reliability(ent: torch.Tensor) -> torch.Tensor:
    """R = 1 - E / max(E) for entropy maps [H, W] or [N, H, W] (each map its own max)."""
    peak = ent.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, 1 - ent / peak.clamp_min(torch.finfo(ent.dtype).tiny),
                       torch.ones_like(ent))


def reliability(probs: torch.Tensor) -> torch.Tensor:
    """R for [C, H, W] -> [H, W], or [N, C, H, W] -> [N, H, W] (each frame its own max)."""
    return relative_reliability(entropy(probs))


def iss_prediction(probs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stage A for one frame: (label [H, W] int64, reliability [H, W]) from [C, H, W] probs."""
    return class_ids(probs), reliability(probs)


def fusion_weight(r0: torch.Tensor, r1: torch.Tensor, tau: float) -> torch.Tensor:
    """Stage D (paper Eq. 3): the plain branch's weight. Where the plain branch is reliable
    (R0 >= tau) it is kept (weight 1); elsewhere the branches are blended by their
    reliabilities, w = R0 / (R0 + R1), so the fused probabilities are one `lerp` pass,
    p1 + w (p0 - p1), which gives p0 exactly where w = 1."""
    total = r0 + r1
    # both branches at their frame's maximum entropy: 0/0 in the reference; weigh them equally
    weight = torch.where(total > 0, r0 / total.clamp_min(torch.finfo(r0.dtype).tiny),
                         torch.full_like(r0, 0.5))
    return weight.masked_fill_(r0 >= tau, 1.0)


# Rows of a full-resolution map handled at once: every temporary of a block stays under 16 MiB,
# below glibc's 32 MiB mmap threshold, so the heap serves it again at the next block and frame
# instead of fresh pages (page faults cost more than softmax, log or lerp over the same floats).
ROW_BLOCK_FLOATS = 4 * 2 ** 20


@dataclass
class PixelOutputs:
    label: torch.Tensor                  # [H, W] int64
    confidence: Optional[torch.Tensor]   # [H, W] reliability of the final probabilities
    probs: Optional[torch.Tensor]        # [C, H, W] final probabilities


def pixel_outputs(logits: torch.Tensor, tau: float, want_confidence: bool = False,
                  want_probs: bool = False) -> PixelOutputs:
    """Full-resolution logits [1 or 2, C, H, W] (plain; plain and add-on) -> class ids and, if
    asked, the reliability and probabilities of the final prediction: softmax, then with two
    branches the reliability-weighted fusion (stage D). Computed in blocks of rows: every step
    is per pixel except the frame-wide entropy peaks, taken from full entropy maps, so the
    values are those of whole maps up to the last bit of a float (where PyTorch's vectorised
    and scalar kernels round differently, as a change of thread count does too). With two
    branches the softmax runs twice, once for the branches' entropies and once for the blend,
    which costs less than keeping both branches' probabilities."""
    branches, classes, h, w = logits.shape
    step = max(1, ROW_BLOCK_FLOATS // (branches * classes * w))
    blocks = [slice(top, min(h, top + step)) for top in range(0, h, step)]
    weight = None
    if branches == 2:
        ent = logits.new_empty(2, h, w)
        for rows in blocks:
            ent[:, rows] = entropy(torch.softmax(logits[:, :, rows], dim=1))
        r = relative_reliability(ent)
        weight = fusion_weight(r[0], r[1], tau)
    label = torch.empty(h, w, dtype=torch.int64, device=logits.device)
    final_ent = logits.new_empty(h, w) if want_confidence else None
    probs = logits.new_empty(classes, h, w) if want_probs else None
    for rows in blocks:
        p = torch.softmax(logits[:, :, rows], dim=1)
        final = p[0] if weight is None else torch.lerp(p[1], p[0], weight[rows])
        label[rows] = class_ids(final)
        if want_confidence:
            final_ent[rows] = entropy(final)
        if want_probs:
            probs[:, rows] = final
    return PixelOutputs(label, relative_reliability(final_ent) if want_confidence else None,
                        probs)
