"""Build the node's outgoing messages (masks, status, labels, diagnostics) from plain data."""
import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image

from ditta_ros.stream.config import Phase, StreamStatus
from ditta_ros.msg import AdaptationStatus, SegmentationLabels
from ditta_ros.ros.camera import CameraTraffic

_LOSS_FIELDS = (('distill', 'loss_distill'), ('distill_addon', 'loss_distill_addon'),
                ('contra', 'loss_contra'), ('total', 'loss_total'))


def image_msg(header, array: np.ndarray, encoding: str) -> Image:
    """An Image with the given header (the input's: same stamp and frame_id)."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array[0].nbytes)
    msg.data = array.tobytes()
    return msg


def status_msg(status: StreamStatus, traffic: CameraTraffic, stamp, frame_id: str,
               teacher: str, now_monotonic: float) -> AdaptationStatus:
    msg = AdaptationStatus()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.camera = status.camera
    msg.phase = int(status.phase)
    msg.phase_name = status.phase.name.lower()
    msg.method = status.method
    msg.teacher = teacher
    msg.decoder = status.decoder
    msg.frames_collected = status.frames_collected
    msg.frames_required = max(0, status.frames_required)
    msg.warmup_elapsed_s = float(status.warmup_elapsed_s)
    msg.warmup_required_s = float(status.warmup_required_s)
    msg.progress = float(status.progress)
    msg.adaptation_step = status.step
    msg.adaptation_steps_total = status.steps_total
    for key, field in _LOSS_FIELDS:
        setattr(msg, field, float(status.losses.get(key, math.nan)))
    msg.inference_rate_hz = float(traffic.rate_hz(now_monotonic))
    msg.latency_ms = float(traffic.mean_latency_ms())
    msg.frames_received = traffic.received
    msg.frames_processed = traffic.processed
    msg.frames_dropped = traffic.dropped
    msg.frames_rejected = traffic.rejected
    msg.adaptations_completed = status.adaptations_completed
    msg.temporal_resets = status.temporal_resets
    msg.reason = status.reason or traffic.last_error
    return msg


def labels_msg(labels, stamp) -> SegmentationLabels:
    msg = SegmentationLabels()
    msg.header.stamp = stamp
    msg.label_set = labels.name
    msg.class_names = list(labels.class_names)
    msg.palette_rgb = labels.palette.reshape(-1).tobytes()
    msg.ignore_value = int(labels.ignore_value)
    return msg


def label_info_msg(label_info_type, vision_class_type, labels, stamp):
    """vision_msgs/LabelInfo of the label set (class id -> name), as Nav2's
    semantic_segmentation_layer reads it; the types are passed in because vision_msgs is
    optional (it comes with every ROS 2 distribution, not with the PyPI wheels)."""
    msg = label_info_type()
    msg.header.stamp = stamp
    msg.class_map = [vision_class_type(class_id=i, class_name=name)
                     for i, name in enumerate(labels.class_names)]
    msg.threshold = 0.0
    return msg


def diagnostic_status(node_name: str, status: StreamStatus, traffic: CameraTraffic,
                      now_monotonic: float) -> DiagnosticStatus:
    """OK when serving, WARN while the rate is zero or frames are rejected, ERROR if failed."""
    rate = traffic.rate_hz(now_monotonic)
    level, message = DiagnosticStatus.OK, status.phase.name.lower()
    if status.phase == Phase.FAILED:
        level, message = DiagnosticStatus.ERROR, f'adaptation failed: {status.reason}'
    elif traffic.received and rate == 0.0:
        level, message = DiagnosticStatus.WARN, f'{message}; no mask published in 5 s'
    elif traffic.rejected:
        level, message = DiagnosticStatus.WARN, f'{message}; {traffic.rejected} frames rejected'
    stages = traffic.stage_means_ms()
    values = {
        'phase': status.phase.name.lower(), 'decoder': status.decoder,
        'rate_hz': f'{rate:.2f}', 'latency_ms': f'{traffic.mean_latency_ms():.1f}',
        'decode_ms': f'{stages["decode"]:.1f}', 'model_ms': f'{stages["model"]:.1f}',
        'encode_publish_ms': f'{stages["publish"]:.1f}',
        'received': str(traffic.received), 'processed': str(traffic.processed),
        'dropped': str(traffic.dropped), 'rejected': str(traffic.rejected),
        'adaptations_completed': str(status.adaptations_completed),
    }
    return DiagnosticStatus(level=level, name=f'{node_name}: {status.camera}', message=message,
                            hardware_id=status.camera,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
