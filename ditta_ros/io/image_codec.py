"""sensor_msgs/Image and CompressedImage <-> numpy, validated, without ROS imports.

Works on any object with the message's fields, so bag readers and rclpy messages share it.
Decoding checks everything a malformed or unexpected message can get wrong and raises
`ImageDecodeError` with a message fit for a log line; raw 8-bit RGB data is viewed, not copied.
"""
import cv2
import numpy as np

# encoding -> (channels, numpy dtype); all are turned into RGB uint8
_RAW_ENCODINGS = {
    'rgb8': (3, np.uint8), 'bgr8': (3, np.uint8), 'rgba8': (4, np.uint8), 'bgra8': (4, np.uint8),
    'mono8': (1, np.uint8), '8UC1': (1, np.uint8), '8UC3': (3, np.uint8),
    'mono16': (1, np.uint16), '16UC1': (1, np.uint16),
    'rgb16': (3, np.uint16), 'bgr16': (3, np.uint16),
    '32FC1': (1, np.float32),
    'yuv422': (2, np.uint8), 'uyvy': (2, np.uint8), 'yuv422_yuy2': (2, np.uint8), 'yuyv': (2, np.uint8),
    'bayer_rggb8': (1, np.uint8), 'bayer_bggr8': (1, np.uint8),
    'bayer_gbrg8': (1, np.uint8), 'bayer_grbg8': (1, np.uint8),
}
_BAYER_TO_RGB = {  # OpenCV names Bayer patterns by the second row; these give RGB output
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
}
SUPPORTED_ENCODINGS = tuple(sorted(_RAW_ENCODINGS))


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an image; the text says why."""


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'empty image ({width}x{height})')
    if height < 2 or width < 2:
        raise ImageDecodeError(f'image too small to segment ({width}x{height})')
    if height * width > max_pixels:
        raise ImageDecodeError(f'image of {width}x{height} exceeds max_image_pixels={max_pixels}')


def decode_image(msg, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 [H, W, 3] (a view of the message data for rgb8)."""
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding not in _RAW_ENCODINGS:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}; supported: '
                               f'{", ".join(SUPPORTED_ENCODINGS)}')
    _check_size(height, width, max_pixels)
    channels, dtype = _RAW_ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(f'step {step} is smaller than width*channels*bytes = {row_bytes} '
                               f'for {encoding} {width}x{height}')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageDecodeError(f'data length {data.size} != step*height = {step * height} '
                               f'({encoding} {width}x{height}, step {step})')
    if encoding.startswith(('yuv422', 'uyvy', 'yuyv')) and width % 2:
        raise ImageDecodeError(f'{encoding} needs an even width, got {width}')
    rows = data.reshape(height, step)[:, :row_bytes]
    big_endian = bool(getattr(msg, 'is_bigendian', False))
    pixels = rows.view(np.dtype(dtype).newbyteorder('>' if big_endian else '<')) \
        if itemsize > 1 else rows
    pixels = pixels.reshape(height, width, channels)
    return _to_rgb8(pixels, encoding)


def _to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding in ('rgb8',):
        return pixels
    if encoding in ('bgr8', '8UC3'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    if encoding == 'rgba8':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    if encoding == 'bgra8':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGRA2RGB)
    if encoding in ('mono8', '8UC1'):
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., 0]), cv2.COLOR_GRAY2RGB)
    if encoding in ('mono16', '16UC1', 'rgb16', 'bgr16'):
        scaled = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
        if encoding == 'rgb16':
            return np.ascontiguousarray(scaled)
        if encoding == 'bgr16':
            return cv2.cvtColor(np.ascontiguousarray(scaled), cv2.COLOR_BGR2RGB)
        return cv2.cvtColor(np.ascontiguousarray(scaled[..., 0]), cv2.COLOR_GRAY2RGB)
    if encoding == '32FC1':
        values = pixels[..., 0].astype(np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            raise ImageDecodeError(f'32FC1 image has {int((~finite).sum())} NaN/Inf pixels')
        lo, hi = float(values.min()), float(values.max())
        grey = np.zeros(values.shape, np.uint8) if hi <= lo else \
            ((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if encoding in ('yuv422', 'uyvy'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_YUV2RGB_UYVY)
    if encoding in ('yuv422_yuy2', 'yuyv'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_YUV2RGB_YUY2)
    return cv2.cvtColor(np.ascontiguousarray(pixels[..., 0]), _BAYER_TO_RGB[encoding])


def decode_compressed(msg, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 [H, W, 3]."""
    fmt = str(msg.format).lower()
    if fmt and not any(k in fmt for k in ('jpeg', 'jpg', 'png')):
        raise ImageDecodeError(f'unsupported compressed format {msg.format!r} (jpeg or png)')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError('compressed image has no data')
    size = compressed_size(data)
    if size is not None:  # refuse a huge image before decoding it
        _check_size(size[1], size[0], max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f'corrupt or truncated {msg.format or "compressed"} data '
                               f'({data.size} bytes)')
    _check_size(image.shape[0], image.shape[1], max_pixels)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def compressed_size(data: np.ndarray):
    """(width, height) from a PNG or JPEG header without decoding; None if not found."""
    raw = data.tobytes()[:65536] if data.size > 65536 else data.tobytes()
    if raw[:8] == b'\x89PNG\r\n\x1a\n' and len(raw) >= 24:
        return int.from_bytes(raw[16:20], 'big'), int.from_bytes(raw[20:24], 'big')
    if raw[:2] != b'\xff\xd8':
        return None
    pos = 2
    while pos + 9 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(raw[pos + 2:pos + 4], 'big')
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(raw[pos + 7:pos + 9], 'big'),
                    int.from_bytes(raw[pos + 5:pos + 7], 'big'))
        pos += 2 + length
    return None


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """RGB uint8 -> JPEG/PNG bytes (for CompressedImage data)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ext = '.png' if fmt == 'png' else '.jpg'
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f'cannot encode image as {fmt}')
    return buf.tobytes()
