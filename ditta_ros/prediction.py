"""From decoder logits to a frame's prediction: resizing, stage A (class ids + reliability) and
stage D (reliability-weighted fusion of the plain and add-on branches). Every prediction of the
node, the peers and the tools goes through `to_prediction`; `FramePredictor` (predictor.py) only
decides which logits to hand it.

Reliability (paper Eq. 2): R = 1 - E / max(E), E = -sum_c p_c log p_c per pixel, max over the
frame. Two guards the reference lacks, which change nothing on inputs it handles: 0 log 0 counts
as 0 (the reference gives NaN where a probability underflows to exactly 0), and a frame whose
entropy is 0 everywhere (all pixels certain) has reliability 1 instead of 0/0.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


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


PAPER_TAU = 0.8  # stage D's threshold in the paper and the reference code


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
    reliability: Optional[torch.Tensor]  # [H, W] reliability of the final probabilities
    probs: Optional[torch.Tensor]        # [C, H, W] final probabilities


def pixel_outputs(logits: torch.Tensor, tau: float, want_reliability: bool = False,
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
    final_ent = logits.new_empty(h, w) if want_reliability else None
    probs = logits.new_empty(classes, h, w) if want_probs else None
    for rows in blocks:
        p = torch.softmax(logits[:, :, rows], dim=1)
        final = p[0] if weight is None else torch.lerp(p[1], p[0], weight[rows])
        label[rows] = class_ids(final)
        if want_reliability:
            final_ent[rows] = entropy(final)
        if want_probs:
            probs[:, rows] = final
    return PixelOutputs(label, relative_reliability(final_ent) if want_reliability else None,
                        probs)


def resize_logits(logits: torch.Tensor, input_hw: Sequence[int],
                  frame_hw: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to the network input size, then to the frame size (two steps, as the
    reference does: the result differs from one direct resize). A step to the size the logits
    already have is skipped: at scale 1 bilinear resampling returns its input exactly, and the
    full-resolution pass it would cost is a tenth of a 1024x512 frame on a CPU."""
    for size in (tuple(input_hw), tuple(frame_hw)):
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
    return logits


@dataclass
class Prediction:
    """One frame's output: class ids (uint8-ready int64) and optionally the reliability map."""
    label: torch.Tensor                  # [H, W] int64
    reliability: Optional[torch.Tensor]  # [H, W] float32 in 0..1, if asked
    probs: Optional[torch.Tensor] = None  # [C, H, W] output probabilities, if asked
    fused: bool = False


def to_prediction(logits: torch.Tensor, input_hw, frame_hw, tau: float = PAPER_TAU,
                  want_reliability: bool = False, want_probs: bool = False) -> Prediction:
    """Decoder-grid logits [1 or 2, C, h, w] (plain, add-on) -> the frame's prediction: resized
    to the input then to the frame size, fused by reliability when there are two branches."""
    if logits.shape[0] == 1 and not (want_reliability or want_probs):
        return Prediction(class_ids(resize_logits(logits, input_hw, frame_hw)[0]), None)
    out = pixel_outputs(resize_logits(logits, input_hw, frame_hw), tau, want_reliability,
                        want_probs)
    return Prediction(out.label, out.reliability, out.probs, fused=logits.shape[0] == 2)
