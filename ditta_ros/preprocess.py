"""Frame -> model input, exactly as the reference's test pipeline prepares it.

The frame is rescaled keeping its aspect ratio to fit `img_scale` (long, short side), then both
sides are resized up to a multiple of `size_divisor`, with OpenCV's bilinear filter on uint8;
then mean/std-normalised per RGB channel (ImageNet statistics on the 0-255 scale).
"""
import functools
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
        aligned = (int(math.ceil(new_h / div)) * div, int(math.ceil(new_w / div)) * div)
        return (new_h, new_w), aligned


@functools.lru_cache(maxsize=8)
def _normalised_values(mean, std, device: str) -> torch.Tensor:
    """[3, 256] float32: every uint8 value of each channel normalised as mmcv's imnormalize,
    bit for bit: mean subtracted in float32, times 1/std (double, of the float32 std) in
    double, rounded to float32."""
    values = np.arange(256, dtype=np.float32)[None, :] - np.asarray(mean, np.float32)[:, None]
    inv_std = 1.0 / np.asarray(std, dtype=np.float32).astype(np.float64)
    return torch.from_numpy((values * inv_std[:, None]).astype(np.float32)).to(device)


def prepare_frame(frame_rgb: np.ndarray, spec: InputSpec, device='cpu') -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float32 [3, h, w] normalised network input on `device`.

    The resized frame travels as uint8 and is normalised where the network runs, by looking each
    byte up in a table of its 256 normalised values: exact, 4x less to upload to a GPU, and on a
    CPU faster than the float arithmetic (22 vs 46 ms for a 2048x1024 frame)."""
    (new_h, new_w), (align_h, align_w) = spec.input_size(frame_rgb.shape[:2])
    img = cv2.resize(frame_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.resize(img, (align_w, align_h), interpolation=cv2.INTER_LINEAR)
    pixels = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)
    table = _normalised_values(spec.mean, spec.std, str(pixels.device))
    return torch.stack([table[c][pixels[c].long()] for c in range(3)])
