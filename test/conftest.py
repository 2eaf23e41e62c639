"""Shared test fixtures: tiny models and checkpoints made by the tests, the reference fixtures,
and an isolated DDS environment (loopback only, a domain id of our own)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ditta_ros.model.build import ModelSpec, build_model  # noqa: E402
from ditta_ros.tools.replay import Client, dds_environment, image_message  # noqa: E402
from ditta_ros.runtime import configure_process  # noqa: E402

# before anything initialises ROS in this process: loopback only, our own domain
os.environ.update(dds_environment())



def _reference_fixtures() -> Path:
    """DITTA_REFERENCE_FIXTURES, else shared/fixtures/reference beside this checkout, or beside
    the repository a local clone was made from (`git clone . /tmp/x` keeps it as its origin)."""
    if 'DITTA_REFERENCE_FIXTURES' in os.environ:
        return Path(os.environ['DITTA_REFERENCE_FIXTURES'])
    bases = [ROOT.parent]
    origin = subprocess.run(['git', '-C', str(ROOT), 'config', '--get', 'remote.origin.url'],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin).is_dir():
        bases.append(Path(origin).resolve().parent)
    paths = [base / 'shared' / 'fixtures' / 'reference' for base in bases]
    return next((path for path in paths if path.is_dir()), paths[0])


REFERENCE = _reference_fixtures()

torch.set_num_threads(2)
configure_process()   # as every entry point does, before the first parallel operation


def tiny_mit() -> dict:
    """MiT shape of the reference fixtures' ISS model (dims 16-128, one block per stage)."""
    return dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                sr_ratios=[8, 4, 2, 1])


def tiny_spec(**overrides) -> ModelSpec:
    fields = dict(family='segformer', variant='custom', num_classes=19, embed_dim=32, window=2,
                  mit=tiny_mit())
    fields.update(overrides)
    return ModelSpec(**fields)


def confident_checkpoint(path: Path, spec: ModelSpec, scale: float = 30.0) -> Path:
    """A random model whose classifier is scaled up, so its softmax is far from uniform
    (reliable enough to be prompted), saved in the mmseg/DiTTA layout."""
    model = build_model(spec)
    head = model.decode_head
    with torch.no_grad():
        for param in head.classifier_parameters():
            param.mul_(scale)
    state = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    state.update({f'decode_head.{k}': v for k, v in head.state_dict().items()})
    torch.save({'state_dict': state}, path)
    return path


@pytest.fixture(scope='session')
def reference():
    """The reference implementation's golden files (shared/fixtures/reference)."""
    if not (REFERENCE / 'summary.json').is_file():
        pytest.fail(f'reference fixtures not found at {REFERENCE} '
                    '(set DITTA_REFERENCE_FIXTURES)')
    return REFERENCE


@pytest.fixture(scope='session')
def reference_summary(reference):
    return json.loads((reference / 'summary.json').read_text())


@pytest.fixture(scope='session')
def reference_frames(reference):
    return list(np.load(reference / 'inputs.npz')['frames_rgb_decoded_pil'])


def reference_spec(reference, **overrides) -> ModelSpec:
    return tiny_spec(checkpoint=str(reference / 'iss_state_dict.pt'), **overrides)


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
    """The reference-sized tiny SegFormer with confident predictions, in eval mode."""
    path = confident_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny.pt', tiny_spec())
    return build_model(tiny_spec(checkpoint=str(path))).eval()


@pytest.fixture
def worker():
    """A background adaptation worker, stopped (and checked to stop) after the test."""
    from ditta_ros.stream.worker import AdaptationWorker
    w = AdaptationWorker()
    yield w
    assert w.stop(10)


def synthetic_clip(frames: int = 6, height: int = 48, width: int = 80, seed: int = 0):
    """A few frames of moving coloured shapes on a two-tone background (RGB uint8)."""
    rng = np.random.default_rng(seed)
    clip = []
    for t in range(frames):
        img = np.zeros((height, width, 3), np.uint8)
        img[: height // 2] = (90, 140, 220)
        img[height // 2:] = (110, 110, 110)
        x = 5 + 3 * t
        img[20:36, x:x + 14] = (220, 40, 40)
        img[8:18, width - 20 - 2 * t:width - 8 - 2 * t] = (40, 200, 60)
        noise = rng.normal(0, 4, img.shape)
        clip.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return clip


# ---------------------------------------------------------------- node tests (real DDS)

NODE_TOPIC = '/itest/front/image_raw'
NODE_CAMERA = 'itest/front'


@pytest.fixture(scope='session')
def b0_checkpoint(tmp_path_factory):
    """A confident random SegFormer-B0 (decoder width 32) that the node can load by name."""
    return confident_checkpoint(tmp_path_factory.mktemp('ckpt') / 'b0.pt',
                                ModelSpec(variant='b0', num_classes=19, embed_dim=32, window=2))


def node_params(checkpoint, **overrides):
    """Parameters of a small, fast node: B0 at 128x64 input, flow teacher, 4 warm-up frames.
    The do-no-harm check and the label-free choice are off: a random model's adaptation erases
    classes at will, which decoder the choice serves depends on it, and these tests are about the
    node's plumbing (test_harm_check.py and test_choice.py test those)."""
    base = {'camera_topics': [NODE_TOPIC], 'model.variant': 'b0',
            'model.checkpoint': str(checkpoint), 'model.embed_dim': 32, 'model.window': 2,
            'model.input_scale': [128, 64], 'teacher.name': 'flow', 'warmup.frames': 4,
            'adapt.passes': 1, 'adapt.harm_check': 'off', 'adapt.choose': 'off',
            'output.confidence': True,
            'output.status_rate_hz': 5.0, 'device': 'cpu'}
    base.update(overrides)
    return base


@pytest.fixture
def client():
    c = Client('ditta_test_client')
    yield c
    c.close()


def send_frames(pub, frames, start=1000.0, dt=0.1, frame_id='front_cam', gap=0.15):
    """Publish frames with stamps start + i*dt; returns the stamps."""
    stamps = []
    for i, frame in enumerate(frames):
        stamp = start + i * dt
        pub.publish(image_message(frame, stamp, frame_id))
        stamps.append(stamp)
        time.sleep(gap)
    return stamps


def stamp_of(msg):
    return round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6)
