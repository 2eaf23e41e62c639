"""Checks that keep a bad adaptation from reaching the stream.

* memory: a budget on the memory the adaptation may use (CUDA: peak allocated on the device;
  CPU: the process's resident set), checked after every step;
* divergence: before the adapted decoder is swapped in, it predicts the warm-up frames; if it
  collapsed onto one class where the source model did not, it is refused;
* do no harm (no labels needed): the classes the source model predicts confidently on the
  warm-up frames must survive in the adapted model's (fused) predictions of those frames. A class
  that keeps less than `min_kept` of its confident pixels was erased by the adaptation (thin
  classes under a teacher whose tracks cover them, a teacher that relabels a class, ...). The
  adapted decoder is then repaired by moving its weights back towards the source decoder's
  (a blend source + a (adapted - source) for a = 1/2, 1/4) and refused if no blend passes.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import psutil
import torch

from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec

COLLAPSE_SHARE = 0.95        # one class on this share of the pixels: collapsed
SOURCE_DIVERSE_SHARE = 0.80  # ... unless the source model's top class already covered this much


def memory_in_use_mb(device) -> float:
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return psutil.Process().memory_info().rss / 2 ** 20


def dominant_share(labels: List[np.ndarray]) -> tuple:
    counts = np.bincount(np.concatenate([np.asarray(l).reshape(-1) for l in labels]))
    top = int(counts.argmax())
    return top, counts[top] / counts.sum()


def collapse_reason(model: Segmentor, head: DiTTAHead, frames: List[np.ndarray],
                    source_labels: List[torch.Tensor], spec: InputSpec, device,
                    class_names: Optional[List[str]] = None) -> Optional[str]:
    """Why the adapted head must not be used (it collapsed), or None."""
    predictor = FramePredictor(model, spec, device)
    adapted = [predictor.predict(head, f, fused=False).label.cpu().numpy() for f in frames]
    cls, share = dominant_share(adapted)
    _, source_share = dominant_share([l.numpy() for l in source_labels])
    if share >= COLLAPSE_SHARE and source_share < SOURCE_DIVERSE_SHARE:
        name = class_names[cls] if class_names and cls < len(class_names) else f'class {cls}'
        return (f'adaptation diverged: the adapted decoder predicts {name} on {share:.0%} of '
                f'the warm-up pixels (source model: top class {source_share:.0%})')
    return None


@dataclass(frozen=True)
class HarmCheck:
    """Settings of the do-no-harm check (enabled: off serves whatever the adaptation gave)."""
    enabled: bool = True
    confident: float = 0.5          # stage-A reliability that makes a source pixel confident
    min_share: float = 0.0001       # a class is checked from this share of the warm-up pixels
    min_kept: float = 0.5           # ... and must keep this share of its confident pixels
    blends: Tuple[float, ...] = (0.5, 0.25)   # repairs tried, in order


def warmup_predictions(model: Segmentor, head: DiTTAHead, frames: Sequence[np.ndarray],
                       spec: InputSpec, device, tau: float) -> List[torch.Tensor]:
    """What `head` would serve on the warm-up frames, in order (fused from the second on
    where tau > 0)."""
    predictor = FramePredictor(model, spec, device, tau)
    return [predictor.predict(head, f, fused=tau > 0).label.cpu() for f in frames]


def erased_classes(adapted: Sequence[torch.Tensor], source: Sequence[torch.Tensor],
                   reliabilities: Sequence[torch.Tensor], check: HarmCheck) -> List[tuple]:
    """(class, share kept) of every checked class that kept less than `check.min_kept` of the
    warm-up pixels where the source model predicted it confidently."""
    num = max(int(max(int(s.max()) for s in source)) + 1, 1)
    confident = torch.zeros(num, dtype=torch.float64)
    kept = torch.zeros(num, dtype=torch.float64)
    total = 0
    for pred, label, rel in zip(adapted, source, reliabilities):
        sure = rel >= check.confident
        confident += torch.bincount(label[sure], minlength=num)[:num].double()
        kept += torch.bincount(label[sure & (pred == label)], minlength=num)[:num].double()
        total += label.numel()
    checked = confident >= check.min_share * total
    share = kept / confident.clamp(min=1)
    return [(c, float(share[c])) for c in range(num) if checked[c] and share[c] < check.min_kept]


def blend_heads(source: DiTTAHead, adapted: DiTTAHead, weight: float) -> DiTTAHead:
    """A copy of `adapted` with every floating-point weight and statistic at
    source + weight * (adapted - source)."""
    import copy
    blended = copy.deepcopy(adapted)
    src = source.state_dict()
    with torch.no_grad():
        for name, value in blended.state_dict().items():
            if value.is_floating_point():
                value.copy_(src[name] + weight * (value - src[name]))
    return blended


def harmless_head(model: Segmentor, source: DiTTAHead, adapted: DiTTAHead,
                  frames: Sequence[np.ndarray], labels: Sequence[torch.Tensor],
                  reliabilities: Sequence[torch.Tensor], spec: InputSpec, device, tau: float,
                  check: HarmCheck = HarmCheck(), class_names: Optional[Sequence[str]] = None
                  ) -> Tuple[Optional[DiTTAHead], str]:
    """(head to serve, what the check found): the adapted head if it erases no class, else the
    first blend towards the source that does not, else (None, why it was refused)."""
    if not check.enabled:
        return adapted, ''

    def named(found):
        return ', '.join(f'{class_names[c] if class_names and c < len(class_names) else c} '
                         f'{kept:.0%}' for c, kept in found)
    labels = [torch.as_tensor(l).cpu() for l in labels]
    reliabilities = [torch.as_tensor(r).cpu() for r in reliabilities]
    found = erased_classes(warmup_predictions(model, adapted, frames, spec, device, tau),
                           labels, reliabilities, check)
    if not found:
        return adapted, ''
    first = named(found)
    for weight in check.blends:
        candidate = blend_heads(source, adapted, weight).eval()
        if not erased_classes(warmup_predictions(model, candidate, frames, spec, device, tau),
                              labels, reliabilities, check):
            return candidate, (f'repaired: weights blended {weight:g} adapted / '
                               f'{1 - weight:g} source (confident source pixels kept: {first})')
    return None, (f'refused: the adapted decoder erases classes the source model predicts '
                  f'confidently on the warm-up frames (share of them kept: {first})')
