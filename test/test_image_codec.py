"""Image message decoding: every supported encoding, and clear errors on bad messages."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ditta_ros.io.image_codec import (ImageDecodeError, decode_compressed, decode_image,
                                      encode_compressed)

RGB = (np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3) * 5)


def raw(array, encoding, step=None, bigendian=False, height=None, width=None, data=None):
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    row = array[0].nbytes
    step = row if step is None else step
    if data is None:
        padded = np.zeros((h, max(step, row)), np.uint8)
        padded[:, :row] = array.view(np.uint8).reshape(h, row)
        data = padded[:, :step].tobytes()
    return SimpleNamespace(encoding=encoding, height=h if height is None else height,
                           width=w if width is None else width, step=step,
                           is_bigendian=bigendian, data=data)


@pytest.mark.parametrize('encoding,convert', [
    ('rgb8', lambda a: a), ('bgr8', lambda a: a[..., ::-1]),
    ('rgba8', lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),
    ('bgra8', lambda a: np.dstack([a[..., ::-1], np.zeros(a.shape[:2], np.uint8)]))])
def test_colour_encodings_decode_to_the_same_rgb(encoding, convert):
    assert np.array_equal(decode_image(raw(convert(RGB), encoding)), RGB)


def test_rgb8_with_row_padding_is_decoded_without_the_padding():
    assert np.array_equal(decode_image(raw(RGB, 'rgb8', step=8 * 3 + 8)), RGB)


def test_mono_and_16_bit_encodings():
    grey = RGB[..., 0]
    assert np.array_equal(decode_image(raw(grey, 'mono8'))[..., 1], grey)
    wide = grey.astype(np.uint16) << 8
    assert np.array_equal(decode_image(raw(wide, 'mono16'))[..., 0], grey)
    big = wide.astype('>u2')
    assert np.array_equal(decode_image(raw(big, 'mono16', bigendian=True))[..., 0], grey)


def test_yuv422_and_bayer_are_converted_by_opencv():
    yuyv = cv2.cvtColor(RGB, cv2.COLOR_RGB2YUV_YUYV) if hasattr(cv2, 'COLOR_RGB2YUV_YUYV') \
        else None
    if yuyv is not None:
        out = decode_image(raw(yuyv.reshape(6, 8, 2), 'yuv422_yuy2'))
        assert out.shape == (6, 8, 3) and np.abs(out.astype(int) - RGB).mean() < 20
    bayer = np.zeros((6, 8), np.uint8)
    bayer[0::2, 0::2], bayer[1::2, 1::2] = 200, 50   # R and B sites of RGGB
    out = decode_image(raw(bayer, 'bayer_rggb8'))
    assert out.shape == (6, 8, 3) and out[..., 0].mean() > out[..., 2].mean()


@pytest.mark.parametrize('message,match', [
    (raw(RGB, 'rgb16_weird'), 'unsupported encoding'),
    (raw(RGB, 'rgb8', data=b'\0' * 10), 'data length'),
    (raw(RGB, 'rgb8', step=8), 'step 8 is smaller'),
    (raw(RGB, 'rgb8', height=0, data=b''), 'empty image'),
    (raw(RGB[:1, :1], 'rgb8'), 'too small'),
    (raw(np.full((4, 4), np.nan, np.float32), '32FC1'), 'NaN/Inf'),
])
def test_bad_raw_messages_are_clear_errors(message, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(message)


def test_image_above_the_pixel_limit_is_rejected():
    with pytest.raises(ImageDecodeError, match='exceeds max_image_pixels'):
        decode_image(raw(RGB, 'rgb8'), max_pixels=20)


def test_compressed_round_trip_and_errors():
    png = SimpleNamespace(format='png', data=encode_compressed(RGB, 'png'))
    assert np.array_equal(decode_compressed(png), RGB)
    jpeg = SimpleNamespace(format='rgb8; jpeg compressed bgr8', data=encode_compressed(RGB))
    assert decode_compressed(jpeg).shape == RGB.shape
    with pytest.raises(ImageDecodeError, match='corrupt or truncated'):
        decode_compressed(SimpleNamespace(format='jpeg', data=png.data[:40]))
    with pytest.raises(ImageDecodeError, match='unsupported compressed format'):
        decode_compressed(SimpleNamespace(format='theora', data=png.data))
    with pytest.raises(ImageDecodeError, match='no data'):
        decode_compressed(SimpleNamespace(format='png', data=b''))
    big = np.zeros((300, 400, 3), np.uint8)
    with pytest.raises(ImageDecodeError, match='exceeds'):
        decode_compressed(SimpleNamespace(format='jpeg', data=encode_compressed(big)),
                          max_pixels=1000)
