"""Streams for the peer methods (TENT, CoTTA, AuxAdapt, SAM2 refinement), with the same
interface as the DiTTA `CameraStream`, so the node, ditta-eval and ditta-bench swap them freely.

The continuous methods update on every frame (`EngineConfig.continuous`), phase `adapting`;
or only on the warm-up frames (phase `warmup`), then they are frozen (phase `adapted`).
`start_adaptation` starts over from the source weights; `reset` returns to them and stops.
SAM2 refinement never adapts (phase `source`).
"""
from typing import Callable, Optional

import numpy as np

from ditta_ros.engine import EngineConfig, Phase, StreamBase
from ditta_ros.predictor import Prediction


class OnlineStream(StreamBase):
    def __init__(self, name, model, spec, cfg: EngineConfig, make_method: Callable[[], object],
                 device='cpu', on_phase_change=None, class_names=None):
        super().__init__(name, model, spec, cfg, device, on_phase_change, class_names)
        self._make_method = make_method
        self._method = make_method()
        self._adapts = cfg.method != 'sam2_refine'
        self._frames = 0
        with self._locked():
            if self._adapts and cfg.start_immediately:
                self._begin_locked()
            elif self._adapts:
                self._set_phase_locked(Phase.WAITING)

    @property
    def adapted(self) -> bool:
        return self._status.phase in (Phase.ADAPTING, Phase.ADAPTED, Phase.WARMUP)

    def _begin_locked(self) -> None:
        self._active = self.cfg
        self._method = self._make_method()
        self._frames = 0
        self._status.frames_collected = 0
        self._status.frames_required = 0 if self._active.continuous \
            else self._active.warmup.frames
        self._set_phase_locked(Phase.ADAPTING if self._active.continuous else Phase.WARMUP)

    def start_adaptation(self) -> str:
        if not self._adapts:
            raise RuntimeError(f'method {self.cfg.method!r} does not adapt')
        with self._locked():
            self._begin_locked()
        return f'{self.name}: adaptation restarted from the source weights'

    def reset(self) -> str:
        with self._locked():
            self._method = self._make_method()
            self._set_phase_locked(Phase.SOURCE)
        return f'{self.name}: source weights restored'

    def process(self, frame_rgb: np.ndarray, stamp: float, want_confidence: bool = False,
                track_map: Optional[np.ndarray] = None) -> Prediction:
        with self._locked():
            self._check_continuity_locked(frame_rgb.shape[:2], stamp)
            phase = self._status.phase
            method = self._method
        adapt = phase in (Phase.ADAPTING, Phase.WARMUP)
        prediction = method.predict(frame_rgb, adapt, want_confidence)
        if adapt:
            with self._locked():
                if method is self._method:
                    self._frames += 1
                    self._status.step = self._status.frames_collected = self._frames
                    if phase == Phase.WARMUP and self._frames >= self._active.warmup.frames:
                        self._status.progress = 1.0
                        self._status.adaptations_completed += 1
                        self._set_phase_locked(Phase.ADAPTED)
        return prediction
