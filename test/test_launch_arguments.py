"""The launch file's argument conversion and checks (ditta_ros/ros/launch_arguments.py)."""
import pytest

from ditta_ros.ros.launch_arguments import (ARGUMENTS, LaunchArgumentError, describe,
                                            node_overrides)
from ditta_ros.ros.params import PARAMS_BY_NAME, parse_assignment, validate


def test_named_arguments_become_typed_node_parameters_and_empty_ones_are_skipped():
    overrides = node_overrides({'camera_topic': '/a/image_raw,/b/image_raw', 'warmup_frames': '3',
                                'warmup_seconds': '2', 'input_scale': '512,256',
                                'model_variant': 'b0', 'device': ''})
    assert overrides == {'camera_topics': ['/a/image_raw', '/b/image_raw'], 'warmup.frames': 3,
                         'warmup.seconds': 2.0, 'model.input_scale': [512, 256],
                         'model.variant': 'b0'}


def test_the_parameters_argument_sets_any_node_parameter():
    overrides = node_overrides({}, '{model.allow_random_weights: true, fusion.tau: 0.5, '
                                   'model.input_scale: [256, 128], adapt.passes: 2}')
    assert overrides == {'model.allow_random_weights': True, 'fusion.tau': 0.5,
                         'model.input_scale': [256, 128], 'adapt.passes': 2}


@pytest.mark.parametrize('named, parameters, named_in_error', [
    ({'warmup_frames': 'three'}, '', 'warmup_frames'),
    ({'warmup_frames': '-4'}, '', 'warmup_frames'),
    ({'device': 'tpu'}, '', 'device'),
    ({'input_scale': '512'}, '', 'input_scale'),
    ({}, '{model.allow_random_weight: true}', 'model.allow_random_weight'),
    ({}, '{fusion.tau: 3}', 'fusion.tau'),
    ({}, '{adapt.passes: true}', 'adapt.passes'),
    ({}, '[1, 2]', 'parameters'),
    ({}, '{a: [', 'parameters'),
])
def test_a_bad_value_is_refused_with_the_arguments_name(named, parameters, named_in_error):
    with pytest.raises(LaunchArgumentError, match='launch argument') as error:
        node_overrides(named, parameters)
    assert named_in_error in str(error.value)


def test_every_named_argument_sets_a_node_parameter_and_describes_it():
    for argument, parameter in ARGUMENTS.items():
        assert parameter in PARAMS_BY_NAME
        assert describe(argument).startswith(parameter)


def test_numbers_in_exponent_notation_are_numbers_everywhere_text_sets_a_parameter():
    """YAML 1.1 reads 1e-3 as a string; a learning rate written so is still a float, from a
    launch argument, the `parameters` mapping and a tool's -p alike."""
    assert node_overrides({'warmup_seconds': '5e0'}, '{adapt.lr: 1e-3}') == \
        {'warmup.seconds': 5.0, 'adapt.lr': 0.001}
    assert parse_assignment('adapt.lr:=1e-3') == ('adapt.lr', 0.001)
    assert parse_assignment('model.input_scale:=[512, 256]') == ('model.input_scale', [512, 256])
    with pytest.raises(ValueError, match='not a node parameter'):
        parse_assignment('adapt.learning_rate:=1e-3')
    with pytest.raises(ValueError, match='expected a float'):
        parse_assignment('adapt.lr:=fast')
    assert validate('adapt.lr', '1e-3') == "adapt.lr='1e-3' is not a float"
