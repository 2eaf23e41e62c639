"""The node as users run it: a separate process, a params file, real DDS on loopback."""
import signal
import time

import numpy as np
import pytest

from conftest import (NODE_CAMERA, NODE_TOPIC, confident_checkpoint, node_params, send_frames,
                      stamp_of, synthetic_clip)
from ditta_ros.model.build import ModelSpec
from ditta_ros.tools.replay import NodeProcess, image_message, node_executable, wait_matched, \
    wait_until

pytestmark = [pytest.mark.dds, pytest.mark.skipif(node_executable() is None,
                                reason='ditta_node not built (run scripts/setup.sh)')]

TOPIC, CAMERA = NODE_TOPIC, NODE_CAMERA


def test_frames_in_masks_out_phases_to_adapted(tmp_path, b0_checkpoint, client):
    from sensor_msgs.msg import Image
    from ditta_ros.msg import AdaptationStatus, SegmentationLabels
    node = NodeProcess(tmp_path, node_params(b0_checkpoint))
    try:
        node.wait_for_log('ready:')
        masks = client.collect(Image, f'/ditta/{CAMERA}/mask')
        colors = client.collect(Image, f'/ditta/{CAMERA}/color_mask')
        confidence = client.collect(Image, f'/ditta/{CAMERA}/confidence')
        statuses = client.collect(AdaptationStatus, f'/ditta/{CAMERA}/status', transient=True)
        labels = client.collect(SegmentationLabels, '/ditta/labels', transient=True)
        pub = client.publisher(Image, TOPIC)
        wait_matched(pub)
        clip = synthetic_clip(frames=12, height=48, width=80)
        stamps = send_frames(pub, clip[:4])
        wait_until(lambda: any(s.phase == AdaptationStatus.PHASE_ADAPTED for s in statuses), 120,
                   'phase adapted')
        stamps += send_frames(pub, clip[4:], start=1000.4)
        wait_until(lambda: len(masks) >= len(stamps) - 1, 30, 'masks of every frame')
        by_stamp = {stamp_of(m): m for m in masks}
        for m in masks:
            assert m.encoding == 'mono8' and (m.height, m.width) == (48, 80)
            assert m.header.frame_id == 'front_cam' and m.step == 80
            assert np.frombuffer(m.data, np.uint8).max() < 19
        assert set(by_stamp) <= {round(s, 6) for s in stamps}
        assert colors and colors[0].encoding == 'rgb8' and colors[0].step == 240
        assert confidence and confidence[0].encoding == '32FC1'
        conf = np.frombuffer(confidence[-1].data, np.float32)
        assert conf.min() >= 0 and conf.max() <= 1
        phases = [s.phase_name for s in statuses]
        for phase in ('warmup', 'building_targets', 'adapting', 'adapted'):
            assert phase in phases
        final = statuses[-1]
        assert final.decoder == 'adapted' and final.frames_collected == 4
        assert final.teacher == 'flow' and final.method == 'ditta'
        assert np.isfinite(final.loss_total) and final.adaptations_completed == 1
        wait_until(lambda: labels, 10, 'latched labels')
        assert len(labels[0].class_names) == 19 and len(labels[0].palette_rgb) == 57
    finally:
        assert node.stop() == 0


def test_bad_frames_are_rejected_and_the_node_keeps_running(tmp_path, b0_checkpoint, client):
    from sensor_msgs.msg import Image
    from ditta_ros.msg import AdaptationStatus
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, method='none'))
    try:
        node.wait_for_log('ready:')
        masks = client.collect(Image, f'/ditta/{CAMERA}/mask')
        statuses = client.collect(AdaptationStatus, f'/ditta/{CAMERA}/status', transient=True)
        pub = client.publisher(Image, TOPIC)
        wait_matched(pub)
        good = synthetic_clip(frames=2)
        bad = image_message(good[0], 5.0)
        bad.encoding = 'weird16'
        short = image_message(good[0], 5.1)
        short.data = short.data[:100]
        for msg in (bad, short):
            pub.publish(msg)
            time.sleep(0.3)
        pub.publish(image_message(good[1], 5.2))
        wait_until(lambda: any(stamp_of(m) == 5.2 for m in masks), 30, 'the next good frame')
        wait_until(lambda: statuses and statuses[-1].frames_rejected == 2, 10, 'reject count')
        assert 'data length' in statuses[-1].reason or 'encoding' in statuses[-1].reason
        log = node.log()
        assert 'unsupported encoding' in log and 'frame rejected' in log
    finally:
        assert node.stop() == 0


def test_parameters_services_and_two_cameras(tmp_path, b0_checkpoint, client):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger
    from ditta_ros.msg import AdaptationStatus
    second = '/itest/rear/image_raw'
    save_path = tmp_path / 'saved' / 'decoder.pt'
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, camera_topics=[TOPIC, second],
                                        start='on_service',
                                        **{'decoder.save_path': str(save_path)}))
    try:
        node.wait_for_log('ready:')
        front = client.collect(AdaptationStatus, f'/ditta/{CAMERA}/status', transient=True)
        rear_masks = client.collect(Image, '/ditta/itest/rear/mask')

        def set_param(name, value):
            req = SetParameters.Request()
            req.parameters = [Parameter(name=name, value=value)]
            return client.call(SetParameters, '/ditta/set_parameters', req).results[0]

        bad = set_param('fusion.tau', ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                     double_value=1.5))
        assert not bad.successful and bad.reason
        bad = set_param('adapt.target_decoder', ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value='backbone'))
        assert not bad.successful and 'decoder, cls_head, addon' in bad.reason
        ro = set_param('model.checkpoint', ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                         string_value='/x.pt'))
        assert not ro.successful and 'read-only' in ro.reason.lower()
        ok = set_param('warmup.frames', ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                       integer_value=3))
        assert ok.successful
        node.wait_for_log('warmup.frames takes effect at the next warm-up', 10)

        wait_until(lambda: front and front[-1].phase_name == 'waiting', 10, 'waiting phase')
        pub_front = client.publisher(Image, TOPIC)
        pub_rear = client.publisher(Image, second)
        wait_matched(pub_rear)
        wait_matched(pub_front)
        send_frames(pub_rear, synthetic_clip(frames=2, seed=3), start=7.0)
        wait_until(lambda: len(rear_masks) >= 1, 20, 'rear masks')

        response = client.call(Trigger, f'/ditta/{CAMERA}/start_adaptation', Trigger.Request())
        assert response.success and 'warm-up started' in response.message
        send_frames(pub_front, synthetic_clip(frames=3), start=20.0)
        wait_until(lambda: front[-1].phase_name == 'adapted', 120, 'front adapted')
        assert front[-1].frames_required == 3  # the run-time change applied to this warm-up

        response = client.call(Trigger, '/ditta/save_decoder', Trigger.Request())
        assert not response.success  # the rear camera has nothing to save yet
        response = client.call(Trigger, f'/ditta/{CAMERA}/save_decoder', Trigger.Request())
        assert response.success and save_path.parent.is_dir()
        assert list(save_path.parent.glob('decoder_itest_front.pt'))

        response = client.call(Trigger, '/ditta/reset', Trigger.Request())
        assert response.success
        wait_until(lambda: front[-1].phase_name == 'source', 10, 'source after reset')
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize('overrides,message', [
    ({'model.checkpoint': '/nonexistent/model.pth'}, 'model checkpoint not found'),
    ({'model.family': 'unet'}, 'model.family'),
    ({'device': 'cuda'}, 'CUDA is not available'),
    ({'model.label_set': 'nope'}, 'unknown label set'),
    ({'warmup.frames': -3}, 'warmup.frames'),
])
def test_startup_fails_fast_with_one_clear_line(tmp_path, b0_checkpoint, overrides, message):
    import torch
    if overrides.get('device') == 'cuda' and torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, **overrides))
    assert node.wait_exit(60) == 1
    fatal = [line for line in node.log().splitlines() if 'startup failed' in line]
    assert len(fatal) == 1 and message in fatal[0], node.log()


def test_class_count_mismatch_fails_fast(tmp_path, client):
    path = confident_checkpoint(tmp_path / 'c5.pt', ModelSpec(variant='b0', num_classes=5,
                                                               embed_dim=32, window=2))
    node = NodeProcess(tmp_path, node_params(path))
    assert node.wait_exit(60) == 1
    assert 'class-count mismatch' in node.log()


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_shutdown_mid_adaptation_is_clean_and_quick(tmp_path, b0_checkpoint, client, sig):
    from sensor_msgs.msg import Image
    from ditta_ros.msg import AdaptationStatus
    node = NodeProcess(tmp_path, node_params(b0_checkpoint, **{'adapt.passes': 50,
                                                       'model.input_scale': [256, 128]}))
    try:
        node.wait_for_log('ready:')
        statuses = client.collect(AdaptationStatus, f'/ditta/{CAMERA}/status', transient=True)
        pub = client.publisher(Image, TOPIC)
        wait_matched(pub)
        send_frames(pub, synthetic_clip(frames=4, height=96, width=160))
        wait_until(lambda: any(s.phase_name == 'adapting' for s in statuses), 120, 'adapting')
    finally:
        started = time.monotonic()
        code = node.stop(sig, timeout=15)
    assert code == 0 and time.monotonic() - started < 10
