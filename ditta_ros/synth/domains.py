"""Appearance shifts applied to rendered frames (labels are unaffected).

A domain is a '+'-joined list of effects, e.g. `night+noise` or `fog+rain+jpeg`; `clear` is the
source domain (mild sensor noise only). Effects are deterministic given the frame's RNG.
"""
from typing import Callable, Dict

import cv2
import numpy as np

Effect = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _noise(sigma: float) -> Effect:
    def apply(img, depth, rng):
        return img + rng.normal(0, sigma, img.shape).astype(np.float32)
    return apply


def _night(img, depth, rng):
    dark = 255.0 * (img / 255.0) ** 1.8 * 0.45
    dark *= np.array([0.75, 0.85, 1.15], np.float32)
    lamps = np.exp(-((depth - 15.0) % 30.0) / 6.0)[..., None] * 40.0 * (depth < 80)[..., None]
    return dark + lamps * np.array([1.0, 0.85, 0.5], np.float32)


def _fog(img, depth, rng):
    density = np.clip(1.0 - np.exp(-depth / 35.0), 0, 1)[..., None]
    return img * (1 - 0.85 * density) + 200.0 * 0.85 * density


def _rain(img, depth, rng):
    h, w = img.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    count = int(h * w / 180)
    xs, ys = rng.integers(0, w, count), rng.integers(0, h, count)
    length = max(3, h // 25)
    for x, y in zip(xs, ys):
        cv2.line(streaks, (int(x), int(y)), (int(x) - length // 3, int(y) + length), 1.0, 1)
    out = img * 0.8 + 20.0
    return out + streaks[..., None] * 70.0


def _cast(img, depth, rng):
    return img * np.array([1.15, 0.95, 0.7], np.float32)


def _blur(img, depth, rng):
    return cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.8, img.shape[1] / 400))


def _jpeg(img, depth, rng):
    ok, buf = cv2.imencode('.jpg', np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 18])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32)


EFFECTS: Dict[str, Effect] = {
    'clear': _noise(2.0), 'noise': _noise(14.0), 'night': _night, 'fog': _fog, 'rain': _rain,
    'cast': _cast, 'blur': _blur, 'jpeg': _jpeg,
}
ORDER = ('night', 'fog', 'rain', 'cast', 'blur', 'clear', 'noise', 'jpeg')


def parse_domain(spec: str):
    """Validate a domain spec; returns its effects in application order."""
    names = [n.strip() for n in spec.split('+') if n.strip()]
    unknown = [n for n in names if n not in EFFECTS]
    if unknown or not names:
        raise ValueError(f'unknown domain effect(s) {unknown or spec!r}; use '
                         f'{", ".join(EFFECTS)} joined by +')
    return [n for n in ORDER if n in names]


def apply_domain(image: np.ndarray, depth: np.ndarray, spec: str,
                 rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    for name in parse_domain(spec):
        out = EFFECTS[name](out, depth, rng)
    return np.clip(out, 0, 255).astype(np.uint8)
