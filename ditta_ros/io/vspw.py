"""VSPW folder layout (the benchmark DiTTA reports on), read as it is.

    VSPW_480p/data/<video>/origin/<frame>.jpg     frames
    VSPW_480p/data/<video>/mask/<frame>.png       masks: 0 unlabelled, k = 1..124 class k - 1
    VSPW_480p/{train,val,test}.txt               the videos of each split, one name a line

Every video is its own clip (the paper's protocol: a fresh model per video, its first q % of
frames as the warm-up). Masks are matched to frames by file stem; a frame without one is
unlabelled. Mask values are kept as they are (dataset ids); the `vspw` label set maps them to
class indices, and values outside it to 255 (not evaluated).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

VSPW_FPS = 15.0   # the rate VSPW's frames were extracted and labelled at


@dataclass
class VideoFiles:
    """One VSPW video: frame paths in order and the masks that exist (frame index -> path)."""
    name: str
    frames: List[int] = field(default_factory=list)        # 0, 1, ... in file order
    images: List[Path] = field(default_factory=list)
    label_ids: Dict[int, Path] = field(default_factory=dict)
    instance_ids: Dict[int, Path] = field(default_factory=dict)   # none in VSPW

    def read_labels(self, index: int) -> np.ndarray:
        return read_mask(self.label_ids[index])

    def read_instances(self, index: int) -> np.ndarray:
        raise KeyError(f'VSPW has no instance masks (frame {index} of {self.name})')


def read_mask(path) -> np.ndarray:
    """A mask's values (uint8 [H, W]). VSPW's masks are palette PNGs: OpenCV would decode them
    to the palette's colours, Pillow gives the stored indices."""
    from PIL import Image
    with Image.open(path) as image:
        if image.mode not in ('P', 'L'):
            raise ValueError(f'{path}: a VSPW mask is a single-channel (palette or grey) PNG, '
                             f'this one is {image.mode}')
        return np.array(image, dtype=np.uint8)


def is_vspw(root) -> bool:
    """Whether `root` is laid out as VSPW (a data/ folder of videos with origin/ frames)."""
    data = Path(root) / 'data'
    return data.is_dir() and any((v / 'origin').is_dir() for v in data.iterdir() if v.is_dir())


def split_videos(root: Path, split: str) -> List[str]:
    """The video names that `root/<split>.txt` lists (blank lines skipped)."""
    listing = root / f'{split}.txt'
    if not listing.is_file():
        raise FileNotFoundError(f'no split list {listing} (VSPW has train.txt, val.txt, '
                                'test.txt beside data/)')
    return [line.strip() for line in listing.read_text().splitlines() if line.strip()]


def find_videos(root, split: Optional[str] = None) -> List[VideoFiles]:
    """The videos under root/data (those `split`.txt lists, in its order; all, sorted, without a
    split), frames in file-name order."""
    root = Path(root)
    data = root / 'data'
    names = split_videos(root, split) if split else \
        sorted(v.name for v in data.iterdir() if (v / 'origin').is_dir())
    videos = []
    for name in names:
        origin = data / name / 'origin'
        if not origin.is_dir():
            raise FileNotFoundError(f'VSPW video {name!r} has no frames at {origin}')
        images = sorted(p for p in origin.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg',
                                                                             '.png'))
        video = VideoFiles(name, list(range(len(images))), images)
        for index, image in enumerate(images):
            mask = data / name / 'mask' / f'{image.stem}.png'
            if mask.is_file():
                video.label_ids[index] = mask
        videos.append(video)
    if not videos:
        raise FileNotFoundError(f'no VSPW videos under {data}')
    return videos
