"""Checks that keep a bad adaptation from reaching the stream.

* memory: a budget on the memory the adaptation may use (CUDA: peak allocated on the device;
  CPU: the process's resident set), checked after every step;
* divergence: before the adapted decoder is swapped in, it predicts the warm-up frames; if it
  collapsed onto one class where the source model did not, it is refused.
"""
from typing import List, Optional

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
