"""The node's parameters: descriptions, ranges and choices here; defaults in config/ditta.yaml.

Each parameter says when a change takes effect: `now`, at the `next` warm-up/adaptation, or
only after a `restart` of the node (those are read-only at run time). Values outside a range
or choice list are rejected with the reason, at start and when set at run time.
"""
import array
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from ditta_ros.adapt.presets import DISTILL_LOSSES, LABEL_RULES, NORM_STATS, PRESET_NAMES, \
    SERVED_HEADS
from ditta_ros.labels import config_dir
from ditta_ros.model.build import FAMILIES
from ditta_ros.model.heads import TARGET_DECODERS
from ditta_ros.predictor import PRECISIONS
from ditta_ros.ros.camera import CONFIDENCE_ENCODINGS
from ditta_ros.stream.methods import METHOD_NAMES, method_help
from ditta_ros.teacher.factory import TEACHERS

NOW, NEXT, RESTART = 'now', 'next adaptation', 'restart'


@dataclass(frozen=True)
class ParamDef:
    name: str
    kind: str                                  # int | float | str | bool | str[] | int[]
    description: str
    when: str = RESTART
    bounds: Optional[Tuple[float, float]] = None
    choices: Optional[Sequence[str]] = None
    length: Optional[int] = None               # exact length of an array


PARAMS: List[ParamDef] = [
    ParamDef('camera_topics', 'str[]', 'Image topics, one camera stream each; outputs go to '
             '~/<camera>/..., <camera> being the topic without a trailing image_raw/image.'),
    ParamDef('input.type', 'str', 'raw: sensor_msgs/Image on the topic; compressed: '
             'sensor_msgs/CompressedImage (jpeg/png) on <topic>/compressed.',
             choices=('raw', 'compressed')),
    ParamDef('input.qos', 'str', 'Subscription QoS: sensor_data (best effort, like '
             'SensorDataQoS) or reliable.', choices=('sensor_data', 'reliable')),
    ParamDef('input.qos_depth', 'int', 'Subscription queue depth.', bounds=(1, 100)),
    ParamDef('input.max_image_pixels', 'int', 'Frames with more pixels are rejected.', NOW,
             bounds=(4, 1 << 30)),
    ParamDef('output.color_mask', 'bool', 'Publish ~/<camera>/color_mask (rgb8).', NOW),
    ParamDef('output.confidence', 'bool', 'Publish ~/<camera>/confidence (32FC1 reliability '
             'map, 0..1).', NOW),
    ParamDef('output.confidence_encoding', 'str', 'Encoding of ~/<camera>/confidence: 32FC1 '
             '(0..1) or mono8 (0..255, what Nav2\'s semantic_segmentation_layer reads).', NOW,
             choices=CONFIDENCE_ENCODINGS),
    ParamDef('output.status_rate_hz', 'float', 'Rate of ~/<camera>/status and /diagnostics.',
             bounds=(0.1, 100.0)),
    ParamDef('method', 'str', method_help(), choices=METHOD_NAMES),
    ParamDef('autostart', 'bool', 'ditta_lifecycle_node only: configure and activate at start '
             '(false: wait for the lifecycle transitions, e.g. from a lifecycle manager).'),
    ParamDef('start', 'str', 'immediate: the warm-up starts with the first frame; '
             'on_service: it waits for ~/start_adaptation.', choices=('immediate', 'on_service')),
    ParamDef('warmup.frames', 'int', 'Warm-up frames to keep (0: warmup.seconds decides).', NEXT,
             bounds=(0, 10000)),
    ParamDef('warmup.seconds', 'float', 'Stream seconds the warm-up must cover (0: '
             'warmup.frames decides); stamps, so bag replays and sim time work.', NEXT,
             bounds=(0.0, 3600.0)),
    ParamDef('warmup.stride', 'int', 'Keep every n-th frame during the warm-up.', NEXT,
             bounds=(1, 1000)),
    ParamDef('warmup.max_frames', 'int', 'Cap on kept warm-up frames (memory).', NEXT,
             bounds=(1, 10000)),
    ParamDef('warmup.publish_source_masks', 'bool', 'Publish the source model\'s masks during '
             'the warm-up (false: nothing until adapted).', NEXT),
    ParamDef('model.family', 'str', 'Model family.', choices=FAMILIES),
    ParamDef('model.variant', 'str', 'segformer: b0..b5; deeplabv3: resnet50, resnet101, '
             'mobilenet_v3_large; lraspp: mobilenet_v3_large.'),
    ParamDef('model.checkpoint', 'str', 'ISS weights: a .pth in the mmseg/DiTTA or torchvision '
             'layout, or a Hugging Face transformers SegFormer folder.'),
    ParamDef('model.label_set', 'str', 'Classes of the model: a name in config/labels or a '
             'YAML path.'),
    ParamDef('model.embed_dim', 'int', 'SegFormer decoder width D.', bounds=(1, 4096)),
    ParamDef('model.window', 'int', 'Add-on attention radius r.', bounds=(0, 32)),
    ParamDef('model.input_scale', 'int[]', 'Network input: frames resized to fit (long side, '
             'short side), keeping aspect.', length=2),
    ParamDef('model.size_divisor', 'int', 'Input sides rounded up to a multiple of this.',
             bounds=(1, 128)),
    ParamDef('model.allow_random_weights', 'bool', 'Run without a checkpoint (random weights; '
             'for tests and benchmarks only).'),
    ParamDef('teacher.name', 'str', 'Stage-B teacher: sam2 (the paper\'s; needs a checkpoint) '
             'or flow (dense optical flow; no weights).', choices=TEACHERS),
    ParamDef('teacher.sam2_config', 'str', 'SAM2 config name inside the sam2 package.'),
    ParamDef('teacher.sam2_checkpoint', 'str', 'SAM2 checkpoint file.'),
    ParamDef('teacher.sam2_overrides', 'str[]', 'Extra hydra overrides for the SAM2 model.'),
    ParamDef('teacher.prompt_threshold', 'float', 'Peak reliability a class needs to be '
             'prompted.', NEXT, bounds=(0.0, 1.0)),
    ParamDef('teacher.max_tracks', 'int', 'Most objects prompted in a warm-up.', NEXT,
             bounds=(1, 1000)),
    ParamDef('teacher.flow_max_side', 'int', 'Flow teacher: long side the frames are '
             'downscaled to for optical flow.', bounds=(32, 8192)),
    ParamDef('adapt.target_decoder', 'str', 'Parameters that adapt: decoder (whole head with '
             'add-on), cls_head (final classifier), addon (add-on only).', NEXT,
             choices=TARGET_DECODERS),
    ParamDef('adapt.preset', 'str', 'Stage-C recipe: robust (the default: BatchNorm '
             'statistics from the warm-up, class-balanced distillation, confident source labels '
             'kept, lower learning rate, label-free choice of what serves) or reference (the authors\' implementation as published). The adapt.* '
             'parameters below that say "preset" take the preset\'s value.', NEXT,
             choices=PRESET_NAMES),
    ParamDef('adapt.lr', 'float', 'AdamW learning rate (0: the preset\'s).', NEXT,
             bounds=(0.0, 1.0)),
    ParamDef('adapt.addon_lr', 'float', 'Learning rate of the add-on\'s query/key MLPs, which '
             'the source model does not have and which start untrained (0: the preset\'s; '
             'the reference preset trains them at adapt.lr).', NEXT, bounds=(0.0, 1.0)),
    ParamDef('adapt.passes', 'int', 'Passes over the warm-up frames (0: the preset\'s).', NEXT,
             bounds=(0, 100)),
    ParamDef('adapt.max_steps', 'int', 'Most adaptation steps in all, whatever the warm-up\'s '
             'length (-1: the preset\'s; 0: no cap, passes x warm-up frames).', NEXT,
             bounds=(-1, 100000)),
    ParamDef('adapt.distill_loss', 'str', 'Distillation loss: reference (softmax applied twice, '
             'mean over all pixels), balanced (cross-entropy, class-balanced mean over labelled '
             'pixels) or preset.', NEXT, choices=('preset',) + DISTILL_LOSSES),
    ParamDef('adapt.label_rule', 'str', 'Where the teacher overrides the source label: override '
             '(everywhere it has a class), keep_confident (not where the source model is more '
             'reliable than adapt.keep_reliability) or preset.', NEXT,
             choices=('preset',) + LABEL_RULES),
    ParamDef('adapt.keep_reliability', 'float', 'keep_confident: source labels at least this '
             'reliable are kept (0: the preset\'s).', NEXT, bounds=(0.0, 1.0)),
    ParamDef('adapt.norm_stats', 'str', 'Decoder BatchNorm statistics: batch (re-estimated '
             'from each 2-frame clip while adapting, the reference), source (kept), warmup '
             '(pooled over the whole warm-up, blended with the source\'s by adapt.norm_prior; '
             'stage A, the targets and stage C then use them) or preset.', NEXT,
             choices=('preset',) + NORM_STATS),
    ParamDef('adapt.norm_prior', 'float', 'norm_stats warmup: weight of the source '
             'statistics, in frames, against the warm-up\'s frames (0: the warm-up\'s alone; -1: '
             'the preset\'s).', NEXT, bounds=(-1.0, 1e6)),
    ParamDef('adapt.holdout_frames', 'int', 'Warm-up frames (the last ones with a target) kept '
             'out of training for the label-free choice (-1: the preset\'s).', NEXT,
             bounds=(-1, 100)),
    ParamDef('adapt.choose', 'str', 'Label-free choice of what serves after an adaptation: '
             'the adapted, statistics-only or source decoder, whichever agrees best with the '
             'teacher\'s targets on the held-out warm-up frames. on, off or preset (robust: on; '
             'reference: off).', NEXT, choices=('preset', 'on', 'off')),
    ParamDef('adapt.serve', 'str', 'Adapted head that serves: live, momentum (EMA) or preset.',
             NEXT, choices=('preset',) + SERVED_HEADS),
    ParamDef('adapt.momentum', 'float', 'EMA rate of the momentum decoder.', NEXT,
             bounds=(0.0, 1.0)),
    ParamDef('adapt.harm_check', 'str', 'Do-no-harm check before an adapted decoder serves: '
             'classes the source model predicts confidently on the warm-up frames must keep '
             'adapt.harm_min_kept of those pixels, else the decoder is blended back towards the '
             'source (repaired) or refused; the status says which and why. on, off or preset '
             '(robust: on; reference: off).', NEXT, choices=('preset', 'on', 'off')),
    ParamDef('adapt.harm_min_kept', 'float', 'Share of its confident warm-up pixels a class '
             'must keep in the adapted predictions.', NEXT, bounds=(0.0, 1.0)),
    ParamDef('adapt.continuous', 'bool', 'tent, cotta, auxadapt: adapt on every frame (true) '
             'or on the warm-up frames only, then freeze (false).', NEXT),
    ParamDef('adapt.max_memory_mb', 'float', 'Memory budget of an adaptation (CUDA: peak '
             'allocated; CPU: process RSS); exceeding it fails the adaptation. 0: none.', NEXT,
             bounds=(0.0, 1e7)),
    ParamDef('adapt.seed', 'int', 'Seed of the adaptation RNG (dropout); -1: unseeded.', NEXT,
             bounds=(-1, 2 ** 31 - 1)),
    ParamDef('fusion.tau', 'float', 'Plain-branch reliability below which the add-on branch '
             'is fused in (0: never, the adapted plain branch alone; -1: the preset\'s, robust 0, '
             'reference 0.8).', NOW, bounds=(-1.0, 1.0)),
    ParamDef('fusion.hold', 'float', 'Temporal hold: the class each cell of the decoder grid '
             'showed on the previous frame gets this much added to its logit, so it changes '
             'only for a class e^hold times as probable (0: none; -1: the preset\'s for method '
             'ditta, robust 2, reference 0, and none for the other methods).', NOW,
             bounds=(-1.0, 50.0)),
    ParamDef('device', 'str', 'auto (CUDA if available), cuda or cpu.',
             choices=('auto', 'cuda', 'cpu')),
    ParamDef('precision', 'str', 'Inference autocast of the backbone, decoder and add-on: '
             'fp32, fp16 or bf16 (bf16 pays on GPUs and on CPUs with AMX).',
             choices=tuple(PRECISIONS)),
    ParamDef('decoder.save_path', 'str', 'Where ~/save_decoder writes (empty: '
             '~/.ros/ditta_ros/<camera>.pt; with several cameras <camera> is appended).', NOW),
    ParamDef('decoder.load_path', 'str', 'Start from this saved adapted decoder.'),
    ParamDef('decoder.autosave', 'bool', 'Save the decoder after each adaptation.', NOW),
]
PARAMS_BY_NAME: Dict[str, ParamDef] = {p.name: p for p in PARAMS}


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def load_defaults(path: Optional[str] = None) -> Dict[str, Any]:
    """Flat {dotted name: default} from config/ditta.yaml (the single place of defaults)."""
    path = path or os.path.join(config_dir(), 'ditta.yaml')
    with open(path) as f:
        data = yaml.safe_load(f)
    section = next(iter(data.values()))['ros__parameters']
    defaults = _flatten(section)
    missing = sorted(set(PARAMS_BY_NAME) - set(defaults))
    if missing:
        raise ValueError(f'{path} lacks defaults for {missing}')
    return {name: defaults[name] for name in PARAMS_BY_NAME}


def load_parameters(files: Sequence[str] = (), overrides: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
    """Defaults, then each params file (node YAML layout), then `overrides`; validated.
    For tools that run the streams without the node, with the node's configuration."""
    values = load_defaults()
    for path in files:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        for section in data.values():
            if isinstance(section, dict) and 'ros__parameters' in section:
                values.update({k: v for k, v in _flatten(section['ros__parameters']).items()
                               if k in PARAMS_BY_NAME})
    values.update(overrides or {})
    problems = [r for r in (validate(k, v) for k, v in values.items()) if r]
    if problems:
        raise ValueError('invalid parameters: ' + '; '.join(problems))
    return values


_PYTHON_TYPES = {'int': int, 'float': float, 'bool': bool, 'str': str}


def _is_kind(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return kind == 'bool'
    if kind == 'float' and isinstance(value, int):
        return True
    if kind.endswith('[]'):  # rclpy hands integer arrays over as array.array
        return isinstance(value, (list, tuple, array.array))
    return isinstance(value, _PYTHON_TYPES[kind])


def coerce(kind: str, value: Any) -> Any:
    """`value` (text from a command line or a launch file, or a YAML value) as a parameter of
    `kind`; ValueError if it is not one. Numbers are read as Python reads them: YAML 1.1 leaves
    `1e-3` a string, and a learning rate written so must still be a float."""
    if isinstance(value, str) and kind.endswith('[]'):
        items = yaml.safe_load(value) if value.strip().startswith('[') else value.split(',')
        value = [item.strip() if isinstance(item, str) else item for item in items if item != '']
    elif isinstance(value, str) and kind == 'bool':
        value = yaml.safe_load(value)
    if isinstance(value, str) and kind in ('int', 'float'):
        try:
            value = int(value) if kind == 'int' else float(value)
        except ValueError:
            raise ValueError(f'expected a {kind}, got {value!r}') from None
    if kind == 'float' and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind == 'int[]':
        value = [int(v) for v in value]
    if not _is_kind(kind, value):
        raise ValueError(f'expected a {kind}, got {value!r}')
    return value


def parse_assignment(item: str) -> Tuple[str, Any]:
    """`NAME:=VALUE` (ditta-eval/ditta-quality -p, rows) -> (name, value of the parameter's
    type); ValueError naming what is wrong."""
    if ':=' not in item:
        raise ValueError(f'expected NAME:=VALUE, got {item!r}')
    name, text = (part.strip() for part in item.split(':=', 1))
    if name not in PARAMS_BY_NAME:
        raise ValueError(f'{name!r} is not a node parameter')
    try:
        return name, coerce(PARAMS_BY_NAME[name].kind, text)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f'{name}:={text!r}: {exc}') from None


def validate(name: str, value: Any) -> Optional[str]:
    """The reason `value` is not acceptable for parameter `name`, or None if it is."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return None
    if not _is_kind(spec.kind, value):
        return f'{name}={value!r} is not a {spec.kind}'
    if spec.choices is not None and value not in spec.choices:
        return f'{name}={value!r} is not one of {", ".join(spec.choices)}'
    if spec.bounds is not None and not (spec.bounds[0] <= value <= spec.bounds[1]):
        return f'{name}={value!r} is outside [{spec.bounds[0]}, {spec.bounds[1]}]'
    if spec.length is not None and len(value) != spec.length:
        return f'{name} needs {spec.length} values, got {len(value)}'
    if spec.kind == 'int[]' and any(v <= 0 for v in value):
        return f'{name} values must be positive, got {list(value)}'
    if name == 'camera_topics':
        if not value or any(not t or not t.strip() for t in value):
            return 'camera_topics needs at least one non-empty topic'
        if len(set(value)) != len(value):
            return f'camera_topics has duplicates: {list(value)}'
    return None


def camera_name(topic: str) -> str:
    """Output namespace of a camera topic: the topic without a trailing image-like name."""
    parts = [p for p in topic.strip('/').split('/') if p]
    while parts and parts[-1] in ('image_raw', 'image', 'image_rect', 'image_rect_color',
                                  'image_color', 'compressed'):
        parts.pop()
    return '/'.join(parts) or 'camera'


def markdown_table() -> str:
    """The README's parameter table, from PARAMS and config/ditta.yaml (the README holds a copy
    that test_docs compares with this: `python -m ditta_ros.ros.params` prints it)."""
    defaults = load_defaults()
    rows = ['| parameter | default | range / choices | when | description |',
            '|---|---|---|---|---|']
    for spec in PARAMS:
        value = defaults[spec.name]
        text = repr(value) if not isinstance(value, str) else (value or "''")
        if spec.choices:
            allowed = ' \\| '.join(spec.choices)
        else:
            allowed = f'{spec.bounds[0]:g} .. {spec.bounds[1]:g}' if spec.bounds else ''
        rows.append(f'| `{spec.name}` | `{text}` | {allowed} | {spec.when} | {spec.description} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(markdown_table())
