"""The stream of a peer method (TENT, CoTTA, AuxAdapt, SAM2 refinement), with the interface of
the DiTTA stream, so the node, ditta-eval and ditta-bench swap them freely.

The continuous methods update on every frame (`StreamConfig.continuous`), phase `adapting`;
or only on the warm-up frames (phase `warmup`), then they are frozen (phase `adapted`).
`start_adaptation` starts over from the source weights; `reset` returns to them and stops.
SAM2 refinement never adapts (phase `source`).
"""
from typing import Callable, Optional, Sequence

import numpy as np

from ditta_ros.adapt.peers import make_peer
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.prediction import Prediction
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.base import StreamBase
from ditta_ros.stream.config import StreamConfig, Phase, StreamStatus


class PeerStream(StreamBase):
    restart_note = 'adaptation restarted from the source weights'

    def __init__(self, name: str, model: Segmentor, spec: InputSpec, cfg: StreamConfig,
                 adapts: bool, teacher=None, device='cpu',
                 on_phase_change: Optional[Callable[[StreamStatus], None]] = None,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(name, model, spec, cfg, adapts, device, on_phase_change, class_names)
        self._teacher = teacher
        self._method = self._fresh_method()
        self._frames = 0
        self._start()

    def _fresh_method(self):
        """The peer method, starting from the source weights."""
        cfg = self.cfg
        return make_peer(cfg.method, self.model, self.model.decode_head, self.spec, self.device,
                         cfg.peer_lr, cfg.seed if cfg.seed is not None else 0, self._teacher,
                         cfg.targets)

    @property
    def adapted(self) -> bool:
        return self._status.phase in (Phase.ADAPTING, Phase.ADAPTED, Phase.WARMUP)

    def _begin_locked(self) -> None:
        """From the source weights again."""
        self._active = self.cfg
        self._method = self._fresh_method()
        self._frames = 0
        self._status.frames_collected = 0
        self._status.frames_required = 0 if self._active.continuous \
            else self._active.warmup.frames
        self._set_phase_locked(Phase.ADAPTING if self._active.continuous else Phase.WARMUP)

    def reset(self) -> str:
        with self._locked():
            self._method = self._fresh_method()
            self._set_phase_locked(Phase.SOURCE)
        return f'{self.name}: source weights restored'

    def process(self, frame_rgb: np.ndarray, stamp: float,
                want_reliability: bool = False) -> Prediction:
        with self._locked():
            self._check_continuity_locked(frame_rgb.shape[:2], stamp)
            phase = self._status.phase
            method = self._method
        adapt = phase in (Phase.ADAPTING, Phase.WARMUP)
        prediction = method.predict(frame_rgb, adapt, want_reliability)
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
