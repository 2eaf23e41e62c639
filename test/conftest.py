"""Shared test fixtures: tiny models and checkpoints made by the tests, the reference fixtures,
and an isolated DDS environment (loopback only, a domain id of our own)."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ditta_ros.model.build import ModelSpec, build_model  # noqa: E402
from ditta_ros.ros.replay import dds_environment  # noqa: E402

# before anything initialises ROS in this process: loopback only, our own domain
os.environ.update(dds_environment())

REFERENCE = Path(os.environ.get('DITTA_REFERENCE_FIXTURES',
                                ROOT.parent / 'shared' / 'fixtures' / 'reference'))

torch.set_num_threads(2)


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


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return confident_checkpoint(tmp_path / 'tiny.pt', tiny_spec())


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
