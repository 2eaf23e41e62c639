"""Choose the stage-B teacher by name: `sam2` (the paper's) or `flow` (no weights); or build the
`oracle` (ground-truth tracks) from a labelled video, for offline evaluation."""
from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import numpy as np

from ditta_ros.teacher.mask_propagators import FlowPropagator, OraclePropagator, frame_key
from ditta_ros.teacher.targets import Propagator

TEACHERS = ('sam2', 'flow')  # what a node can run; the oracle needs ground truth (oracle_teacher)

TeacherFactory = Callable[[], Propagator]  # a fresh propagator for each warm-up clip


@dataclass(frozen=True)
class TeacherSpec:
    """Teacher choice and its settings (SAM2: a config name of the sam2 package, e.g.
    `configs/sam2.1/sam2.1_hiera_l.yaml`, a checkpoint file, extra hydra overrides)."""
    name: str = 'flow'
    sam2_config: str = 'configs/sam2.1/sam2.1_hiera_l.yaml'
    sam2_checkpoint: str = ''
    sam2_overrides: Sequence[str] = ()
    flow_max_side: int = 512


def make_teacher(spec: TeacherSpec, device: str) -> TeacherFactory:
    """A factory of propagators for one warm-up clip each; heavy models are loaded once here."""
    if spec.name == 'flow':
        return lambda: FlowPropagator(spec.flow_max_side)
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
        return lambda: SAM2Propagator(predictor)
    raise ValueError(f'unknown teacher {spec.name!r}; choose one of {", ".join(TEACHERS)}')



def oracle_teacher(frames: Sequence[np.ndarray], track_maps: Dict[int, np.ndarray]
                   ) -> TeacherFactory:
    """The oracle teacher of one labelled video: `track_maps[i]` are frame i's ground-truth track
    ids (e.g. a Video's instance_ids); warm-up frames are matched to them by content."""
    tracks = {frame_key(frames[i]): m for i, m in track_maps.items()}
    return lambda: OraclePropagator(tracks)
