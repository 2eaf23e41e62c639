"""ditta_lifecycle_node over real DDS: each transition does what it says, and autostart makes it
behave as the plain node."""
import signal
import time

import pytest

from conftest import NODE_CAMERA, NODE_TOPIC, node_params, send_frames, synthetic_clip
from ditta_ros.tools.replay import NodeProcess, node_executable, wait_matched, wait_until

pytestmark = [pytest.mark.dds, pytest.mark.skipif(node_executable('ditta_lifecycle_node') is None,
                                reason='ditta_lifecycle_node not built (run scripts/setup.sh)')]


def transition(client, transition_id):
    from lifecycle_msgs.srv import ChangeState
    request = ChangeState.Request()
    request.transition.id = transition_id
    return client.call(ChangeState, '/ditta/change_state', request, timeout=60).success


def state(client):
    from lifecycle_msgs.srv import GetState
    return client.call(GetState, '/ditta/get_state', GetState.Request(), timeout=10).current_state.label


def test_transitions_load_subscribe_unsubscribe_and_release(tmp_path, b0_checkpoint, client):
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, autostart=False, method='none'),
                       executable='ditta_lifecycle_node')
    try:
        node.wait_for_log('waiting for lifecycle transitions')
        assert state(client) == 'unconfigured'
        masks = client.collect(Image, f'/ditta/{NODE_CAMERA}/mask')
        pub = client.publisher(Image, NODE_TOPIC)

        assert transition(client, Transition.TRANSITION_CONFIGURE)
        assert state(client) == 'inactive'
        send_frames(pub, synthetic_clip(frames=2), gap=0.2)
        time.sleep(1.0)
        assert not masks, 'an inactive node must not process frames'

        assert transition(client, Transition.TRANSITION_ACTIVATE)
        assert state(client) == 'active'
        wait_matched(pub)
        send_frames(pub, synthetic_clip(frames=2), start=2000.0, gap=0.2)
        wait_until(lambda: masks, 30, 'a mask from the active node')

        assert transition(client, Transition.TRANSITION_DEACTIVATE)
        assert state(client) == 'inactive'
        seen = len(masks)
        send_frames(pub, synthetic_clip(frames=2), start=3000.0, gap=0.2)
        time.sleep(1.0)
        assert len(masks) == seen, 'a deactivated node must not process frames'

        assert transition(client, Transition.TRANSITION_CLEANUP)
        assert state(client) == 'unconfigured'
        assert 'models and streams released' in node.log()
        assert transition(client, Transition.TRANSITION_CONFIGURE)   # and again
        assert transition(client, Transition.TRANSITION_ACTIVATE)
        send_frames(pub, synthetic_clip(frames=2), start=4000.0, gap=0.2)
        wait_until(lambda: len(masks) > seen, 30, 'masks after a second configure')
    finally:
        assert node.stop(signal.SIGINT) == 0, node.log()


def test_a_failed_configure_leaves_it_unconfigured_and_answering(tmp_path, client):
    from lifecycle_msgs.msg import Transition
    node = NodeProcess(tmp_path, node_params(tmp_path / 'missing.pt', autostart=False),
                       executable='ditta_lifecycle_node')
    try:
        node.wait_for_log('waiting for lifecycle transitions')
        assert not transition(client, Transition.TRANSITION_CONFIGURE)
        assert state(client) == 'unconfigured'
        assert 'configure failed: model checkpoint not found' in node.log()
    finally:
        assert node.stop(signal.SIGINT) == 0, node.log()


def test_autostart_configures_and_activates(tmp_path, b0_checkpoint, client):
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, method='none'),
                       executable='ditta_lifecycle_node')
    try:
        node.wait_for_log('ready:')
        assert state(client) == 'active'
    finally:
        assert node.stop(signal.SIGINT) == 0, node.log()
