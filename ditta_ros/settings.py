"""From the flat parameter dict (config/ditta.yaml layout) to the objects the streams need.

The node and the offline tools (ditta-eval --offline, ditta-bench) build their model, stream config and
teacher from the same parameters through these functions, so both run the same configuration.
"""
from typing import Any, Dict

import torch

from ditta_ros.adapt.ditta import AdaptConfig
from ditta_ros.adapt.guard import HarmCheck
from ditta_ros.adapt.presets import PRESETS
from ditta_ros.labels import LabelSet
from ditta_ros.model.build import ModelSpec
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.config import StreamConfig, WarmupConfig
from ditta_ros.teacher.factory import TeacherSpec
from ditta_ros.teacher.targets import TargetConfig

Params = Dict[str, Any]


class SettingsError(ValueError):
    """A configuration that cannot run; the message says what to change."""


def resolve_device(choice: str) -> str:
    if choice == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if choice == 'cuda' and not torch.cuda.is_available():
        raise SettingsError(f'device "cuda" requested but CUDA is not available (torch '
                            f'{torch.__version__}, CUDA build {torch.version.cuda or "none"}); '
                            'set device to auto or cpu')
    return choice


def model_spec(p: Params, labels: LabelSet) -> ModelSpec:
    if not p['model.checkpoint'] and not p['model.allow_random_weights']:
        raise SettingsError('model.checkpoint is empty: set it to your segmentation checkpoint '
                            '(or model.allow_random_weights:=true for a test run)')
    return ModelSpec(family=p['model.family'], variant=p['model.variant'],
                     checkpoint=p['model.checkpoint'], num_classes=labels.num_classes,
                     embed_dim=p['model.embed_dim'], window=p['model.window'])


def input_spec(p: Params) -> InputSpec:
    return InputSpec(img_scale=tuple(p['model.input_scale']), size_divisor=p['model.size_divisor'])


def stream_config(p: Params) -> StreamConfig:
    return StreamConfig(
        method=p['method'],
        warmup=WarmupConfig(p['warmup.frames'], p['warmup.seconds'], p['warmup.stride'],
                            p['warmup.max_frames']),
        start_immediately=p['start'] == 'immediate',
        publish_during_warmup=p['warmup.publish_source_masks'],
        tau=fusion_tau(p),
        hold=fusion_hold(p),
        targets=TargetConfig(max_track=p['teacher.max_tracks'],
                             frame0_threshold=p['teacher.prompt_threshold'],
                             later_threshold=p['teacher.prompt_threshold']),
        adapt=adapt_config(p),
        harm_check=HarmCheck(enabled=harm_check_enabled(p), min_kept=p['adapt.harm_min_kept']),
        precision=p['precision'],
        seed=p['adapt.seed'] if p['adapt.seed'] >= 0 else None,
        continuous=p['adapt.continuous'],
        peer_lr=p['adapt.lr'] or StreamConfig.peer_lr)


def fusion_tau(p: Params) -> float:
    """fusion.tau, or the preset's where it is negative."""
    return p['fusion.tau'] if p['fusion.tau'] >= 0 else PRESETS[p['adapt.preset']]['fusion_tau']


def fusion_hold(p: Params) -> float:
    """fusion.hold, or where it is negative the preset's for method ditta and none for the
    others (the source model and the baselines stay frame by frame unless asked)."""
    if p['fusion.hold'] >= 0:
        return p['fusion.hold']
    return PRESETS[p['adapt.preset']]['fusion_hold'] if p['method'] == 'ditta' else 0.0


def harm_check_enabled(p: Params) -> bool:
    """adapt.harm_check: on, off, or the preset's (robust on; the reference has none)."""
    if p['adapt.harm_check'] == 'preset':
        return PRESETS[p['adapt.preset']]['harm_check']
    return p['adapt.harm_check'] == 'on'


def adapt_config(p: Params) -> AdaptConfig:
    """The preset's recipe, with every adapt.* parameter that names its own value on top."""
    own = {'lr': p['adapt.lr'] > 0, 'addon_lr': p['adapt.addon_lr'] > 0,
           'passes': p['adapt.passes'] > 0, 'max_steps': p['adapt.max_steps'] >= 0,
           'keep_reliability': p['adapt.keep_reliability'] > 0,
           'distill_loss': p['adapt.distill_loss'] != 'preset',
           'label_rule': p['adapt.label_rule'] != 'preset',
           'norm_stats': p['adapt.norm_stats'] != 'preset',
           'serve': p['adapt.serve'] != 'preset',
           'norm_prior': p['adapt.norm_prior'] >= 0,
           'holdout_frames': p['adapt.holdout_frames'] >= 0}
    changes = {field: p[f'adapt.{field}'] for field, set_ in own.items() if set_}
    if p['adapt.choose'] != 'preset':
        changes['choose'] = p['adapt.choose'] == 'on'
    return AdaptConfig.preset(p['adapt.preset'], target_decoder=p['adapt.target_decoder'],
                              momentum=p['adapt.momentum'],
                              max_memory_mb=p['adapt.max_memory_mb'], **changes)


def teacher_spec(p: Params) -> TeacherSpec:
    return TeacherSpec(p['teacher.name'], p['teacher.sam2_config'], p['teacher.sam2_checkpoint'],
                       tuple(p['teacher.sam2_overrides']), p['teacher.flow_max_side'])
