"""The launch file's arguments: which node parameter each one sets, and their conversion and
checks (here, without ROS `launch`, so that they are tested everywhere; launch/ditta.launch.py
only reads the arguments and hands them over).

A named argument left empty keeps the params file's value; `parameters` takes any node
parameters as a YAML mapping. Every value is converted to its parameter's type and checked
against the node's parameter table, and a bad one raises an error that names the argument.
"""
from typing import Dict, Mapping

import yaml

from ditta_ros.ros.params import PARAMS_BY_NAME, coerce, validate

# launch argument -> the node parameter it sets when given
ARGUMENTS = {
    'camera_topic': 'camera_topics',
    'method': 'method',
    'warmup_seconds': 'warmup.seconds',
    'warmup_frames': 'warmup.frames',
    'preset': 'adapt.preset',
    'target_decoder': 'adapt.target_decoder',
    'device': 'device',
    'teacher': 'teacher.name',
    'model_checkpoint': 'model.checkpoint',
    'model_family': 'model.family',
    'model_variant': 'model.variant',
    'embed_dim': 'model.embed_dim',
    'input_scale': 'model.input_scale',
    'sam2_checkpoint': 'teacher.sam2_checkpoint',
}


class LaunchArgumentError(ValueError):
    """A launch argument the node would refuse; the message names the argument."""


def convert(argument: str, parameter: str, value):
    """The value of launch argument `argument` for node parameter `parameter`, checked."""
    try:
        typed = coerce(PARAMS_BY_NAME[parameter].kind, value)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f'launch argument {argument}:={value!r}: {exc}') from None
    reason = validate(parameter, typed)
    if reason:
        raise LaunchArgumentError(f'launch argument {argument}:={value!r}: {reason}')
    return typed


def node_overrides(named: Mapping[str, str], parameters: str = '') -> Dict[str, object]:
    """Node parameters from the named launch arguments (empty ones skipped) and the YAML mapping
    of the `parameters` argument."""
    overrides = {ARGUMENTS[a]: convert(a, ARGUMENTS[a], v) for a, v in named.items() if v != ''}
    try:
        extra = yaml.safe_load(parameters) if parameters.strip() else {}
    except yaml.YAMLError as exc:
        raise LaunchArgumentError(f'launch argument parameters:={parameters!r}: {exc}') from None
    if not isinstance(extra, dict):
        raise LaunchArgumentError(f'launch argument parameters:={parameters!r}: expected a YAML '
                                  'mapping such as "{model.variant: b0, fusion.tau: 0.5}"')
    for parameter, value in extra.items():
        if parameter not in PARAMS_BY_NAME:
            raise LaunchArgumentError(f'launch argument parameters: {parameter!r} is not a '
                                      'parameter of the node (ros2 param list /ditta)')
        overrides[parameter] = convert(f'parameters {parameter}', parameter, value)
    return overrides


def describe(argument: str) -> str:
    """--show-args text of a named argument: its parameter's description and choices."""
    spec = PARAMS_BY_NAME[ARGUMENTS[argument]]
    choices = f' One of: {", ".join(spec.choices)}.' if spec.choices else ''
    return f'{spec.name}: {spec.description}{choices} Empty: the params file\'s value.'
