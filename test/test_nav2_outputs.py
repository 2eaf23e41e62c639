"""What Nav2's semantic_segmentation_layer reads, over real DDS: the mono8 class mask, a mono8
confidence image (0-255) and vision_msgs/LabelInfo (reliable, transient local).

vision_msgs comes with every ROS 2 distribution but not with the PyPI wheels; here a message
package of that name is generated from the published field definitions of LabelInfo and
VisionClass, built with the environment's rosidl, and put beside the node."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import NODE_CAMERA, NODE_TOPIC, node_params, send_frames, synthetic_clip
from ditta_ros.tools.replay import NodeProcess, node_executable, wait_matched, wait_until

pytestmark = [pytest.mark.dds, pytest.mark.skipif(node_executable() is None,
                                reason='ditta_node not built (run scripts/setup.sh)')]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MESSAGES = {
    'VisionClass.msg': 'uint16 class_id\nstring class_name\n',
    'LabelInfo.msg': 'std_msgs/Header header\nVisionClass[] class_map\nfloat32 threshold\n',
}
PACKAGE_XML = '''<?xml version="1.0"?>
<package format="3">
  <name>vision_msgs</name><version>0.0.0</version><description>test copy</description>
  <maintainer email="test@example.invalid">test</maintainer><license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>std_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
'''
CMAKE = '''cmake_minimum_required(VERSION 3.20)
project(vision_msgs NONE)
enable_language(C CXX)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(std_msgs REQUIRED)
find_package(Python3 REQUIRED COMPONENTS Interpreter)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/VisionClass.msg" "msg/LabelInfo.msg"
  DEPENDENCIES std_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
'''
LISTENER = '''
import json, sys, time
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import LabelInfo
rclpy.init()
node = rclpy.create_node('label_info_listener')
got = []
qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
node.create_subscription(LabelInfo, sys.argv[1], got.append, qos)
deadline = time.monotonic() + 30
while not got and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps([[c.class_id, c.class_name] for c in got[0].class_map] if got else None))
'''


@pytest.fixture(scope='module')
def vision_msgs_env(tmp_path_factory):
    """Environment in which `vision_msgs` imports: the generated package, built and installed."""
    base = tmp_path_factory.mktemp('vision_msgs')
    src, build, prefix = base / 'src', base / 'build', base / 'install'
    (src / 'msg').mkdir(parents=True)
    for name, text in MESSAGES.items():
        (src / 'msg' / name).write_text(text)
    (src / 'package.xml').write_text(PACKAGE_XML)
    (src / 'CMakeLists.txt').write_text(CMAKE)
    venv = os.environ.get('DITTA_VENV', sys.prefix)
    env = dict(os.environ, AMENT_PREFIX_PATH=venv, CMAKE_PREFIX_PATH=venv)
    for command in (['cmake', '-S', str(src), '-B', str(build), '-Wno-dev',
                     f'-DCMAKE_INSTALL_PREFIX={prefix}', f'-DPython3_EXECUTABLE={sys.executable}',
                     '-DBUILD_TESTING=OFF',
                     f'-DCMAKE_PROJECT_INCLUDE={ROOT}/cmake/pypi_wheels_fixup.cmake'],
                    ['cmake', '--build', str(build), '-j', '2'],
                    ['cmake', '--install', str(build)]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = next(prefix.glob('lib/python3*/site-packages'))
    return {'PYTHONPATH': os.pathsep.join([str(site), os.environ.get('PYTHONPATH', '')]),
            'LD_LIBRARY_PATH': os.pathsep.join([str(prefix / 'lib'),
                                                os.environ.get('LD_LIBRARY_PATH', '')]),
            'AMENT_PREFIX_PATH': os.pathsep.join([os.environ['AMENT_PREFIX_PATH'], str(prefix)])}


def test_label_info_and_mono8_confidence_for_nav2(tmp_path, b0_checkpoint, client,
                                                  vision_msgs_env):
    from sensor_msgs.msg import Image
    from ditta_ros.tools.replay import dds_environment
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, **{
        'output.confidence_encoding': 'mono8'}), env=vision_msgs_env)
    try:
        node.wait_for_log('ready:')
        listener = subprocess.run(
            [sys.executable, '-c', LISTENER, '/ditta/label_info'], capture_output=True,
            text=True, timeout=60, env=dict(os.environ, **vision_msgs_env, **dds_environment()))
        assert listener.returncode == 0, listener.stderr
        class_map = json.loads(listener.stdout.strip().splitlines()[-1])
        assert class_map is not None, 'no LabelInfo received'
        assert class_map[0] == [0, 'road'] and class_map[18] == [18, 'bicycle']
        assert len(class_map) == 19

        masks = client.collect(Image, f'/ditta/{NODE_CAMERA}/mask')
        confidences = client.collect(Image, f'/ditta/{NODE_CAMERA}/confidence')
        pub = client.publisher(Image, NODE_TOPIC)
        wait_matched(pub)
        send_frames(pub, synthetic_clip(frames=2), gap=0.3)
        wait_until(lambda: masks and confidences, 60, 'a mask and a confidence image')
        confidence = confidences[-1]
        assert confidence.encoding == 'mono8' and confidence.step == confidence.width
        values = np.frombuffer(bytes(confidence.data), np.uint8)
        assert values.max() == 255 and values.size == confidence.width * confidence.height
        assert masks[-1].encoding == 'mono8'
        assert (confidence.header.stamp, confidence.header.frame_id) == \
            (masks[-1].header.stamp, masks[-1].header.frame_id)
    finally:
        assert node.stop() == 0


def test_without_vision_msgs_the_node_says_so_and_runs(tmp_path, b0_checkpoint):
    node = NodeProcess(tmp_path, node_params(b0_checkpoint))
    try:
        log = node.wait_for_log('ready:')
        assert 'vision_msgs is not installed' in log
    finally:
        assert node.stop() == 0
