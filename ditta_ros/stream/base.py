"""What every camera stream shares, whatever its method: status and phases under a lock, phase
events fired outside it, and the continuity of the frame sequence.

Stamps that jump backwards (a bag loop) reset the temporal state and add nothing to the warm-up
time; gaps longer than `max_gap_s` count as `max_gap_s`. A frame of another size than the last one
resets the temporal state (a DiTTA stream also restarts a warm-up in progress: a clip needs one
frame size).
"""
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, List, Optional, Sequence

import torch

from ditta_ros.model.segmentor import Segmentor
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.config import StreamConfig, Phase, StreamStatus

LOG = logging.getLogger('ditta_ros.stream')


class StreamBase:
    """What every camera stream shares, whatever its method: status and phases under a lock,
    the phase-change callback, and the continuity of the frame sequence (size, stamps)."""

    def __init__(self, name: str, model: Segmentor, spec: InputSpec, cfg: StreamConfig,
                 adapts: bool, device='cpu',
                 on_phase_change: Optional[Callable[[StreamStatus], None]] = None,
                 class_names: Optional[Sequence[str]] = None):
        self.name = name
        self.adapts = adapts  # the method changes the model (the method table says)
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

    def _start(self) -> None:
        """The first phase of a stream that adapts, once the subclass is set up: begin at once,
        or wait for start_adaptation()."""
        if not self.adapts:
            return
        with self._locked():
            if self.cfg.start_immediately:
                self._begin_locked()
            else:
                self._set_phase_locked(Phase.WAITING)

    restart_note = 'adaptation restarted'  # start_adaptation's answer (the service's message)

    def _begin_locked(self) -> None:
        """Start adapting anew with the current settings (streams that adapt)."""
        raise NotImplementedError

    def start_adaptation(self) -> str:
        """Adapt anew from the current settings (a DiTTA stream: a new warm-up, the current head
        serving until the new one is ready; a peer: from the source weights)."""
        if not self.adapts:
            raise RuntimeError(f'method {self.cfg.method!r} does not adapt')
        with self._locked():
            self._begin_locked()
        return f'{self.name}: {self.restart_note}'

    def update_config(self, cfg: StreamConfig) -> None:
        """New settings: what `_apply_now_locked` applies takes effect at once, the rest from
        the next warm-up (or restart) on."""
        if cfg.method != self.cfg.method:
            raise ValueError('the method of a stream cannot change while it runs')
        with self._locked():
            self.cfg = cfg
            self._apply_now_locked(cfg)

    def _apply_now_locked(self, cfg: StreamConfig) -> None:
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

    def _adapting_in_background(self) -> bool:
        """Whether an adaptation job of this stream is still in flight (none by default)."""
        return False

    def wait_for_adaptation(self, timeout: Optional[float] = None) -> StreamStatus:
        """Block until no adaptation of this stream runs in the background, and return the
        status. Evaluations await the adapted head before their first evaluated frame (as the
        reference does); a live camera never waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._adapting_in_background():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f'{self.name}: adaptation still running after {timeout} s')
            time.sleep(0.01)
        return self.status()
