"""Label-free choice of the decoder that serves after a warm-up.

An adaptation makes several candidate decoders: the source model's, the one with normalisation
statistics from the warm-up (no weight trained), and the one stage C trained. Without labels the
only reference the method has is its teacher: the targets it propagated through the warm-up clip.
Warm-up frames held out of stage C (`held_out_frames`) are scored for every candidate by the
share of their target-labelled pixels on which the candidate predicts the target's class; the
candidate that agrees best serves (ties go to the earlier candidate). The do-no-harm check
still applies to a trained decoder before it becomes a candidate.

The agreement favours the candidate whose stage A the targets were built from (their classes
are voted from its labels), so the choice protects against a stage C that drifted from its own
targets more than it detects a bad re-normalisation; docs/quality.md measures what it picks.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec
from ditta_ros.teacher.targets import IGNORE_INDEX, Target


def held_out_frames(frames_with_targets: Sequence[int], count: int) -> List[int]:
    """The last `count` warm-up frames that have a target, kept out of stage C; none when that
    would leave stage C with no frame."""
    ordered = sorted(frames_with_targets)
    if count <= 0 or len(ordered) <= count:
        return []
    return ordered[-count:]


def target_agreement(model: Segmentor, head: DiTTAHead, frames: Sequence[np.ndarray],
                     targets: Dict[int, Target], spec: InputSpec, device) -> float:
    """Share of the target-labelled pixels of `targets`' frames (index -> target) on which
    `head` (plain branch) predicts the target's class; NaN when no pixel is labelled."""
    predictor = FramePredictor(model, spec, device)
    agree = labelled = 0
    for index, target in sorted(targets.items()):
        wanted = target.label()
        mask = wanted != IGNORE_INDEX
        if not bool(mask.any()):
            continue
        label = predictor.predict(head, frames[index], fused=False).label.cpu()
        agree += int((label[mask] == wanted[mask]).sum())
        labelled += int(mask.sum())
    return agree / labelled if labelled else float('nan')


@dataclass
class Choice:
    name: str                      # the chosen candidate
    agreement: Dict[str, float]    # every candidate's agreement with the held-out targets

    def summary(self) -> str:
        scores = ', '.join(f'{n} {v:.1%}' for n, v in self.agreement.items())
        return f'label-free choice: {self.name} (agreement with held-out targets: {scores})'


def choose_decoder(model: Segmentor, candidates: Dict[str, DiTTAHead],
                   frames: Sequence[np.ndarray], held_out: Dict[int, Target], spec: InputSpec,
                   device) -> Tuple[DiTTAHead, Choice]:
    """The candidate (name -> head, in order of preference on ties) that agrees best with the
    held-out targets; the first candidate when nothing can be scored."""
    scores = {name: target_agreement(model, head, frames, held_out, spec, device)
              for name, head in candidates.items()}
    scored = {n: s for n, s in scores.items() if not np.isnan(s)}
    name = max(scored, key=lambda n: (scored[n], -list(candidates).index(n))) if scored \
        else next(iter(candidates))
    return candidates[name], Choice(name, scores)

