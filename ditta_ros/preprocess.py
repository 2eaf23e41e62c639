"""Frame -> model input, exactly as the reference's test pipeline prepares it.

The frame is rescaled keeping its aspect ratio to fit `img_scale` (long, short side), then both
sides are resized up to a multiple of `size_divisor`, with OpenCV's bilinear filter on uint8;
then mean/std-normalised per RGB channel (ImageNet statistics on the 0-255 scale).
"""
import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class InputSpec:
    """How frames become network input. img_scale is (long side, short side)."""
    img_scale: Tuple[int, int] = (853, 480)
    size_divisor: int = 32
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def input_size(self, frame_hw: Tuple[int, int]) -> Tuple[int, int]:
        """(rescaled (h, w), aligned (h, w)) for a frame size."""
        h, w = frame_hw
        long_side, short_side = max(self.img_scale), min(self.img_scale)
        scale = min(long_side / max(h, w), short_side / min(h, w))
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        div = self.size_divisor
        return (new_h, new_w), (int(math.ceil(new_h / div)) * div, int(math.ceil(new_w / div)) * div)


def prepare_frame(frame_rgb: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float32 [3, h, w] normalised network input."""
    (new_h, new_w), (align_h, align_w) = spec.input_size(frame_rgb.shape[:2])
    img = cv2.resize(frame_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.resize(img, (align_w, align_h), interpolation=cv2.INTER_LINEAR)
    centred = img.astype(np.float32) - np.asarray(spec.mean, dtype=np.float32)
    # 1/std in double of the float32 std, as mmcv's imnormalize: bit-identical input
    inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32).astype(np.float64)
    img = (centred * inv_std).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
