"""`ros2 launch ditta_ros ditta.launch.py` as a user runs it (where the ROS 2 command line is
installed: it comes with a ROS 2 distribution, not with the PyPI wheels)."""
import os
import shutil
import subprocess

import pytest

from ditta_ros.tools.replay import dds_environment

ROS2 = shutil.which('ros2')
pytestmark = [pytest.mark.dds, pytest.mark.skipif(
    ROS2 is None or shutil.which('ditta_node') is None,
    reason='the ros2 command (ros2cli, ros2launch: they come with a ROS 2 distribution) or the '
           'built package is not installed')]


def ros2_launch(*arguments, timeout=60):
    env = dict(os.environ, **dds_environment())
    return subprocess.run([ROS2, 'launch', 'ditta_ros', 'ditta.launch.py', *arguments],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_show_args_lists_the_model_arguments_and_the_parameters_passthrough():
    result = ros2_launch('--show-args')
    assert result.returncode == 0, result.stderr
    for argument in ("'model_variant'", "'input_scale'", "'parameters'", "'camera_topic'"):
        assert argument in result.stdout


def test_a_node_that_dies_at_startup_fails_the_launch(tmp_path):
    result = ros2_launch(f'model_checkpoint:={tmp_path / "missing.pt"}')
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert 'startup failed' in output and 'ditta_node exited with status 1' in output


def test_a_bad_argument_is_named_and_no_node_starts():
    result = ros2_launch('warmup_frames:=many')
    output = result.stdout + result.stderr
    assert result.returncode != 0 and 'warmup_frames' in output, output
    assert 'ready:' not in output
