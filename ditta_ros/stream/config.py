"""What a camera stream is told (its configuration) and what it tells (its phase and status).

Stream time, not wall time, measures the warm-up (so bag replays and sim time behave); the
stream knows phases and time, not ROS.
"""
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Dict, Optional

from ditta_ros.adapt.ditta import AdaptConfig
from ditta_ros.adapt.guard import HarmCheck
from ditta_ros.prediction import PAPER_TAU
from ditta_ros.teacher.targets import TargetConfig


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
class StreamConfig:
    method: str = 'ditta'                 # a name of stream.methods.METHODS
    warmup: WarmupConfig = WarmupConfig()
    start_immediately: bool = True        # False: wait for start_adaptation()
    publish_during_warmup: bool = True    # source-model masks while the warm-up runs
    tau: float = PAPER_TAU
    hold: float = 0.0                     # temporal hold of the served classes (predictor.py)
    targets: TargetConfig = TargetConfig()  # num_classes: the model's (settings.stream_config)
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
