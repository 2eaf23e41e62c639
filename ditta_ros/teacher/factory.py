"""Choose the stage-B teacher by name: `sam2` (the paper's), `flow` (no weights), `oracle`."""
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ditta_ros.teacher.mask_propagators import FlowPropagator, OraclePropagator
from ditta_ros.teacher.targets import Propagator

TEACHERS = ('sam2', 'flow', 'oracle')


@dataclass(frozen=True)
class TeacherSpec:
    """Teacher choice and its settings (SAM2: a config name of the sam2 package, e.g.
    `configs/sam2.1/sam2.1_hiera_l.yaml`, a checkpoint file, extra hydra overrides)."""
    name: str = 'flow'
    sam2_config: str = 'configs/sam2.1/sam2.1_hiera_l.yaml'
    sam2_checkpoint: str = ''
    sam2_overrides: Sequence[str] = ()
    flow_max_side: int = 512


def make_teacher(spec: TeacherSpec, device: str
                 ) -> Callable[[Optional[Sequence[np.ndarray]]], Propagator]:
    """A factory of propagators for one warm-up clip each; heavy models are loaded once here.
    The factory takes the clip's ground-truth track maps (used by the oracle only)."""
    if spec.name == 'flow':
        return lambda track_maps: FlowPropagator(spec.flow_max_side)
    if spec.name == 'oracle':
        def oracle(track_maps):
            if track_maps is None:
                raise ValueError('the oracle teacher needs ground-truth track maps with the '
                                 'warm-up frames (offline evaluation only)')
            return OraclePropagator(track_maps)
        return oracle
    if spec.name == 'sam2':
        import os
        if not spec.sam2_checkpoint or not os.path.isfile(spec.sam2_checkpoint):
            raise FileNotFoundError(
                f'SAM2 checkpoint not found: {spec.sam2_checkpoint!r} (set the SAM2 checkpoint '
                'parameter to a SAM2 .pt file, or use teacher "flow", which needs no weights)')
        try:
            from ditta_ros.teacher.sam2_teacher import SAM2Propagator, build_predictor
        except ImportError as exc:
            raise RuntimeError(f'teacher "sam2" needs the sam2 package ({exc}); install '
                               'sam2==1.1.0 or use teacher "flow"') from exc
        predictor = build_predictor(spec.sam2_config, spec.sam2_checkpoint, device,
                                    spec.sam2_overrides)
        return lambda track_maps: SAM2Propagator(predictor)
    raise ValueError(f'unknown teacher {spec.name!r}; choose one of {", ".join(TEACHERS)}')

