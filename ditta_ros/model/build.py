"""Build an ISS model from a spec and load its weights, with errors that say what to fix.

Families and the checkpoint formats each one reads:

* `segformer` (MiT-B0..B5 + SegFormer MLP decoder):
  - a file in the mmsegmentation/DiTTA layout (`backbone.patch_embed1.*`,
    `decode_head.linear_c4.proj.*`, ...), raw or under 'state_dict' / 'model';
  - a Hugging Face `transformers` folder (`config.json` + `model.safetensors` or
    `pytorch_model.bin`); the variant's shape is read from its config.json.
* `deeplabv3` (resnet50, resnet101, mobilenet_v3_large) and `lraspp` (mobilenet_v3_large):
  torchvision state dicts (`backbone.*`, `classifier.*`; `aux_classifier.*` is ignored).

Checkpoints without the DiTTA add-on (`query_layer`, `key_layer`, `proj_feat`) get it
initialised from `init_seed`, so a run is reproducible whatever the global RNG state.
"""
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

from ditta_ros.model.heads import DiTTAHead, SegFormerHead
from ditta_ros.model.mit import MIT_VARIANTS, MiTConfig, MixVisionTransformer
from ditta_ros.model.segmentor import ModelIdentity, Segmentor, fingerprint

FAMILIES = ('segformer', 'deeplabv3', 'lraspp')
ADDON_PREFIXES = ('query_layer.', 'key_layer.', 'proj_feat.')
# keys that released checkpoints carry but no forward pass uses
IGNORED_KEY_PATTERNS = (r'^decode_head\.conv_seg\.', r'^aux_classifier\.', r'^meta$')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason and what to do about it."""


@dataclass
class ModelSpec:
    """Everything that defines the ISS model. `checkpoint=''` means random weights."""
    family: str = 'segformer'
    variant: str = 'b0'
    checkpoint: str = ''
    num_classes: int = 19
    embed_dim: int = 256
    window: int = 5
    dropout_ratio: float = 0.1
    drop_path_rate: float = 0.1
    init_seed: int = 0
    mit: Optional[Dict[str, Sequence[int]]] = field(default=None)  # custom MiT shape

    def mit_config(self) -> MiTConfig:
        if self.mit is not None:
            return MiTConfig(drop_path_rate=self.drop_path_rate,
                             **{k: tuple(v) for k, v in self.mit.items()})
        if self.variant not in MIT_VARIANTS:
            raise ValueError(f'unknown SegFormer variant {self.variant!r}; '
                             f'choose one of {", ".join(MIT_VARIANTS)}')
        base = MIT_VARIANTS[self.variant]
        return MiTConfig(base.embed_dims, base.depths, base.num_heads, base.sr_ratios,
                         base.mlp_ratio, self.drop_path_rate, base.layer_norm_eps)


def build_model(spec: ModelSpec, device: str = 'cpu') -> Segmentor:
    """Construct the model of `spec`, load its checkpoint (if any), move it to `device`."""
    if spec.family not in FAMILIES:
        raise ValueError(f'unknown model family {spec.family!r}; choose one of {", ".join(FAMILIES)}')
    state, hf_config = (None, None)
    if spec.checkpoint:
        state, hf_config = read_checkpoint(spec.checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        backbone, head = _construct(spec, hf_config)
    model_variant = spec.variant if hf_config is None else 'hf:' + _hf_variant_name(hf_config)
    if state is not None:
        state = _to_internal_layout(spec.family, state, hf_config is not None)
        _load(backbone, head, state, spec)
    identity = ModelIdentity(spec.family, model_variant, head.num_classes, head.embedding_dim,
                             head.window, fingerprint(backbone))
    return Segmentor(backbone, head, identity).to(device)


def read_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """State dict (and Hugging Face config, for a transformers folder) from a path."""
    if not os.path.exists(path):
        raise CheckpointError(f'model checkpoint not found: {path} '
                              '(set the model checkpoint parameter to an existing file or folder)')
    if os.path.isdir(path):
        return _read_hf_folder(path)
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/foreign files
        raise CheckpointError(f'cannot read model checkpoint {path}: {exc.__class__.__name__}: '
                              f'{str(exc).splitlines()[0] if str(exc) else ""} '
                              '(is it a complete PyTorch checkpoint?)') from exc
    state = loaded
    if isinstance(loaded, dict):
        for key in ('state_dict', 'model'):
            if isinstance(loaded.get(key), dict):
                state = loaded[key]
                break
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'{path} is not a model state dict (expected a dict of tensors, '
                              'raw or under "state_dict" / "model")')
    return state, None


def _read_hf_folder(path: str):
    config_path = os.path.join(path, 'config.json')
    if not os.path.isfile(config_path):
        raise CheckpointError(f'{path} is a folder without config.json; a Hugging Face '
                              'SegFormer checkpoint folder needs config.json and its weights')
    with open(config_path) as f:
        config = json.load(f)
    if config.get('model_type') != 'segformer':
        raise CheckpointError(f'{config_path}: model_type is {config.get("model_type")!r}, '
                              'only Hugging Face SegFormer folders are supported')
    weights = os.path.join(path, 'model.safetensors')
    if os.path.isfile(weights):
        from safetensors.torch import load_file
        try:
            return load_file(weights), config
        except Exception as exc:
            raise CheckpointError(f'cannot read {weights}: {exc}') from exc
    weights = os.path.join(path, 'pytorch_model.bin')
    if os.path.isfile(weights):
        state, _ = read_checkpoint(weights)
        return state, config
    raise CheckpointError(f'{path} has no model.safetensors or pytorch_model.bin')


def _hf_variant_name(config: dict) -> str:
    return 'x'.join(str(d) for d in config['hidden_sizes']) + '-' + \
        '.'.join(str(d) for d in config['depths'])


def _construct(spec: ModelSpec, hf_config: Optional[dict]):
    if spec.family == 'segformer':
        if hf_config is not None:
            mit_cfg = MiTConfig(embed_dims=tuple(hf_config['hidden_sizes']),
                                depths=tuple(hf_config['depths']),
                                num_heads=tuple(hf_config['num_attention_heads']),
                                sr_ratios=tuple(hf_config['sr_ratios']),
                                mlp_ratio=int(hf_config['mlp_ratios'][0]),
                                drop_path_rate=spec.drop_path_rate,
                                layer_norm_eps=1e-5)  # transformers uses LayerNorm's default
            embed_dim = int(hf_config['decoder_hidden_size'])
            dropout = float(hf_config.get('classifier_dropout_prob', spec.dropout_ratio))
        else:
            mit_cfg, embed_dim, dropout = spec.mit_config(), spec.embed_dim, spec.dropout_ratio
        backbone = MixVisionTransformer(mit_cfg)
        head = SegFormerHead(backbone.out_channels, embed_dim, spec.num_classes, spec.window,
                             dropout)
        return backbone, head
    from ditta_ros.model.torchvision_heads import build_torchvision
    return build_torchvision(spec.family, spec.variant, spec.num_classes, spec.window)


_HF_RENAMES = (
    (r'^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.', lambda m: f'backbone.patch_embed{int(m[1]) + 1}.norm.'),
    (r'^segformer\.encoder\.patch_embeddings\.(\d)\.', lambda m: f'backbone.patch_embed{int(m[1]) + 1}.'),
    (r'^segformer\.encoder\.layer_norm\.(\d)\.', lambda m: f'backbone.norm{int(m[1]) + 1}.'),
    (r'^segformer\.encoder\.block\.(\d)\.', lambda m: f'backbone.block{int(m[1]) + 1}.'),
    (r'\.attention\.self\.query\.', '.attn.q.'),
    (r'\.attention\.self\.sr\.', '.attn.sr.'),
    (r'\.attention\.self\.layer_norm\.', '.attn.norm.'),
    (r'\.attention\.output\.dense\.', '.attn.proj.'),
    (r'\.layer_norm_1\.', '.norm1.'),
    (r'\.layer_norm_2\.', '.norm2.'),
    (r'\.mlp\.dense1\.', '.mlp.fc1.'),
    (r'\.mlp\.dense2\.', '.mlp.fc2.'),
    (r'^decode_head\.linear_c\.(\d)\.', lambda m: f'decode_head.linear_c{int(m[1]) + 1}.'),
    (r'^decode_head\.linear_fuse\.weight$', 'decode_head.linear_fuse.conv.weight'),
    (r'^decode_head\.batch_norm\.', 'decode_head.linear_fuse.bn.'),
    (r'^decode_head\.classifier\.', 'decode_head.linear_pred.'),
)


def _to_internal_layout(family: str, state: Dict[str, torch.Tensor], is_hf: bool):
    """Rename checkpoint keys to this package's module names."""
    if is_hf:
        renamed = {}
        pending_kv: Dict[str, Dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            kv = re.search(r'\.attention\.self\.(key|value)\.(weight|bias)$', key)
            if kv:  # transformers keeps key and value apart; MiT stacks them as `kv`
                prefix = key[:kv.start()]
                pending_kv.setdefault(f'{prefix}.attention.self.kv.{kv[2]}', {})[kv[1]] = value
                continue
            renamed[_rename(key)] = value
        for key, parts in pending_kv.items():
            renamed[_rename(key.replace('.attention.self.kv.', '.attn.kv.'))] = \
                torch.cat([parts['key'], parts['value']], dim=0)
        return renamed
    if family == 'segformer':
        return dict(state)
    mapped = {}
    for key, value in state.items():
        if key.startswith('backbone.body.') or key.startswith('decode_head.'):
            mapped[key] = value  # already in this package's layout (a saved Segmentor)
        elif key.startswith('backbone.'):
            mapped['backbone.body.' + key[len('backbone.'):]] = value
        elif key.startswith('classifier.'):
            mapped['decode_head.classifier.' + key[len('classifier.'):]] = value
        else:
            mapped[key] = value
    return mapped


def _rename(key: str) -> str:
    for pattern, replacement in _HF_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _load(backbone, head: DiTTAHead, state: Dict[str, torch.Tensor], spec: ModelSpec) -> None:
    """Strict load with readable errors; only the add-on may be missing."""
    expected = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    expected.update({f'decode_head.{k}': v for k, v in head.state_dict().items()})
    usable = {k: v for k, v in state.items()
              if not any(re.search(p, k) for p in IGNORED_KEY_PATTERNS)}
    _check_class_count(state, head, spec)
    unexpected = sorted(set(usable) - set(expected))
    if unexpected:
        raise CheckpointError(
            f'checkpoint {spec.checkpoint} does not fit model {spec.family}/{spec.variant}: '
            f'{len(unexpected)} unknown keys, e.g. {unexpected[:3]} (wrong family or variant?)')
    missing = sorted(set(expected) - set(usable))
    not_addon = [k for k in missing
                 if not k.startswith(tuple('decode_head.' + p for p in ADDON_PREFIXES))]
    if not_addon:
        raise CheckpointError(
            f'checkpoint {spec.checkpoint} lacks {len(not_addon)} weights of model '
            f'{spec.family}/{spec.variant}, e.g. {not_addon[:3]} (wrong family or variant?)')
    for key, value in usable.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f'checkpoint {spec.checkpoint} does not fit model {spec.family}/{spec.variant}: '
                f'{key} has shape {tuple(value.shape)}, the model expects '
                f'{tuple(expected[key].shape)} (wrong variant or decoder width?)')
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in usable.items()
                              if k.startswith('backbone.')})
    head.load_state_dict({k[len('decode_head.'):]: v for k, v in usable.items()
                          if k.startswith('decode_head.')}, strict=False)


def _check_class_count(state, head: DiTTAHead, spec: ModelSpec) -> None:
    for key in ('decode_head.linear_pred.weight', 'decode_head.classifier.4.weight',
                'decode_head.classifier.high_classifier.weight'):
        if key in state and state[key].shape[0] != head.num_classes:
            raise CheckpointError(
                f'class-count mismatch: checkpoint {spec.checkpoint} predicts '
                f'{state[key].shape[0]} classes, the configured label set has '
                f'{head.num_classes} (pick the label set the model was trained on)')
