"""Where a class's pixels go, stage by stage: why an adaptation erases (or keeps) a class.

On the warm-up frames of one video, for the pixels stage A labels with class c (the source model,
or with norm_stats warmup the source model re-normalised by the warm-up's statistics), the share
that still carries c

* in the stage-B target (the teacher's tracks after the class vote; pixels outside every track
  fall back to the source label),
* in the distillation label (the target overriding the source label, by the preset's rule),
* in the adapted decoder's plain prediction, and in its fused (served) prediction,

and, against the ground truth of the frames after the warm-up, the class's IoU for the source
model, the adapted plain branch and the adapted fused output. Used by `ditta-quality --trace`.
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence

import numpy as np
import torch

from ditta_ros.adapt.ditta import WarmupClip, adapt, distillation_label
from ditta_ros.adapt.norm_stats import warmup_statistics, with_statistics
from ditta_ros.metrics import ConfusionMatrix
from ditta_ros.predictor import FramePredictor
from ditta_ros.stream.config import StreamConfig
from ditta_ros.teacher.targets import build_targets


@dataclass
class ClassTrace:
    """Shares (0..1) of a class's source-labelled warm-up pixels that keep it, per stage, and
    its IoU after the warm-up."""
    target: float
    distill_label: float
    adapted_plain: float
    adapted_fused: float
    iou_source: float
    iou_adapted_plain: float
    iou_adapted_fused: float


def _kept(labels: Sequence[torch.Tensor], source: Sequence[torch.Tensor], cls: int) -> float:
    had = sum(int((s == cls).sum()) for s in source)
    kept = sum(int(((s == cls) & (l == cls)).sum()) for s, l in zip(source, labels))
    return kept / had if had else float('nan')


def _predict_all(model, spec, device, head, frames, fused: bool, tau: float) -> List[torch.Tensor]:
    predictor = FramePredictor(model, spec, device, tau)
    return [predictor.predict(head, f, fused=fused).label.cpu() for f in frames]


def trace_video(video, warmup: int, model, spec, cfg: StreamConfig, teacher, classes: Dict[str, int],
                gt_lut: np.ndarray, device='cpu') -> Dict[str, ClassTrace]:
    """The trace of each class in `classes` (name -> id) on one video, `cfg`'s adaptation."""
    frames = video.frames[:warmup]
    base = model.decode_head
    if cfg.adapt.norm_stats == 'warmup':   # as adapt_on_warmup: stage A after the statistics
        base = with_statistics(base, warmup_statistics(model, base, frames, spec, device),
                               cfg.adapt.norm_prior)
    predictor = FramePredictor(model, spec, device)
    stage_a = [predictor.predict(base, f, fused=False, want_reliability=True)
               for f in frames]
    source = [p.label.cpu() for p in stage_a]
    reliabilities = [p.reliability.cpu() for p in stage_a]
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    built = build_targets(teacher(), frames, source, reliabilities,
                          replace(cfg.targets, num_classes=model.num_classes))
    order = sorted(built.targets)
    keep_confident = cfg.adapt.label_rule == 'keep_confident'
    target_labels = [distillation_label(source[i], built.targets[i]) for i in order]
    distill = [distillation_label(source[i], built.targets[i],
                                  reliabilities[i] if keep_confident else None,
                                  cfg.adapt.keep_reliability) for i in order]
    head = adapt(model, base, WarmupClip(list(frames), source, reliabilities),
                 built.targets, spec, cfg.adapt, device).served_head()
    plain = _predict_all(model, spec, device, head, frames, False, cfg.tau)
    fused = _predict_all(model, spec, device, head, frames, True, cfg.tau)
    later = video.frames[warmup:]
    gts = [gt_lut[video.label_ids[i]] for i in range(warmup, len(video))]
    ious = {}
    for name, (h, fuse) in {'source': (model.decode_head, False), 'plain': (head, False),
                            'fused': (head, True)}.items():
        confusion = ConfusionMatrix(model.decode_head.num_classes)
        for pred, gt in zip(_predict_all(model, spec, device, h, later, fuse, cfg.tau), gts):
            confusion.add(pred.numpy(), gt)
        ious[name] = confusion.iou()
    return {name: ClassTrace(
        _kept(target_labels, [source[i] for i in order], c),
        _kept(distill, [source[i] for i in order], c),
        _kept(plain, source, c), _kept(fused, source, c),
        float(ious['source'][c]), float(ious['plain'][c]), float(ious['fused'][c]))
        for name, c in classes.items()}


def markdown(rows: Dict[str, Dict[str, ClassTrace]]) -> str:
    """rows: label (preset, video) -> class -> trace."""
    lines = ['| preset, video | class | kept in target | in distillation label | adapted plain '
             '| adapted fused | IoU source | IoU adapted plain | IoU adapted fused |',
             '|---|---|---|---|---|---|---|---|---|']
    for label, traces in rows.items():
        for name, t in traces.items():
            values = [t.target, t.distill_label, t.adapted_plain, t.adapted_fused, t.iou_source,
                      t.iou_adapted_plain, t.iou_adapted_fused]
            lines.append(f'| {label} | {name} | ' + ' | '.join(
                '–' if np.isnan(v) else f'{100 * v:.1f}' for v in values) + ' |')
    return '\n'.join(lines) + '\n'
