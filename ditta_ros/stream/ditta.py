"""The DiTTA stream of one camera: warm-up, background adaptation, atomic swap, fused inference.

Warm-up: source-model predictions for every frame, every `stride`-th frame kept with its stage-A
label and reliability, until the warm-up's frame count and/or stream duration is reached. Then
the adaptation (adapt/warmup.py: statistics, stages B and C, the checks, the label-free choice)
runs on copies of the decoder on the `AdaptationWorker` while the stream goes on publishing
source predictions; what it chose is swapped in atomically and every later frame gets stage-D
inference (method stats: the statistics step alone, no teacher). Restart (a
new warm-up) and reset (back to the source head) work in any phase; a result that arrives after
either is discarded.
"""
import logging
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ditta_ros.adapt.ditta import AdaptationCancelled, WarmupClip
from ditta_ros.adapt.warmup import adapt_on_warmup, statistics_only
from ditta_ros.decoder_io import load_decoder, save_decoder
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.prediction import Prediction
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.base import StreamBase
from ditta_ros.stream.config import StreamConfig, Phase, StreamStatus
from ditta_ros.stream.worker import AdaptationWorker, CancellablePropagator
from ditta_ros.teacher.factory import TeacherFactory

LOG = logging.getLogger('ditta_ros.stream')


class DittaStream(StreamBase):
    """One camera under DiTTA (method ditta), its statistics-only baseline (method stats), or
    the source model alone (method none: the same stream that never starts a warm-up)."""
    restart_note = 'new warm-up started'

    def __init__(self, name: str, model: Segmentor, spec: InputSpec, cfg: StreamConfig,
                 adapts: bool, teacher: Optional[TeacherFactory] = None,
                 worker: Optional[AdaptationWorker] = None, device='cpu',
                 on_phase_change: Optional[Callable[[StreamStatus], None]] = None,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(name, model, spec, cfg, adapts, device, on_phase_change, class_names)
        self.teacher = teacher
        # a stream given no worker runs its adaptation on one of its own (ended by shutdown)
        self._owns_worker = adapts and worker is None
        self.worker = AdaptationWorker() if self._owns_worker else worker
        self.predictor = FramePredictor(model, spec, self.device, cfg.tau, cfg.precision,
                                        cfg.hold)
        self._source_predictor = FramePredictor(model, spec, self.device, cfg.tau, cfg.precision)
        self._head: DiTTAHead = model.decode_head
        self._head_target_decoder = ''   # the target decoder of the adaptation that made _head
        self._generation = 0
        self._cancel = threading.Event()
        self._buffer: Optional[WarmupClip] = None
        self._seen = 0
        self._start()

    # ------------------------------------------------------------------ status / phases

    @property
    def adapted(self) -> bool:
        return self._head is not self.model.decode_head

    def _apply_now_locked(self, cfg: StreamConfig) -> None:
        self.predictor.tau = self._source_predictor.tau = cfg.tau
        self.predictor.hold = cfg.hold

    def _begin_locked(self) -> None:
        """A new warm-up (cancelling any adaptation in flight)."""
        self._active = self.cfg
        self._status.frames_required = self._active.warmup.frames
        self._status.warmup_required_s = self._active.warmup.seconds
        self._generation += 1
        self._cancel.set()
        self._cancel = threading.Event()
        self._buffer = WarmupClip([], [], [])
        self._seen = 0
        self._status.frames_collected = 0
        self._status.warmup_elapsed_s = 0.0
        self._status.progress = 0.0
        self._status.step = self._status.steps_total = 0
        self._set_phase_locked(Phase.WARMUP)

    # ------------------------------------------------------------------ control

    def reset(self) -> str:
        """Back to the source decoder; adaptation stops until start_adaptation()."""
        with self._locked():
            self._generation += 1
            self._cancel.set()
            self._buffer = None
            self._head = self.model.decode_head
            self._status.decoder = 'source'
            self._status.progress = 0.0
            self.predictor.reset()
            self._set_phase_locked(Phase.SOURCE)
        return f'{self.name}: source decoder restored'

    def save(self, path: str) -> str:
        with self._locked():
            head, decoder = self._head, self._status.decoder
            target_decoder = self._head_target_decoder
        if head is self.model.decode_head:
            raise RuntimeError(f'{self.name}: no adapted decoder to save yet (phase '
                               f'{self._status.phase.name.lower()})')
        save_decoder(path, head, self.model.identity,
                     {'camera': self.name, 'method': self.cfg.method, 'decoder': decoder,
                      'target_decoder': target_decoder})
        return f'{self.name}: adapted decoder saved to {path}'

    def load(self, path: str) -> str:
        head = load_decoder(path, self.model.decode_head, self.model.identity).to(self.device)
        with self._locked():
            self._generation += 1
            self._cancel.set()
            self._buffer = None
            self._head = head
            self._status.decoder = 'loaded'
            self._status.progress = 1.0
            self._set_phase_locked(Phase.ADAPTED)
        return f'{self.name}: adapted decoder loaded from {path}'

    def shutdown(self) -> None:
        """Cancel this stream's adaptation; stop its worker if it made its own (a shared one is
        stopped by its owner)."""
        with self._locked():
            self._generation += 1
            self._cancel.set()
        if self._owns_worker:
            self.worker.stop()

    def _adapting_in_background(self) -> bool:
        return self.status().phase in (Phase.BUILDING_TARGETS, Phase.ADAPTING)

    # ------------------------------------------------------------------ frames

    def _temporal_reset_locked(self, size_changed: bool) -> None:
        self.predictor.reset()
        if size_changed and self._status.phase == Phase.WARMUP:
            self._begin_locked()  # a clip needs one frame size

    def _warmup_done_locked(self) -> bool:
        w, s = self._active.warmup, self._status
        if s.frames_collected >= w.max_frames:
            return True
        enough_frames = w.frames <= 0 or s.frames_collected >= w.frames
        enough_time = w.seconds <= 0 or s.warmup_elapsed_s >= w.seconds
        return enough_frames and enough_time and s.frames_collected > 0

    def _warmup_fraction_locked(self) -> float:
        w, s = self._active.warmup, self._status
        parts = []
        if w.frames > 0:
            parts.append(min(1.0, s.frames_collected / w.frames))
        if w.seconds > 0:
            parts.append(min(1.0, s.warmup_elapsed_s / w.seconds))
        return min(parts) if parts else 0.0

    def process(self, frame_rgb: np.ndarray, stamp: float,
                want_reliability: bool = False) -> Optional[Prediction]:
        """Predict one frame (RGB uint8 [H, W, 3], stream time in seconds). Returns None when
        the warm-up is set not to publish source masks."""
        with self._locked():
            dt = self._check_continuity_locked(frame_rgb.shape[:2], stamp)
            phase, head = self._status.phase, self._head
            keep = False
            if phase == Phase.WARMUP:
                self._status.warmup_elapsed_s += dt
                keep = self._seen % max(1, self._active.warmup.stride) == 0
                self._seen += 1
        # with tau 0 nothing is fused: the add-on is not even computed (the ISS frame's cost)
        fused = head is not self.model.decode_head and self.predictor.tau > 0
        # the warm-up's masks are the source model's own (its stage A): no temporal hold
        prediction = self.predictor.predict(
            head, frame_rgb, fused=fused, want_reliability=want_reliability or (keep and not fused),
            hold=0.0 if phase == Phase.WARMUP else None)
        if phase != Phase.WARMUP:
            return prediction
        stage_a = None
        if keep:
            # stage A is the source model's prediction, also while an earlier adapted head serves
            stage_a = prediction if not fused else self._source_predictor.predict(
                self.model.decode_head, frame_rgb, fused=False, want_reliability=True)
        self._collect(frame_rgb, stage_a)
        return prediction if self._active.publish_during_warmup else None

    def _collect(self, frame_rgb, stage_a: Optional[Prediction]) -> None:
        """Keep a warm-up frame (when `stage_a` is given); hand a complete warm-up over."""
        with self._locked():
            if self._status.phase != Phase.WARMUP or self._buffer is None:
                return
            if stage_a is not None:
                self._buffer.frames.append(np.array(frame_rgb, copy=True))
                self._buffer.labels.append(stage_a.label.cpu())
                self._buffer.reliabilities.append(stage_a.reliability.cpu())
                self._status.frames_collected = len(self._buffer.frames)
            self._status.progress = self._warmup_fraction_locked() / 3
            if not self._warmup_done_locked():
                return
            clip = self._buffer
            self._buffer = None
            generation, cancel, cfg = self._generation, self._cancel, self._active
            self._set_phase_locked(Phase.BUILDING_TARGETS)
        self.worker.submit(lambda: self._adapt_job(clip, cfg, generation, cancel))

    # ------------------------------------------------------------------ background job

    def _still_current(self, generation: int) -> bool:
        return generation == self._generation

    def _adapt_job(self, clip: WarmupClip, cfg: StreamConfig, generation: int,
                   cancel: threading.Event) -> None:
        started = time.monotonic()
        try:
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)

            def on_stage(steps_total):
                with self._locked():
                    if self._still_current(generation):
                        self._status.steps_total = steps_total
                        self._status.progress = 2 / 3
                        self._set_phase_locked(Phase.ADAPTING)

            def on_step(step, total, losses):
                with self._locked():
                    if self._still_current(generation):
                        self._status.step, self._status.steps_total = step, total
                        self._status.losses = dict(losses)
                        self._status.progress = 2 / 3 + step / (3 * total)

            if cfg.method == 'stats':     # the statistics alone: no teacher, no training
                outcome = statistics_only(self.model, clip, self.spec, cfg.adapt, self.device)
            else:
                outcome = adapt_on_warmup(
                    self.model, clip, CancellablePropagator(self.teacher(), cancel.is_set),
                    self.spec, cfg.targets, cfg.adapt, cfg.harm_check, cfg.tau, self.device,
                    self.class_names, on_stage, on_step, cancel.is_set)
            with self._locked():
                if not self._still_current(generation):
                    return
                self._head = outcome.head
                self._head_target_decoder = cfg.adapt.target_decoder
                self._status.decoder = outcome.decoder
                self._status.adaptations_completed += 1
                self._status.progress = 1.0
                self._set_phase_locked(Phase.ADAPTED, outcome.note)
            LOG.info('%s: adapted in %.1f s (%d targets, %d steps); serving the %s decoder%s',
                     self.name, time.monotonic() - started, outcome.targets, outcome.steps,
                     outcome.decoder, f'; {outcome.note}' if outcome.note else '')
        except AdaptationCancelled:
            LOG.info('%s: adaptation cancelled', self.name)
        except Exception as exc:  # teacher/adaptation faults must not take the stream down
            LOG.error('%s: adaptation failed: %s: %s', self.name, exc.__class__.__name__, exc)
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()  # after an out-of-memory error the stream needs room
            with self._locked():
                if self._still_current(generation):
                    self._set_phase_locked(Phase.FAILED, f'{exc.__class__.__name__}: {exc}')
