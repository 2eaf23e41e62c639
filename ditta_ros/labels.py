"""Label sets: class names, colours and dataset id mappings, read from config/labels/*.yaml.

Class lists and palettes live in configuration, not in code. A label set is named (`cityscapes`
finds config/labels/cityscapes.yaml in the package's share folder or source checkout) or given
as a path to a YAML file of the same layout.
"""
import os
import sys
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import yaml


def config_dir() -> str:
    """The package's config folder: the source checkout's, else the installed share folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.path.dirname(here), 'config')]
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) + [sys.prefix]:
        if prefix:
            candidates.append(os.path.join(prefix, 'share', 'ditta_ros', 'config'))
    for path in candidates:
        if os.path.isdir(os.path.join(path, 'labels')):
            return path
    raise FileNotFoundError('ditta_ros config folder not found (looked in '
                            f'{", ".join(candidates)}); is the package installed?')


@dataclass(frozen=True)
class DatasetLabel:
    id: int
    name: str
    train_id: int
    has_instances: bool
    color: Tuple[int, int, int]


@dataclass(frozen=True)
class LabelSet:
    """The classes a model predicts (index = value in a class-id mask) and their colours."""
    name: str
    class_names: Tuple[str, ...]
    palette: np.ndarray                     # [C, 3] uint8
    ignore_value: int = 255
    dataset_labels: Tuple[DatasetLabel, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """Class-id map -> RGB image; ids outside the set (e.g. 255) are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[:self.num_classes] = self.palette
        return lut[np.asarray(label, dtype=np.uint8)]

    def id_to_train_id(self) -> np.ndarray:
        """LUT over 0..255: dataset label id -> class index (ignore_value where not evaluated)."""
        lut = np.full(256, self.ignore_value, dtype=np.uint8)
        for lab in self.dataset_labels:
            if 0 <= lab.id < 256 and 0 <= lab.train_id < self.num_classes:
                lut[lab.id] = lab.train_id
        return lut

    def train_id_to_id(self) -> np.ndarray:
        """LUT over 0..255: class index -> dataset label id (0 where none)."""
        lut = np.zeros(256, dtype=np.uint8)
        for lab in self.dataset_labels:
            if 0 <= lab.train_id < self.num_classes and lut[lab.train_id] == 0:
                lut[lab.train_id] = lab.id
        return lut

    def dataset_label(self, name: str) -> DatasetLabel:
        for lab in self.dataset_labels:
            if lab.name == name:
                return lab
        raise KeyError(f'label set {self.name} has no dataset label {name!r}')


def load_label_set(name_or_path: str) -> LabelSet:
    """Read a label set by name (config/labels/<name>.yaml) or from a YAML file path."""
    path = name_or_path
    if not os.path.isfile(path):
        path = os.path.join(config_dir(), 'labels', f'{name_or_path}.yaml')
        if not os.path.isfile(path):
            known = sorted(f[:-5] for f in os.listdir(os.path.dirname(path)) if f.endswith('.yaml'))
            raise FileNotFoundError(f'unknown label set {name_or_path!r}: neither a file nor one '
                                    f'of {", ".join(known)}')
    with open(path) as f:
        data = yaml.safe_load(f)
    try:
        dataset = tuple(DatasetLabel(int(i), str(n), int(t), bool(inst), tuple(int(c) for c in col))
                        for i, n, t, inst, col in data.get('dataset_labels', []))
        if 'classes' in data:
            names = [str(c['name']) for c in data['classes']]
            colors = [tuple(int(v) for v in c['color']) for c in data['classes']]
        else:
            by_train: Dict[int, DatasetLabel] = {}
            for lab in dataset:
                if lab.train_id != int(data.get('ignore_value', 255)) and lab.train_id >= 0:
                    by_train.setdefault(lab.train_id, lab)
            order = sorted(by_train)
            if order != list(range(len(order))):
                raise ValueError(f'train ids are not 0..N-1: {order}')
            names = [by_train[t].name for t in order]
            colors = [by_train[t].color for t in order]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'label set file {path} is malformed: {exc}') from exc
    return LabelSet(str(data.get('name', os.path.basename(path)[:-5])), tuple(names),
                    np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
                    int(data.get('ignore_value', 255)), dataset)
