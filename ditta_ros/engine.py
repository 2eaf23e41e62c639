"""The online engine: one `CameraStream` per camera, adaptation in the background.

Per stream: warm-up (source-model predictions for every frame, every `stride`-th frame kept with
its stage-A label and reliability) until the warm-up's frame count and/or stream duration is
reached; then stages B and C run on a copy of the decoder in the `AdaptationWorker` thread while
the stream goes on publishing source predictions; then the adapted head is swapped in atomically
and every later frame gets stage-D fused inference. Restart (a new warm-up) and reset (back to
the source head) work in any phase; a result that arrives after either is discarded.

Stream time, not wall time, measures the warm-up (so bag replays and sim time behave). Stamps
that jump backwards (a bag loop) reset the temporal state and add nothing to the warm-up time;
gaps longer than `max_gap_s` count as `max_gap_s`. A frame of another size than the last one
resets the temporal state and restarts a warm-up in progress (a clip needs one frame size).
The engine knows phases and time, not ROS.
"""
import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ditta_ros.adapt.ditta import (AdaptConfig, AdaptationCancelled, AdaptationError, WarmupClip,
                                   adapt)
from ditta_ros.adapt.guard import HarmCheck, collapse_reason, harmless_head
from ditta_ros.decoder_io import load_decoder, save_decoder
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.predictor import FramePredictor, Prediction
from ditta_ros.preprocess import InputSpec
from ditta_ros.runtime import job_memory
from ditta_ros.teacher.targets import Propagator, TargetConfig, build_targets

LOG = logging.getLogger('ditta_ros.engine')

CAMERA_STREAM_METHODS = ('ditta', 'none')  # the others run in online.OnlineStream


class Phase(IntEnum):
    """Stream phases (the values of AdaptationStatus.PHASE_*)."""
    WAITING = 0
    WARMUP = 1
    BUILDING_TARGETS = 2
    ADAPTING = 3
    ADAPTED = 4
    FAILED = 5
    SOURCE = 6


@dataclass(frozen=True)
class WarmupConfig:
    """When the warm-up ends: every condition set (> 0) must hold."""
    frames: int = 30            # warm-up frames to keep (0: duration only)
    seconds: float = 0.0        # stream seconds to cover (0: frame count only)
    stride: int = 1             # keep every stride-th frame
    max_frames: int = 300       # hard cap on kept frames (memory), ends the warm-up
    max_gap_s: float = 1.0      # a longer stamp gap counts as this long


@dataclass(frozen=True)
class EngineConfig:
    method: str = 'ditta'                 # ditta | none
    warmup: WarmupConfig = WarmupConfig()
    start_immediately: bool = True        # False: wait for start_adaptation()
    publish_during_warmup: bool = True    # source-model masks while the warm-up runs
    tau: float = 0.8
    targets: TargetConfig = TargetConfig(num_classes=19)
    adapt: AdaptConfig = AdaptConfig()
    harm_check: HarmCheck = HarmCheck(enabled=False)  # do-no-harm check (the node: the preset's)
    precision: str = 'fp32'
    seed: Optional[int] = None            # seeds stage C's dropout RNG when set
    continuous: bool = True               # peer methods: adapt on every frame, or warm-up only
    peer_lr: float = 1e-3                 # peer methods' learning rate (their papers')


@dataclass
class StreamStatus:
    """A snapshot of one stream's adaptation state."""
    camera: str
    phase: Phase
    method: str
    decoder: str = 'source'
    frames_collected: int = 0
    frames_required: int = 0
    warmup_elapsed_s: float = 0.0
    warmup_required_s: float = 0.0
    progress: float = 0.0
    step: int = 0
    steps_total: int = 0
    losses: Dict[str, float] = field(default_factory=dict)
    adaptations_completed: int = 0
    temporal_resets: int = 0
    reason: str = ''


class AdaptationWorker:
    """One background thread that runs adaptation jobs one after another (one accelerator)."""

    def __init__(self, name: str = 'ditta-adaptation'):
        self._jobs: 'queue.Queue[Optional[Callable[[], None]]]' = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            # each job on a thread of its own that ends with it: a thread that has run PyTorch
            # keeps an OpenMP team, and an idle one left behind slowed the inference threads by
            # about 10 % (fused 1024x512 frames 282 -> 310-324 ms on 2 cores)
            runner = threading.Thread(target=self._run_job, args=(job,), daemon=True,
                                      name=f'{self._thread.name}-job')
            runner.start()
            runner.join()

    @staticmethod
    def _run_job(job: Callable[[], None]) -> None:
        # the job's teacher features, targets and training tensors are freed when it ends: their
        # heap pages go back then, and the frames' large blocks stay in the heap (job_memory)
        with job_memory():
            try:
                job()
            except Exception:  # a job reports its own failures; never let the thread die
                LOG.exception('adaptation job raised')

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish after the current job; True if it ended in time."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _CancellablePropagator(Propagator):
    """Checks for cancellation before every propagator call (stage B can take minutes)."""

    def __init__(self, inner: Propagator, should_stop: Callable[[], bool]):
        self.inner = inner
        self.should_stop = should_stop

    def _check(self):
        if self.should_stop():
            raise AdaptationCancelled('target building cancelled')

    def start(self, frames, labels):
        self.inner.start(frames, labels)

    def reset(self):
        self._check()
        self.inner.reset()

    def add_point(self, frame, obj_id, xy):
        self._check()
        return self.inner.add_point(frame, obj_id, xy)

    def add_mask(self, frame, obj_id, mask):
        self._check()
        return self.inner.add_mask(frame, obj_id, mask)

    def step(self, frame, reverse):
        self._check()
        return self.inner.step(frame, reverse)

    def close(self):
        self.inner.close()


TeacherFactory = Callable[[Optional[Sequence[np.ndarray]]], Propagator]


class StreamBase:
    """What every camera stream shares, whatever its method: status and phases under a lock,
    the phase-change callback, and the continuity of the frame sequence (size, stamps)."""

    def __init__(self, name: str, model: Segmentor, spec: InputSpec, cfg: EngineConfig,
                 device='cpu', on_phase_change: Optional[Callable[[StreamStatus], None]] = None,
                 class_names: Optional[Sequence[str]] = None):
        self.name = name
        self.model = model
        self.spec = spec
        self.cfg = cfg
        self._active = cfg  # settings of the warm-up/adaptation in progress
        self.device = torch.device(device)
        self.on_phase_change = on_phase_change
        self.class_names = list(class_names) if class_names else None
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._pending_events: List[StreamStatus] = []
        self._status = StreamStatus(name, Phase.SOURCE, cfg.method,
                                    frames_required=cfg.warmup.frames,
                                    warmup_required_s=cfg.warmup.seconds)
        self._last_stamp: Optional[float] = None
        self._frame_hw = None

    def status(self) -> StreamStatus:
        with self._locked():
            return replace(self._status, losses=dict(self._status.losses))

    @contextmanager
    def _locked(self):
        """The stream lock. Phase events raised while it is held fire once the outermost holder
        has released it: a handler may take its time (the node autosaves the decoder to disk and
        publishes), and a camera thread waiting in process() must not wait for it."""
        with self._lock:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                events = []
                if self._lock_depth == 0:
                    events, self._pending_events = self._pending_events, []
        for status in events:
            self.on_phase_change(status)

    def _set_phase_locked(self, phase: Phase, reason: str = '') -> None:
        changed = self._status.phase != phase
        self._status.phase = phase
        self._status.reason = reason
        if changed and self.on_phase_change is not None:
            self._pending_events.append(replace(self._status, losses=dict(self._status.losses)))

    def update_config(self, cfg: EngineConfig) -> None:
        """New settings: what `_apply_now_locked` applies takes effect at once, the rest from
        the next warm-up (or restart) on."""
        if cfg.method != self.cfg.method:
            raise ValueError('the method of a stream cannot change while it runs')
        with self._locked():
            self.cfg = cfg
            self._apply_now_locked(cfg)

    def _apply_now_locked(self, cfg: EngineConfig) -> None:
        """Settings that take effect at once (none by default)."""

    def _temporal_reset_locked(self, size_changed: bool) -> None:
        """Forget the temporal state (the frame sequence was broken)."""

    def _check_continuity_locked(self, frame_hw, stamp: float) -> float:
        """Temporal-state bookkeeping; returns the stream time this frame adds."""
        dt = 0.0
        if self._frame_hw is not None and frame_hw != self._frame_hw:
            LOG.warning('%s: frame size changed %s -> %s; temporal state reset', self.name,
                        self._frame_hw, frame_hw)
            self._status.temporal_resets += 1
            self._temporal_reset_locked(size_changed=True)
        elif self._last_stamp is not None:
            if stamp < self._last_stamp:
                LOG.warning('%s: stamp jumped back %.3f s (bag loop?); temporal state reset',
                            self.name, self._last_stamp - stamp)
                self._status.temporal_resets += 1
                self._temporal_reset_locked(size_changed=False)
            else:
                dt = min(stamp - self._last_stamp, self._active.warmup.max_gap_s)
        self._frame_hw = frame_hw
        self._last_stamp = stamp
        return dt

    def save(self, path: str) -> str:
        raise RuntimeError(f'{self.name}: method {self.cfg.method!r} has no decoder to save '
                           '(saving is for method ditta)')

    def load(self, path: str) -> str:
        raise RuntimeError(f'{self.name}: method {self.cfg.method!r} cannot load a DiTTA decoder')

    def shutdown(self) -> None:
        """Stop background work of this stream (nothing by default)."""


class CameraStream(StreamBase):
    """Adaptation and inference state of one camera stream (methods ditta and none)."""

    def __init__(self, name: str, model: Segmentor, spec: InputSpec, cfg: EngineConfig,
                 worker: Optional[AdaptationWorker], teacher: Optional[TeacherFactory],
                 device='cpu', on_phase_change: Optional[Callable[[StreamStatus], None]] = None,
                 class_names: Optional[Sequence[str]] = None):
        if cfg.method not in CAMERA_STREAM_METHODS:
            raise ValueError(f'CameraStream runs {", ".join(CAMERA_STREAM_METHODS)}, not '
                             f'{cfg.method!r} (use methods.make_stream)')
        if cfg.method == 'ditta' and (worker is None or teacher is None):
            raise ValueError('method "ditta" needs an adaptation worker and a teacher')
        super().__init__(name, model, spec, cfg, device, on_phase_change, class_names)
        self.worker = worker
        self.teacher = teacher
        self.predictor = FramePredictor(model, spec, self.device, cfg.tau, cfg.precision)
        self._source_predictor = FramePredictor(model, spec, self.device, cfg.tau, cfg.precision)
        self._head: DiTTAHead = model.decode_head
        self._head_target_decoder = ''   # the target decoder of the adaptation that made _head
        self._generation = 0
        self._cancel = threading.Event()
        self._buffer: Optional[WarmupClip] = None
        self._track_maps: List[np.ndarray] = []
        self._seen = 0
        if cfg.method == 'ditta':
            with self._locked():
                if cfg.start_immediately:
                    self._begin_warmup_locked()
                else:
                    self._set_phase_locked(Phase.WAITING)

    # ------------------------------------------------------------------ status / phases

    @property
    def adapted(self) -> bool:
        return self._head is not self.model.decode_head

    def _apply_now_locked(self, cfg: EngineConfig) -> None:
        self.predictor.tau = self._source_predictor.tau = cfg.tau

    def _begin_warmup_locked(self) -> None:
        self._active = self.cfg
        self._status.frames_required = self._active.warmup.frames
        self._status.warmup_required_s = self._active.warmup.seconds
        self._generation += 1
        self._cancel.set()
        self._cancel = threading.Event()
        self._buffer = WarmupClip([], [], [])
        self._track_maps = []
        self._seen = 0
        self._status.frames_collected = 0
        self._status.warmup_elapsed_s = 0.0
        self._status.progress = 0.0
        self._status.step = self._status.steps_total = 0
        self._set_phase_locked(Phase.WARMUP)

    # ------------------------------------------------------------------ control

    def start_adaptation(self) -> str:
        """Begin a new warm-up (cancelling any adaptation in flight); the current head keeps
        serving until the new one is ready."""
        if self.cfg.method != 'ditta':
            raise RuntimeError(f'method {self.cfg.method!r} does not adapt')
        with self._locked():
            self._begin_warmup_locked()
        return f'{self.name}: new warm-up started'

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
        """Cancel this stream's adaptation (the worker is stopped by its owner)."""
        with self._locked():
            self._generation += 1
            self._cancel.set()

    # ------------------------------------------------------------------ frames

    def _temporal_reset_locked(self, size_changed: bool) -> None:
        self.predictor.reset()
        if size_changed and self._status.phase == Phase.WARMUP:
            self._begin_warmup_locked()  # a clip needs one frame size

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

    def process(self, frame_rgb: np.ndarray, stamp: float, want_confidence: bool = False,
                track_map: Optional[np.ndarray] = None) -> Optional[Prediction]:
        """Predict one frame (RGB uint8 [H, W, 3], stream time in seconds). Returns None when
        the warm-up is set not to publish source masks. `track_map` (ground-truth track ids) is
        kept with warm-up frames for the oracle teacher."""
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
        prediction = self.predictor.predict(head, frame_rgb, fused=fused,
                                            want_confidence=want_confidence or (keep and not fused))
        if phase != Phase.WARMUP:
            return prediction
        stage_a = None
        if keep:
            # stage A is the source model's prediction, also while an earlier adapted head serves
            stage_a = prediction if not fused else self._source_predictor.predict(
                self.model.decode_head, frame_rgb, fused=False, want_confidence=True)
        self._collect(frame_rgb, stage_a, track_map)
        return prediction if self._active.publish_during_warmup else None

    def _collect(self, frame_rgb, stage_a: Optional[Prediction], track_map) -> None:
        """Keep a warm-up frame (when `stage_a` is given); hand a complete warm-up over."""
        with self._locked():
            if self._status.phase != Phase.WARMUP or self._buffer is None:
                return
            if stage_a is not None:
                self._buffer.frames.append(np.array(frame_rgb, copy=True))
                self._buffer.labels.append(stage_a.label.cpu())
                self._buffer.reliabilities.append(stage_a.confidence.cpu())
                if track_map is not None:
                    self._track_maps.append(np.asarray(track_map))
                self._status.frames_collected = len(self._buffer.frames)
            self._status.progress = self._warmup_fraction_locked() / 3
            if not self._warmup_done_locked():
                return
            clip, track_maps = self._buffer, (self._track_maps or None)
            self._buffer = None
            generation, cancel, cfg = self._generation, self._cancel, self._active
            self._set_phase_locked(Phase.BUILDING_TARGETS)
        self.worker.submit(lambda: self._adapt_job(clip, track_maps, cfg, generation, cancel))

    # ------------------------------------------------------------------ background job

    def _still_current(self, generation: int) -> bool:
        return generation == self._generation

    def _adapt_job(self, clip: WarmupClip, track_maps, cfg: EngineConfig, generation: int,
                   cancel: threading.Event) -> None:
        started = time.monotonic()
        try:
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            propagator = _CancellablePropagator(self.teacher(track_maps), cancel.is_set)
            build = build_targets(propagator, clip.frames, clip.labels, clip.reliabilities,
                                  cfg.targets)
            if not build.targets:
                raise AdaptationError(
                    'the teacher got no prompt: no class reached reliability '
                    f'{cfg.targets.frame0_threshold} in the warm-up frames')
            steps_total = cfg.adapt.passes * len(build.targets)
            with self._locked():
                if not self._still_current(generation):
                    return
                self._status.steps_total = steps_total
                self._status.progress = 2 / 3
                self._set_phase_locked(Phase.ADAPTING)

            def on_step(step, total, losses):
                with self._locked():
                    if self._still_current(generation):
                        self._status.step, self._status.steps_total = step, total
                        self._status.losses = dict(losses)
                        self._status.progress = 2 / 3 + step / (3 * total)

            adapter = adapt(self.model, self.model.decode_head, clip, build.targets, self.spec,
                            cfg.adapt, self.device, on_step, cancel.is_set)
            reason = collapse_reason(self.model, adapter.served_head(), clip.frames, clip.labels,
                                     self.spec, self.device, self.class_names)
            if reason:
                raise AdaptationError(reason)
            head, verdict = harmless_head(self.model, self.model.decode_head,
                                          adapter.served_head(), clip.frames, clip.labels,
                                          clip.reliabilities, self.spec, self.device, cfg.tau,
                                          cfg.harm_check, self.class_names)
            if head is None:
                raise AdaptationError(verdict)
            with self._locked():
                if not self._still_current(generation):
                    return
                self._head = head
                self._head_target_decoder = cfg.adapt.target_decoder
                self._status.decoder = 'repaired' if verdict else 'adapted'
                self._status.adaptations_completed += 1
                self._status.progress = 1.0
                self._set_phase_locked(Phase.ADAPTED, verdict)
            LOG.info('%s: adapted in %.1f s (%d targets, %d steps)%s', self.name,
                     time.monotonic() - started, len(build.targets), steps_total,
                     f'; {verdict}' if verdict else '')
        except AdaptationCancelled:
            LOG.info('%s: adaptation cancelled', self.name)
        except Exception as exc:  # teacher/adaptation faults must not take the stream down
            LOG.error('%s: adaptation failed: %s: %s', self.name, exc.__class__.__name__, exc)
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()  # after an out-of-memory error the stream needs room
            with self._locked():
                if self._still_current(generation):
                    self._set_phase_locked(Phase.FAILED, f'{exc.__class__.__name__}: {exc}')
