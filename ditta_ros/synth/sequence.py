"""Drive sequences: a street, a camera moving along it, frames with labels for each step."""
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ditta_ros.synth.domains import apply_domain, parse_domain
from ditta_ros.synth.world import Camera, Frame, Renderer, Street


@dataclass(frozen=True)
class SequenceSpec:
    width: int = 512
    height: int = 256
    frames: int = 30
    fps: float = 17.0
    seed: int = 0
    domain: str = 'clear'
    speed: float = 9.0         # m/s of the camera car


def generate(spec: SequenceSpec) -> Iterator[Frame]:
    """Frames of one sequence (image already in `spec.domain`)."""
    parse_domain(spec.domain)
    rng = np.random.default_rng(spec.seed)
    street = Street(rng=rng, speed=spec.speed, sky_seed=spec.seed)
    street.extend(120.0)
    renderer = Renderer(Camera.for_size(spec.width, spec.height), seed=spec.seed)
    effect_rng = np.random.default_rng(spec.seed + 7919)
    dt = 1.0 / spec.fps
    camera_z = rng.uniform(5.0, 30.0)
    sway_phase = rng.uniform(0, 2 * np.pi)
    for index in range(spec.frames):
        camera_x = 0.9 + 0.25 * np.sin(sway_phase + 0.35 * index * dt * 2 * np.pi)
        frame = renderer.render(street, camera_x, camera_z)
        frame.image = apply_domain(frame.image, frame.depth, spec.domain, effect_rng)
        yield frame
        camera_z += spec.speed * dt
        street.step(dt, camera_z)
