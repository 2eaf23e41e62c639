"""Cityscapes folder layout: write generated sequences, read real or generated ones.

    leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png      (uint8 ids)
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_instanceIds.png   (uint16)
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_color.png         (RGBA)

Real Cityscapes labels only the 20th frame of each 30-frame snippet, and one sequence id holds
many snippets (frankfurt_000000: frames 275-304, 557-586, ...): unrelated scenes, one after the
other. A reader returns one video per snippet (a run of consecutive frame numbers), named
`{city}_{seq}_{first frame}` where a sequence id holds several, `{city}_{seq}` where it holds one
(generated sequences), with the frame paths in order and whatever labels exist.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

FRAME_RE = re.compile(r'^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$')
CITYSCAPES_FPS = 17.0


def frame_stem(city: str, seq: int, frame: int) -> str:
    return f'{city}_{seq:06d}_{frame:06d}'


def image_path(root, split, city, seq, frame) -> Path:
    return Path(root) / 'leftImg8bit_sequence' / split / city / \
        f'{frame_stem(city, seq, frame)}_leftImg8bit.png'


def gt_path(root, split, city, seq, frame, kind: str) -> Path:
    return Path(root) / 'gtFine' / split / city / f'{frame_stem(city, seq, frame)}_gtFine_{kind}.png'


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')


def read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_frame(root, split, city, seq, frame, image, label_ids, instance_ids, palette_by_id):
    """One frame with its labelIds, instanceIds and color ground truth."""
    write_rgb(image_path(root, split, city, seq, frame), image)
    labels = gt_path(root, split, city, seq, frame, 'labelIds')
    labels.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(labels), label_ids.astype(np.uint8))
    cv2.imwrite(str(gt_path(root, split, city, seq, frame, 'instanceIds')),
                instance_ids.astype(np.uint16))
    color = palette_by_id[label_ids]
    rgba = np.dstack([color, np.full(label_ids.shape, 255, np.uint8)])
    cv2.imwrite(str(gt_path(root, split, city, seq, frame, 'color')),
                cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


@dataclass
class SequenceFiles:
    """One video of a Cityscapes-style folder: a snippet of consecutive frames of a sequence."""
    split: str
    city: str
    seq: int
    frames: List[int] = field(default_factory=list)
    images: List[Path] = field(default_factory=list)
    label_ids: Dict[int, Path] = field(default_factory=dict)     # frame index -> path
    instance_ids: Dict[int, Path] = field(default_factory=dict)
    snippet: Optional[int] = None     # first frame number, where the sequence id holds several

    def read_labels(self, index: int) -> np.ndarray:
        return read_label_ids(self.label_ids[index])

    def read_instances(self, index: int) -> np.ndarray:
        return read_label_ids(self.instance_ids[index])

    @property
    def name(self) -> str:
        base = f'{self.city}_{self.seq:06d}'
        return base if self.snippet is None else f'{base}_{self.snippet:06d}'


def split_snippets(entry: SequenceFiles) -> List[SequenceFiles]:
    """The runs of consecutive frame numbers of a sequence (frames sorted), one video each;
    the sequence itself when its frames are consecutive."""
    starts = [0] + [i for i in range(1, len(entry.frames))
                    if entry.frames[i] != entry.frames[i - 1] + 1]
    if len(starts) == 1:
        return [entry]
    bounds = starts + [len(entry.frames)]
    return [SequenceFiles(entry.split, entry.city, entry.seq, entry.frames[a:b],
                          entry.images[a:b], snippet=entry.frames[a])
            for a, b in zip(bounds, bounds[1:])]


def find_sequences(root, split: Optional[str] = None) -> List[SequenceFiles]:
    """Every sequence under root/leftImg8bit_sequence (or leftImg8bit), frames in order."""
    root = Path(root)
    found: Dict[tuple, SequenceFiles] = {}
    for folder in ('leftImg8bit_sequence', 'leftImg8bit'):
        base = root / folder
        if not base.is_dir():
            continue
        for split_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if split is not None and split_dir.name != split:
                continue
            for city_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                for image in sorted(city_dir.iterdir()):
                    m = FRAME_RE.match(image.name)
                    if not m:
                        continue
                    key = (split_dir.name, m['city'], int(m['seq']))
                    entry = found.setdefault(key, SequenceFiles(*key))
                    frame = int(m['frame'])
                    entry.frames.append(frame)
                    entry.images.append(image)
    if not found:
        raise FileNotFoundError(f'no Cityscapes-style frames under {root} '
                                '(expected leftImg8bit_sequence/<split>/<city>/*_leftImg8bit.png)')
    videos = []
    for key in sorted(found):
        entry = found[key]
        order = np.argsort(entry.frames)
        entry.frames = [entry.frames[i] for i in order]
        entry.images = [entry.images[i] for i in order]
        for video in split_snippets(entry):
            for index, frame in enumerate(video.frames):
                for kind, target in (('labelIds', video.label_ids),
                                     ('instanceIds', video.instance_ids)):
                    path = gt_path(root, video.split, video.city, video.seq, frame, kind)
                    if path.is_file():
                        target[index] = path
            videos.append(video)
    return videos


def read_label_ids(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f'cannot read label image {path}')
    return image

