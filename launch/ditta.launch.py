"""Launch the ditta_ros node.

    ros2 launch ditta_ros ditta.launch.py camera_topic:=/camera/front/image_raw \\
        model_checkpoint:=/path/segformer.pth sam2_checkpoint:=/path/sam2.1_hiera_large.pt

Every named argument left empty keeps the value of the params file (default: the package's
config/ditta.yaml); `parameters:="{name: value, ...}"` sets any other node parameter. Values are
checked before the node starts, a bad one is reported with the argument's name
(ditta_ros/ros/launch_arguments.py). When the node exits with an error (a missing checkpoint,
...) the launch ends with it, with a non-zero status. `--show-args` lists the arguments.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ditta_ros.ros.launch_arguments import ARGUMENTS, describe, node_overrides


def _end_with_the_node(event, context):
    """A node that died ends the launch, with its failure as the launch's."""
    if event.returncode:
        raise RuntimeError(f'ditta_node exited with status {event.returncode} (its log above '
                           'says why)')


def _node(context):
    overrides = node_overrides(
        {a: LaunchConfiguration(a).perform(context) for a in ARGUMENTS},
        LaunchConfiguration('parameters').perform(context))
    overrides['use_sim_time'] = LaunchConfiguration('use_sim_time').perform(context) == 'true'
    # launch_ros opens a --ros-args block of its own for the name, remaps and parameters: the
    # log level adds a second one (rcl reads both), so only when it is not the default
    level = LaunchConfiguration('log_level').perform(context)
    managed = LaunchConfiguration('lifecycle').perform(context) == 'true'
    node = Node(
        package='ditta_ros', executable='ditta_lifecycle_node' if managed else 'ditta_node',
        name='ditta',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), overrides],
        ros_arguments=['--log-level', level] if level != 'info' else [])
    return [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                     on_exit=_end_with_the_node))]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('ditta_ros'), 'config',
                                  'ditta.yaml')
    arguments = [
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay with --clock)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug | info | warn | error'),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='true: run ditta_lifecycle_node, a managed node (with '
                                          'parameters:="{autostart: false}" it waits for its '
                                          'transitions)'),
        DeclareLaunchArgument('parameters', default_value='',
                              description='Any node parameters as a YAML mapping, e.g. '
                                          '"{model.allow_random_weights: true, fusion.tau: 0.5}"'),
    ] + [DeclareLaunchArgument(a, default_value='', description=describe(a)) for a in ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
