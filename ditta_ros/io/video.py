"""Videos to evaluate on, from a Cityscapes-style folder, one sequence bag, or a folder of bags.

A `Video` holds the RGB frames, their stamps (seconds) and, where they exist, ground-truth label
ids (the dataset's ids, e.g. Cityscapes labelIds) and instance ids, keyed by frame index.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from ditta_ros.io import cityscapes


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


def load_videos(path, split=None) -> List[Video]:
    """Every video under `path` (a sequence bag, a folder of bags, or a Cityscapes folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'no such file or folder: {path}')
    if is_bag(path):
        return [load_bag(path)]
    bags = sorted(p for p in path.iterdir() if p.is_dir() and is_bag(p)) if path.is_dir() else []
    if bags:
        return [load_bag(p) for p in bags]
    return [load_cityscapes_sequence(seq) for seq in cityscapes.find_sequences(path, split)]


def load_bag(path: Path) -> Video:
    from ditta_ros.io.bag import read_sequence_bag
    stamps, frames, labels, instances, frame_id = read_sequence_bag(path)
    return Video(Path(path).name, frames, [s * 1e-9 for s in stamps], labels, instances,
                 frame_id or 'camera')


def load_cityscapes_sequence(seq: cityscapes.SequenceFiles,
                             fps: float = cityscapes.CITYSCAPES_FPS) -> Video:
    frames = [cityscapes.read_rgb(p) for p in seq.images]
    stamps = [(f - seq.frames[0]) / fps for f in seq.frames]
    labels = {i: cityscapes.read_label_ids(p) for i, p in seq.label_ids.items()}
    instances = {i: cityscapes.read_label_ids(p).astype(np.int32)
                 for i, p in seq.instance_ids.items()}
    return Video(seq.name, frames, stamps, labels, instances)
