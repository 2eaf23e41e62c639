"""Propagators that need no model weights: dense optical flow, and ground-truth tracks.

Both keep one mask per object on the frame they are at, follow SAM2's interaction semantics
(objects in the order they were added; `reset` forgets them all) and so run through exactly the
same prompt / merge / vote / render code as the SAM2 teacher.

* `FlowPropagator` (the teacher for machines without a GPU or SAM2 weights): a point prompt
  selects the connected ISS segment of the point's class around it; propagation warps every
  mask along dense optical flow (OpenCV DIS, computed once per frame pair, on frames downscaled
  to at most `flow_max_side` pixels on their long side) with nearest sampling.
* `OraclePropagator` (for measuring the adaptation apart from the teacher): masks are the
  ground-truth track (instance or stuff region) under the prompt point, followed by its id;
  what a perfect SAM2 would return. It finds each warm-up frame's track map by the frame's
  content (`frame_key`), so a stream hands it frames only, as it does any teacher.
"""
import hashlib
from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch

from ditta_ros.teacher.targets import Propagator


class _MaskDictPropagator(Propagator):
    """Objects as an ordered dict obj_id -> bool mask on the current frame."""

    def __init__(self):
        self.objects: 'OrderedDict[int, np.ndarray]' = OrderedDict()
        self.frame_hw = (0, 0)

    def _result(self) -> Tuple[List[int], torch.Tensor]:
        if not self.objects:
            return [], torch.zeros((0,) + self.frame_hw, dtype=torch.bool)
        return list(self.objects), torch.from_numpy(np.stack(list(self.objects.values())))

    def reset(self) -> None:
        self.objects.clear()

    def add_mask(self, frame, obj_id, mask):
        self.objects[obj_id] = np.asarray(mask.cpu().numpy(), dtype=bool).copy()
        return self._result()

    def close(self) -> None:
        self.objects.clear()


class FlowPropagator(_MaskDictPropagator):
    """Masks carried along dense optical flow; point prompts pick connected ISS segments."""

    def __init__(self, flow_max_side: int = 512):
        super().__init__()
        self.flow_max_side = flow_max_side
        self._grey: List[np.ndarray] = []
        self._labels: List[np.ndarray] = []
        self._flows: Dict[Tuple[int, int], np.ndarray] = {}
        self._scale = 1.0

    def start(self, frames, labels):
        self.frame_hw = tuple(frames[0].shape[:2])
        h, w = self.frame_hw
        self._scale = min(1.0, self.flow_max_side / max(h, w))
        size = (max(1, round(w * self._scale)), max(1, round(h * self._scale)))
        self._grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size,
                                 interpolation=cv2.INTER_AREA) for f in frames]
        self._labels = [np.asarray(lab.cpu().numpy()) for lab in labels]
        self._flows = {}
        self.objects.clear()

    def add_point(self, frame, obj_id, xy):
        x, y = xy
        label = self._labels[frame]
        same_class = (label == label[y, x]).astype(np.uint8)
        _, components = cv2.connectedComponents(same_class, connectivity=8)
        self.objects[obj_id] = components == components[y, x]
        return self._result()

    def _sampling_flow(self, src: int, dst: int) -> np.ndarray:
        """Flow dst -> src at frame resolution: where each dst pixel comes from in src."""
        if (dst, src) not in self._flows:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            flow = dis.calc(self._grey[dst], self._grey[src], None)
            h, w = self.frame_hw
            if flow.shape[:2] != (h, w):
                flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / self._scale
            self._flows[(dst, src)] = flow
        return self._flows[(dst, src)]

    def step(self, frame, reverse):
        dst = frame - 1 if reverse else frame + 1
        flow = self._sampling_flow(frame, dst)
        h, w = self.frame_hw
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32),
                                     np.arange(h, dtype=np.float32))
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        for obj_id, mask in self.objects.items():
            self.objects[obj_id] = cv2.remap(mask.astype(np.uint8), map_x, map_y,
                                             cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                             borderValue=0).astype(bool)
        return self._result()

    def close(self):
        super().close()
        self._flows.clear()


def frame_key(frame: np.ndarray) -> bytes:
    """A digest of a frame's pixels: how the oracle finds a warm-up frame's track map."""
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()


class OraclePropagator(_MaskDictPropagator):
    """Ground-truth tracks: `tracks[frame_key(frame)]` holds a per-pixel id that names the same
    object in every frame (e.g. Cityscapes instanceIds). Pixels whose id is in `void_ids` are no
    object."""

    def __init__(self, tracks: Mapping[bytes, np.ndarray], void_ids: Sequence[int] = (0,)):
        super().__init__()
        self.tracks = tracks
        self.track_maps: List[np.ndarray] = []
        self.void_ids = set(void_ids)
        self._keys: Dict[int, int] = {}

    def start(self, frames, labels):
        found = [self.tracks.get(frame_key(frame)) for frame in frames]
        missing = sum(m is None for m in found)
        if missing:
            raise ValueError(f'oracle teacher: {missing} of {len(frames)} warm-up frames have no '
                             'ground-truth track map')
        self.track_maps = [np.asarray(m) for m in found]
        self.frame_hw = tuple(frames[0].shape[:2])
        self.objects.clear()
        self._keys = {}

    def _region(self, frame: int, key) -> np.ndarray:
        if key is None:
            return np.zeros(self.frame_hw, dtype=bool)
        return self.track_maps[frame] == key

    def add_point(self, frame, obj_id, xy):
        x, y = xy
        key = int(self.track_maps[frame][y, x])
        self._keys[obj_id] = None if key in self.void_ids else key
        self.objects[obj_id] = self._region(frame, self._keys[obj_id])
        return self._result()

    def add_mask(self, frame, obj_id, mask):
        self._keys.setdefault(obj_id, None)
        return super().add_mask(frame, obj_id, mask)

    def step(self, frame, reverse):
        dst = frame - 1 if reverse else frame + 1
        for obj_id in self.objects:
            self.objects[obj_id] = self._region(dst, self._keys[obj_id])
        return self._result()
