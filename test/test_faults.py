"""Faults: fuzzed messages, faults during adaptation, memory budget, divergence, soak."""
import gc
import time
from types import SimpleNamespace

import numpy as np
import psutil
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import synthetic_clip, tiny_spec
from ditta_ros.adapt.ditta import AdaptConfig
from ditta_ros.adapt.guard import collapse_reason
from ditta_ros.io.image_codec import (SUPPORTED_ENCODINGS, ImageDecodeError, decode_compressed,
                                      decode_image, encode_compressed)
from ditta_ros.model.build import build_model
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.config import StreamConfig, Phase, WarmupConfig
from ditta_ros.stream.methods import make_stream
from ditta_ros.teacher.factory import TeacherSpec, make_teacher
from ditta_ros.teacher.targets import TargetConfig

SPEC = InputSpec(img_scale=(96, 64))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=12)),
       height=st.integers(-2, 40), width=st.integers(-2, 40), step=st.integers(-5, 200),
       extra=st.integers(-50, 50), bigendian=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_fuzzed_raw_images_decode_or_fail_cleanly(encoding, height, width, step, extra,
                                                  bigendian, seed):
    rng = np.random.default_rng(seed)
    size = max(0, max(step, 0) * max(height, 0) + extra)
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                          is_bigendian=bigendian,
                          data=rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    try:
        image = decode_image(msg, max_pixels=1000)
    except ImageDecodeError:
        return
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=300), fmt=st.sampled_from(['jpeg', 'png', '', 'bmp']),
       cut=st.integers(0, 2000))
def test_fuzzed_compressed_images_decode_or_fail_cleanly(payload, fmt, cut):
    good = encode_compressed(np.full((20, 30, 3), 128, np.uint8), 'png' if fmt == 'png' else 'jpeg')
    for data in (payload, good[:cut], good[:cut] + payload):
        try:
            image = decode_compressed(SimpleNamespace(format=fmt, data=data), max_pixels=10_000)
        except ImageDecodeError:
            continue
        assert image.dtype == np.uint8 and image.ndim == 3


def stream_with(model, worker, teacher=None, **cfg):
    cfg.setdefault('warmup', WarmupConfig(frames=3))
    cfg.setdefault('adapt', AdaptConfig(passes=1))
    cfg.setdefault('targets', TargetConfig(num_classes=19, frame0_threshold=0.5,
                                           later_threshold=0.5))
    teacher = teacher or make_teacher(TeacherSpec(name='flow'), 'cpu')
    return make_stream('cam', model, SPEC, StreamConfig(**cfg), teacher, worker)


def run_warmup(stream, frames, start=0.0):
    for i, frame in enumerate(frames):
        stream.process(frame, start + 0.1 * i)
    deadline = time.monotonic() + 60
    while stream.status().phase not in (Phase.ADAPTED, Phase.FAILED):
        assert time.monotonic() < deadline, stream.status()
        time.sleep(0.02)
    return stream.status()


def test_a_failing_teacher_fails_the_adaptation_then_a_new_one_succeeds(tiny_model, worker):
    flow = make_teacher(TeacherSpec(name='flow'), 'cpu')
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('SAM2 exploded')
        return flow()

    stream = stream_with(tiny_model, worker, teacher=flaky)
    clip = synthetic_clip(frames=6)
    status = run_warmup(stream, clip[:3])
    assert status.phase == Phase.FAILED and 'SAM2 exploded' in status.reason
    assert not stream.adapted and stream.process(clip[3], 1.0) is not None
    stream.start_adaptation()
    assert run_warmup(stream, clip[3:], start=2.0).phase == Phase.ADAPTED


def test_a_non_finite_loss_fails_and_leaves_the_source_decoder(tiny_model, worker):
    model = tiny_model
    broken = build_model(tiny_spec()).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.decode_head.proj_feat[0].weight.fill_(float('nan'))  # only the contrastive loss
    stream = stream_with(broken, worker)
    status = run_warmup(stream, synthetic_clip(frames=3))
    assert status.phase == Phase.FAILED and 'non-finite' in status.reason
    assert stream._head is broken.decode_head


def test_the_memory_budget_fails_the_adaptation(tiny_model, worker):
    stream = stream_with(tiny_model, worker, adapt=AdaptConfig(passes=1, max_memory_mb=1.0))
    status = run_warmup(stream, synthetic_clip(frames=3))
    assert status.phase == Phase.FAILED and 'memory budget exceeded' in status.reason


def test_a_collapsed_decoder_is_refused(tiny_model):
    model = tiny_model
    import copy
    clip = synthetic_clip(frames=3)
    collapsed = copy.deepcopy(model.decode_head)
    with torch.no_grad():
        collapsed.linear_pred.bias[5] += 1e4
    # the source model's labels of the warm-up: several classes (sky, road, objects)
    labels = [torch.from_numpy(np.where(np.arange(f.shape[0])[:, None] < 24, 10, 0)
                               * np.ones(f.shape[1], np.int64)) for f in clip]
    reason = collapse_reason(model, collapsed, clip, labels, SPEC, 'cpu', [f'c{i}' for i in
                                                                             range(19)])
    assert reason and 'c5' in reason and 'diverged' in reason
    assert collapse_reason(model, model.decode_head, clip, labels, SPEC, 'cpu') is None


def test_stream_soak_memory_is_flat_after_warmup(tiny_model, worker):
    """Thousands of frames through a DiTTA stream: RSS stays flat once adapted."""
    stream = stream_with(tiny_model, worker, warmup=WarmupConfig(frames=5))
    frames = synthetic_clip(frames=20, height=32, width=48)
    process = psutil.Process()
    start_rss = process.memory_info().rss
    run_warmup(stream, frames[:5])
    rss = []
    for i in range(2500):
        prediction = stream.process(frames[i % 20], 10.0 + 0.05 * i)
        assert prediction.fused and prediction.label.shape == (32, 48)
        if i in (200, 2499):
            gc.collect()
            rss.append(process.memory_info().rss)
    growth_mb = (rss[-1] - rss[0]) / 2 ** 20
    print(f'soak: 2500 frames, RSS start {start_rss / 2**20:.0f} MB, after warm-up '
          f'{rss[0] / 2**20:.0f} MB, end {rss[-1] / 2**20:.0f} MB (+{growth_mb:.1f} MB)')
    assert growth_mb < 30
