"""Launch the ditta_ros node.

    ros2 launch ditta_ros ditta.launch.py camera_topic:=/camera/front/image_raw \\
        model_checkpoint:=/path/segformer.pth sam2_checkpoint:=/path/sam2.1_hiera_large.pt

Every argument left empty keeps the value of the params file (default: the package's
config/ditta.yaml); `ros2 launch ditta_ros ditta.launch.py --show-args` lists them.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# launch argument -> (parameter, type) it overrides when given
OVERRIDES = {
    'camera_topic': ('camera_topics', 'topic_list'),
    'warmup_seconds': ('warmup.seconds', float),
    'warmup_frames': ('warmup.frames', int),
    'target_decoder': ('adapt.target_decoder', str),
    'device': ('device', str),
    'method': ('method', str),
    'teacher': ('teacher.name', str),
    'model_checkpoint': ('model.checkpoint', str),
    'sam2_checkpoint': ('teacher.sam2_checkpoint', str),
}


def _node(context):
    overrides = {}
    for argument, (parameter, kind) in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context)
        if value == '':
            continue
        overrides[parameter] = [t for t in value.split(',') if t] if kind == 'topic_list' \
            else kind(value)
    overrides['use_sim_time'] = LaunchConfiguration('use_sim_time').perform(context) == 'true'
    return [Node(
        package='ditta_ros', executable='ditta_node', name='ditta',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), overrides],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')])]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('ditta_ros'), 'config',
                                  'ditta.yaml')
    arguments = [
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay with --clock)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug | info | warn | error'),
        DeclareLaunchArgument('camera_topic', default_value='',
                              description='Camera image topic(s), comma separated '
                                          '(empty: camera_topics of the params file)'),
        DeclareLaunchArgument('warmup_seconds', default_value='',
                              description='Warm-up duration in stream seconds'),
        DeclareLaunchArgument('warmup_frames', default_value='',
                              description='Warm-up length in frames'),
        DeclareLaunchArgument('target_decoder', default_value='',
                              description='decoder | cls_head | addon'),
        DeclareLaunchArgument('device', default_value='', description='auto | cuda | cpu'),
        DeclareLaunchArgument('method', default_value='',
                              description='none | ditta | tent | cotta | auxadapt | sam2_refine'),
        DeclareLaunchArgument('teacher', default_value='', description='sam2 | flow'),
        DeclareLaunchArgument('model_checkpoint', default_value='',
                              description='Segmentation model checkpoint'),
        DeclareLaunchArgument('sam2_checkpoint', default_value='',
                              description='SAM2 checkpoint (teacher sam2)'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
