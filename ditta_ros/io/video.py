"""Videos to evaluate on, from a Cityscapes-style folder, a VSPW folder, one sequence bag, or a
folder of bags.

A `Video` holds the RGB frames, their stamps (seconds) and, where they exist, ground-truth label
ids (the dataset's ids, e.g. Cityscapes labelIds) and instance ids, keyed by frame index.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ditta_ros.io import cityscapes, vspw


@dataclass
class Video:
    name: str
    frames: List[np.ndarray]
    stamps: List[float]
    label_ids: Dict[int, np.ndarray] = field(default_factory=dict)
    instance_ids: Dict[int, np.ndarray] = field(default_factory=dict)
    frame_id: str = 'camera'

    def __len__(self) -> int:
        return len(self.frames)


def is_bag(path: Path) -> bool:
    return (path / 'metadata.yaml').is_file()


def find_video_files(path, split=None) -> Tuple[list, float]:
    """The videos of a dataset folder as file lists (name, frames, images, label_ids,
    instance_ids), whatever its layout (VSPW or Cityscapes), and its frame rate."""
    if vspw.is_vspw(path):
        return vspw.find_videos(path, split), vspw.VSPW_FPS
    return cityscapes.find_sequences(path, split), cityscapes.CITYSCAPES_FPS


def _sources(path: Path, split=None) -> Tuple[list, float]:
    """What load_videos would load, unloaded: bag folders, or file lists and their rate."""
    if not path.exists():
        raise FileNotFoundError(f'no such file or folder: {path}')
    if is_bag(path):
        return [path], 0.0
    bags = sorted(p for p in path.iterdir() if p.is_dir() and is_bag(p)) if path.is_dir() else []
    if bags:
        return bags, 0.0
    return find_video_files(path, split)


def video_count(path, split=None) -> int:
    """How many videos load_videos(path, split) gives, without loading them."""
    return len(_sources(Path(path), split)[0])


def load_video_at(path, index: int, split=None) -> Video:
    """The `index`-th video of load_videos(path, split), alone (a worker loads only its own)."""
    sources, fps = _sources(Path(path), split)
    return _load(sources[index], fps)


def _load(source, fps: float) -> Video:
    return load_bag(source) if isinstance(source, Path) else load_video_files(source, fps)


def load_videos(path, split=None) -> List[Video]:
    """Every video under `path` (a sequence bag, a folder of bags, a Cityscapes-style or a VSPW
    folder)."""
    sources, fps = _sources(Path(path), split)
    return [_load(source, fps) for source in sources]


def load_bag(path: Path) -> Video:
    from ditta_ros.io.bag import read_sequence_bag
    stamps, frames, labels, instances, frame_id = read_sequence_bag(path)
    return Video(Path(path).name, frames, [s * 1e-9 for s in stamps], labels, instances,
                 frame_id or 'camera')


def load_video_files(seq, fps: float = cityscapes.CITYSCAPES_FPS) -> Video:
    """A video from its file lists (find_video_files), stamped from its frame numbers."""
    frames = [cityscapes.read_rgb(p) for p in seq.images]
    stamps = [(f - seq.frames[0]) / fps for f in seq.frames]
    labels = {i: seq.read_labels(i) for i in seq.label_ids}
    instances = {i: seq.read_instances(i).astype(np.int32) for i in seq.instance_ids}
    return Video(seq.name, frames, stamps, labels, instances)
