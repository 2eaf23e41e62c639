"""Evaluation runs: a method over videos with the warm-up-to-frozen protocol, and scoring.

Protocol (W2F, the paper's): per video, a fresh copy of the source model; the first
max(floor(N * ratio / 100), 1) frames (or the frames within `warmup_seconds`) are the warm-up;
metrics are computed on the remaining frames only, for every method on the same frames. The
adaptation is awaited before the first evaluated frame (as the reference does), unless
`wait_for_adaptation` is off, which measures the live behaviour instead.
"""
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ditta_ros.io.video import Video
from ditta_ros.labels import LabelSet
from ditta_ros.metrics import ConfusionMatrix, summarize, temporal_consistency, \
    video_consistency_scores
from ditta_ros.stream.config import StreamConfig
from ditta_ros.stream.methods import make_stream


def warmup_length(num_frames: int, ratio: float) -> int:
    """Reference W2F warm-up length: max(floor(N * ratio / 100), 1)."""
    return max(int(num_frames * ratio // 100), 1)


def warmup_frames_for(video: Video, ratio: Optional[float], seconds: Optional[float]) -> int:
    if seconds is not None:
        start = video.stamps[0]
        return max(1, sum(1 for s in video.stamps if s - start < seconds))
    return warmup_length(len(video), ratio if ratio is not None else 10)


@dataclass
class VideoRun:
    """What one method produced on one video."""
    video: str
    method: str
    warmup: int
    preds: List[Optional[np.ndarray]]    # class ids per frame (None: no mask came back)
    seconds_per_frame: float             # inference time on evaluated frames
    adaptation_seconds: float = 0.0
    phase: str = ''
    reason: str = ''
    losses: Dict[str, float] = field(default_factory=dict)
    sent: int = 0
    received: int = 0
    dropped: int = 0
    decoder: str = ''                    # what served after the adaptation (status.decoder)


def run_offline(video: Video, model, spec, cfg: StreamConfig, teacher, device='cpu',
                wait_for_adaptation: bool = True, progress=None, class_names=None) -> VideoRun:
    """Run a method's stream on a video without DDS (deterministic for a seeded configuration).
    `teacher`: a teacher factory for the methods that need one (e.g. the video's oracle)."""
    stream = make_stream(video.name, model, spec, cfg, teacher, device=device,
                         class_names=class_names)
    preds, eval_time, adapt_time = [], 0.0, 0.0
    warmup = cfg.warmup.frames
    try:
        for i, frame in enumerate(video.frames):
            started = time.monotonic()
            prediction = stream.process(frame, video.stamps[i])
            preds.append(prediction.label.cpu().numpy().astype(np.uint8)
                         if prediction is not None else None)
            if i >= warmup:
                eval_time += time.monotonic() - started
            if i == warmup - 1 and wait_for_adaptation:
                waited = time.monotonic()
                stream.wait_for_adaptation()
                adapt_time = time.monotonic() - waited
            if progress is not None:
                progress()
    finally:
        stream.shutdown()
    status = stream.status()
    evaluated = max(1, len(video) - warmup)
    return VideoRun(video.name, cfg.method, warmup, preds, eval_time / evaluated, adapt_time,
                    status.phase.name.lower(), status.reason, dict(status.losses),
                    len(video), sum(p is not None for p in preds), decoder=status.decoder)


def labelled_runs(frames: List[int], labelled) -> List[List[int]]:
    """The maximal runs of consecutive frame indices in `frames` that all have a label (mVC
    windows need consecutive labelled frames: a sparsely labelled video such as a Cityscapes
    snippet, labelled at its 20th frame only, has none)."""
    runs: List[List[int]] = []
    for i in frames:
        if i not in labelled:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@dataclass
class MethodScores:
    """Metrics of one method accumulated over videos."""
    labels: LabelSet
    vc_windows: tuple = (8, 16)
    confusion: ConfusionMatrix = None
    vc: Dict[int, List[List[float]]] = field(default_factory=dict)
    tc: List[List[float]] = field(default_factory=list)
    per_frame: List[dict] = field(default_factory=list)
    runs: List[VideoRun] = field(default_factory=list)
    frames_evaluated: int = 0

    def __post_init__(self):
        self.confusion = ConfusionMatrix(self.labels.num_classes)
        self.vc = {n: [] for n in self.vc_windows}

    def add(self, video: Video, run: VideoRun, with_tc: bool = True) -> None:
        lut = self.labels.id_to_train_id()
        evaluated = [i for i in range(run.warmup, len(video)) if run.preds[i] is not None]
        self.frames_evaluated += len(evaluated)
        for i in range(len(video)):
            gt = lut[video.label_ids[i]] if i in video.label_ids else None
            if gt is None or run.preds[i] is None:
                continue
            instant = ConfusionMatrix(self.labels.num_classes)
            instant.add(run.preds[i], gt)
            self.per_frame.append({'video': video.name, 'frame': i, 'warmup': i < run.warmup,
                                   'mIoU': instant.miou()})
            if i >= run.warmup:
                self.confusion.add(run.preds[i], gt)
        for frames in labelled_runs(evaluated, video.label_ids):
            gts = [lut[video.label_ids[i]] for i in frames]
            preds = [run.preds[i] for i in frames]
            for n in self.vc_windows:
                if len(frames) > n:   # a run too short for a window gives none (mVC: n/a)
                    self.vc[n].append(video_consistency_scores(preds, gts, n))
        if with_tc and len(evaluated) > 1:
            self.tc.append(temporal_consistency([video.frames[i] for i in evaluated],
                                                [run.preds[i] for i in evaluated],
                                                self.labels.num_classes))
        self.runs.append(run)

    def merge(self, other: 'MethodScores') -> None:
        """Add the scores of other videos (kept in order): confusion matrices summed, consistency
        windows, TC pairs, per-frame rows and runs appended. Scores of videos merged in the
        videos' order equal those of one MethodScores that added them in that order."""
        self.confusion.matrix += other.confusion.matrix
        for n in self.vc_windows:
            self.vc[n].extend(other.vc[n])
        self.tc.extend(other.tc)
        self.per_frame.extend(other.per_frame)
        self.runs.extend(other.runs)
        self.frames_evaluated += other.frames_evaluated

    def summary(self) -> dict:
        result = summarize(self.confusion, self.vc, self.tc, self.labels.class_names)
        sent = sum(r.sent for r in self.runs)
        received = sum(r.received for r in self.runs)
        per_frame = [r.seconds_per_frame for r in self.runs if r.seconds_per_frame > 0]
        result.update({
            'frames_sent': sent, 'frames_received': received,
            'frames_dropped': sum(r.dropped for r in self.runs),
            'fps': (1.0 / float(np.mean(per_frame))) if per_frame else float('nan'),
            'adaptation_seconds': [round(r.adaptation_seconds, 3) for r in self.runs],
            'phases': [r.phase for r in self.runs],
            'failures': [r.reason for r in self.runs if r.reason],
        })
        result['frames_evaluated'] = self.frames_evaluated
        return result
