"""launch/ditta.launch.py under the real ROS `launch` (launch_pytest).

ROS `launch`, `launch_ros` and `launch_pytest` come with a ROS 2 distribution and are not on
PyPI; where they are missing these tests are skipped with that reason.
"""
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='ROS 2 launch_pytest is not installed (it comes with a ROS 2 '
                            'distribution, and loads under pytest < 8.4 only); the launch file '
                            'is tested there')
import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from conftest import NODE_CAMERA, NODE_TOPIC, synthetic_clip  # noqa: E402
from ditta_ros.tools.replay import Client, image_message, wait_matched, wait_until  # noqa: E402

pytestmark = pytest.mark.dds
LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'ditta.launch.py'


@pytest.fixture(scope='module')
def launch_checkpoint(tmp_path_factory):
    from conftest import confident_checkpoint
    from ditta_ros.model.build import ModelSpec
    return confident_checkpoint(tmp_path_factory.mktemp('launch') / 'b0.pt',
                                ModelSpec(variant='b0', num_classes=19, embed_dim=64))


def node_running() -> bool:
    """Whether a ditta_node process started by this test process is alive."""
    import psutil
    return any('ditta_node' in ' '.join(child.cmdline())
               for child in psutil.Process().children(recursive=True) if child.is_running())


@launch_pytest.fixture
def launch_description(launch_checkpoint):
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={'namespace': 'launch_test', 'camera_topic': NODE_TOPIC,
                              'model_checkpoint': str(launch_checkpoint), 'teacher': 'flow',
                              'model_variant': 'b0', 'embed_dim': '64',
                              'warmup_frames': '3', 'device': 'cpu', 'target_decoder': 'cls_head',
                              'parameters': '{model.input_scale: [256, 128], '
                                            'adapt.passes: 1}'}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_starts_the_node_with_its_arguments():
    from sensor_msgs.msg import Image
    from ditta_ros.msg import AdaptationStatus
    client = Client('launch_test_client')
    try:
        statuses = client.collect(AdaptationStatus, f'/launch_test/ditta/{NODE_CAMERA}/status',
                                  transient=True)
        masks = client.collect(Image, f'/launch_test/ditta/{NODE_CAMERA}/mask')
        started = time.monotonic()

        def reported():
            # fail at once when the node died at start-up (its log says why) instead of waiting
            assert statuses or node_running() or time.monotonic() - started < 5, \
                'the launched ditta_node exited before it reported a status'
            return bool(statuses)
        wait_until(reported, 120, 'the launched node to report its status')
        assert statuses[-1].frames_required == 3
        pub = client.publisher(Image, NODE_TOPIC)
        wait_matched(pub)
        for i, frame in enumerate(synthetic_clip(frames=2)):
            pub.publish(image_message(frame, 5.0 + 0.1 * i))
        wait_until(lambda: masks, 60, 'a mask from the launched node')
    finally:
        client.close()
