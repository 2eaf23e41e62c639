"""The ditta_ros node: camera topics in, temporally fused semantic masks out.

Per camera topic: a subscription that only hands the newest frame to that camera's worker
thread; a camera stream (stream/: warm-up, background adaptation, inference); publishers of
~/<camera>/mask (mono8 class ids), ~/<camera>/color_mask (rgb8), ~/<camera>/confidence (32FC1)
and ~/<camera>/status (AdaptationStatus). Node-wide: ~/labels (latched class names and colours),
/diagnostics, and the services ~/start_adaptation, ~/reset and ~/save_decoder (also per camera
under ~/<camera>/). All cameras share one frozen backbone; each adapts its own decoder.
"""
import logging
import os
import signal
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from ditta_ros import settings
from ditta_ros.labels import load_label_set
from ditta_ros.model.build import build_model
from ditta_ros.msg import AdaptationStatus, SegmentationLabels
from ditta_ros.ros import messages
from ditta_ros.ros.camera import CameraWorker, OutputSettings
from ditta_ros.ros.params import (NOW, PARAMS, PARAMS_BY_NAME, RESTART, camera_name,
                                  load_defaults, validate)
from ditta_ros.runtime import configure_process
from ditta_ros.stream.config import StreamConfig, Phase, StreamStatus
from ditta_ros.stream.methods import METHODS, make_stream
from ditta_ros.stream.worker import AdaptationWorker
from ditta_ros.teacher.factory import make_teacher

_TYPES = {'int': ParameterType.PARAMETER_INTEGER, 'float': ParameterType.PARAMETER_DOUBLE,
          'str': ParameterType.PARAMETER_STRING, 'bool': ParameterType.PARAMETER_BOOL,
          'str[]': ParameterType.PARAMETER_STRING_ARRAY,
          'int[]': ParameterType.PARAMETER_INTEGER_ARRAY}


class StartupError(RuntimeError):
    """The node cannot start; the message says what to fix."""


class RosLogHandler(logging.Handler):
    """Forward the package's Python log records (logger 'ditta_ros') to the node's ROS logger,
    throttled per message kind so a bad stream cannot flood the log."""

    def __init__(self, node: Node):
        super().__init__(logging.INFO)
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        logger = self.node.get_logger()
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            logger.error(text, throttle_duration_sec=2.0)
        elif record.levelno >= logging.WARNING:
            logger.warning(text, throttle_duration_sec=2.0)
        else:
            logger.info(text)


def _descriptor(spec) -> ParameterDescriptor:
    text = spec.description
    if spec.choices:
        text += f' One of: {", ".join(spec.choices)}.'
    text += {RESTART: ' Read-only: restart the node to change it.',
             NOW: ' Takes effect at once.'}.get(spec.when, ' Takes effect at the next warm-up.')
    desc = ParameterDescriptor(description=text, type=_TYPES[spec.kind],
                               read_only=spec.when == RESTART)
    if spec.bounds is not None and spec.kind == 'int':
        desc.integer_range = [IntegerRange(from_value=int(spec.bounds[0]),
                                           to_value=int(spec.bounds[1]), step=0)]
    elif spec.bounds is not None and spec.kind == 'float':
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.bounds[0]),
                                                        to_value=float(spec.bounds[1]), step=0.0)]
    return desc


class DittaNodeBase:
    """Everything the node does, for the plain node and the lifecycle node alike: parameters,
    models and camera streams (`_load`), subscriptions (`_subscribe`), and unloading."""

    def _setup(self) -> None:
        self._log_handler = RosLogHandler(self)
        package_logger = logging.getLogger('ditta_ros')
        package_logger.addHandler(self._log_handler)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False
        self.p = self._declare_parameters()
        self.cameras: Dict[str, CameraWorker] = {}
        self.adaptation_worker = None
        self.device = None
        self._camera_subscriptions = []
        self._entities = []          # publishers, services and timers made by _load
        self._ready = False
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load(self) -> None:
        """Models, teacher, camera streams, publishers, services and the status timer."""
        self.labels = load_label_set(self.p['model.label_set'])
        self.device = settings.resolve_device(self.p['device'])
        self.model = build_model(settings.model_spec(self.p, self.labels), self.device).eval()
        self.input_spec = settings.input_spec(self.p)
        method = METHODS[self.p['method']]
        needs_teacher = method.needs_teacher
        # one adaptation thread for all cameras: they share one accelerator
        self.adaptation_worker = AdaptationWorker() if method.in_background else None
        self.teacher_name = self.p['teacher.name'] if needs_teacher else ''
        teacher = make_teacher(settings.teacher_spec(self.p), self.device) \
            if needs_teacher else None
        self.settings = OutputSettings(self.p['output.color_mask'], self.p['output.confidence'],
                                       self.p['output.confidence_encoding'],
                                       self.p['input.max_image_pixels'])
        self._status_pubs = {}
        self._image_pubs = {}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.labels_pub = self._made(self.create_publisher(SegmentationLabels, '~/labels',
                                                           latched))
        self.diagnostics_pub = self._made(self.create_publisher(DiagnosticArray,
                                                                '/diagnostics', 10))
        for topic in self.p['camera_topics']:
            self._add_camera(topic, teacher)
        self._add_services('~/', list(self.cameras))
        for name in self.cameras:
            self._add_services(f'~/{name}/', [name])
        self.labels_pub.publish(messages.labels_msg(self.labels, self.get_clock().now().to_msg()))
        self._publish_label_info(latched)
        self._made(self.create_timer(1.0 / self.p['output.status_rate_hz'],
                                     self._publish_all_status))
        self._ready = True

    def _made(self, entity):
        self._entities.append(entity)
        return entity

    def _ready_line(self) -> str:
        ditta = METHODS[self.p['method']].in_background
        return (f'ready: {len(self.cameras)} camera(s) [{", ".join(self.cameras)}], model '
                f'{self.p["model.family"]}/{self.model.identity.variant} ({self.labels.name}, '
                f'{self.labels.num_classes} classes) on {self.device}, method {self.p["method"]}'
                + (f', teacher {self.teacher_name}, warm-up {self._warmup_text()}'
                   if ditta else ''))

    def _subscribe(self) -> None:
        """Camera subscriptions: from here on frames are processed and masks published."""
        compressed = self.p['input.type'] == 'compressed'
        # sensor_data: SensorDataQoS (best effort, volatile) with the configured depth
        reliability = qos_profile_sensor_data.reliability \
            if self.p['input.qos'] == 'sensor_data' else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(depth=self.p['input.qos_depth'], reliability=reliability,
                         durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
        for topic, (name, worker) in zip(self.p['camera_topics'], self.cameras.items()):
            self._camera_subscriptions.append(self.create_subscription(
                CompressedImage if compressed else Image,
                topic.rstrip('/') + '/compressed' if compressed else topic, worker.offer, qos))

    def _unsubscribe(self) -> None:
        for subscription in self._camera_subscriptions:
            self.destroy_subscription(subscription)
        self._camera_subscriptions = []

    def _unload(self) -> None:
        """Undo `_load`: threads joined, ROS entities destroyed, models freed (GPU memory too)."""
        self._unsubscribe()
        self._ready = False
        self.shutdown()
        for entity in self._entities:   # each destroy_* is False for what it does not own
            self.destroy_publisher(entity) or self.destroy_service(entity) \
                or self.destroy_timer(entity)
        self._entities = []
        self.cameras, self.adaptation_worker = {}, None
        self.model = None
        if self.device == 'cuda':
            import torch
            torch.cuda.empty_cache()

    def _publish_label_info(self, qos):
        """~/label_info (vision_msgs/LabelInfo, latched) where vision_msgs is installed: the
        class map Nav2's semantic_segmentation_layer needs beside the mask and confidence."""
        try:
            from vision_msgs.msg import LabelInfo, VisionClass
        except ImportError:
            self.get_logger().info('vision_msgs is not installed: ~/label_info (for Nav2) is '
                                   'not published; ~/labels carries the class names')
            return None
        publisher = self._made(self.create_publisher(LabelInfo, '~/label_info', qos))
        publisher.publish(messages.label_info_msg(LabelInfo, VisionClass, self.labels,
                                                  self.get_clock().now().to_msg()))
        return publisher

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict:
        defaults = load_defaults()
        values, problems = {}, []
        for spec in PARAMS:
            try:
                param = self.declare_parameter(spec.name, defaults[spec.name], _descriptor(spec))
                # an empty list in a params file has no type and arrives unset: keep the default
                values[spec.name] = defaults[spec.name] if param.value is None else param.value
            except Exception as exc:  # out-of-range or wrongly typed value from a params file
                problems.append(f'{spec.name}: {exc}')
                continue
            reason = validate(spec.name, values[spec.name])
            if reason:
                problems.append(reason)
        if problems:
            raise StartupError('invalid parameters: ' + '; '.join(problems))
        return values

    def _warmup_text(self) -> str:
        parts = []
        if self.p['warmup.frames'] > 0:
            parts.append(f'{self.p["warmup.frames"]} frames')
        if self.p['warmup.seconds'] > 0:
            parts.append(f'{self.p["warmup.seconds"]} s')
        return ' and '.join(parts) + f' (stride {self.p["warmup.stride"]}), start ' \
            f'{self.p["start"]}'

    def _stream_config(self) -> StreamConfig:
        return settings.stream_config(self.p)

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            spec = PARAMS_BY_NAME.get(param.name)
            if spec is None:
                continue
            reason = validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        notes = []
        for param in params:
            spec = PARAMS_BY_NAME.get(param.name)
            if spec is None:
                continue
            self.p[param.name] = param.value
            if spec.when != NOW:
                notes.append(f'{param.name} takes effect at the next warm-up (~/start_adaptation)')
        if self._ready:  # a lifecycle node that is not configured has nothing to update
            self.settings.color_mask = self.p['output.color_mask']
            self.settings.confidence = self.p['output.confidence']
            self.settings.confidence_encoding = self.p['output.confidence_encoding']
            self.settings.max_image_pixels = self.p['input.max_image_pixels']
            cfg = self._stream_config()
            for worker in self.cameras.values():
                worker.stream.update_config(cfg)
        for note in notes:
            self.get_logger().info(note)
        return SetParametersResult(successful=True, reason='; '.join(notes))

    # ------------------------------------------------------------------ cameras

    def _add_camera(self, topic: str, teacher) -> None:
        name = camera_name(topic)
        if name in self.cameras:
            raise StartupError(f'camera topics {topic!r} and another one both map to camera '
                               f'name {name!r}; give them distinct namespaces')
        ns = f'~/{name}/'
        self._image_pubs[name] = {
            'mask': self._made(self.create_publisher(Image, ns + 'mask', 10)),
            'color': self._made(self.create_publisher(Image, ns + 'color_mask', 10)),
            'confidence': self._made(self.create_publisher(Image, ns + 'confidence', 10)),
        }
        self._status_pubs[name] = self._made(self.create_publisher(
            AdaptationStatus, ns + 'status',
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)))
        stream = make_stream(name, self.model, self.input_spec, self._stream_config(),
                             teacher, self.adaptation_worker, self.device,
                             on_phase_change=lambda status, n=name: self._on_phase(n, status),
                             class_names=self.labels.class_names)
        if self.p['decoder.load_path']:
            self.get_logger().info(stream.load(self._decoder_path(self.p['decoder.load_path'],
                                                                   name, len(self.p['camera_topics']))))
        compressed = self.p['input.type'] == 'compressed'
        worker = CameraWorker(stream, self.labels, compressed, self.settings,
                              publish=lambda *a, n=name: self._publish_masks(n, *a),
                              log_error=lambda text: self.get_logger().error(
                                  text, throttle_duration_sec=5.0))
        self.cameras[name] = worker

    def _publish(self, publisher, make_message) -> None:
        """publisher.publish(make_message()) unless ROS is shutting down. SIGINT/SIGTERM
        invalidate the context from the signal handler, also between a check of the context and
        the publish that follows on a camera thread or timer: that publish fails (an RCLError
        on an invalid context, an InvalidHandle on destroyed handles), and must end the node
        quietly instead of with a traceback and exit code 1."""
        if not self.context.ok():
            return
        try:
            publisher.publish(make_message())
        except Exception:
            if self.context.ok():
                raise

    def _publish_masks(self, name, header, label, color, confidence) -> None:
        pubs = self._image_pubs[name]
        self._publish(pubs['mask'], lambda: messages.image_msg(header, label, 'mono8'))
        if color is not None:
            self._publish(pubs['color'], lambda: messages.image_msg(header, color, 'rgb8'))
        if confidence is not None:
            encoding = 'mono8' if confidence.dtype == np.uint8 else '32FC1'
            self._publish(pubs['confidence'],
                          lambda: messages.image_msg(header, confidence, encoding))

    def _on_phase(self, name: str, status: StreamStatus) -> None:
        """Called by a stream on every phase change (any thread)."""
        log = self.get_logger()
        if status.phase == Phase.FAILED:
            log.error(f'{name}: adaptation failed: {status.reason}; the last good decoder stays '
                      'in use (call ~/start_adaptation to try again)')
        else:
            log.info(f'{name}: phase {status.phase.name.lower()}')
        if not self._ready:
            return
        if status.phase == Phase.ADAPTED and status.decoder == 'adapted' \
                and self.p['decoder.autosave']:
            try:
                log.info(self.cameras[name].stream.save(self._save_path(name)))
            except Exception as exc:
                log.error(f'{name}: autosave failed: {exc}')
        self._publish_status(name, status)

    def _publish_status(self, name: str, status: StreamStatus) -> None:
        worker = self.cameras[name]
        self._publish(self._status_pubs[name], lambda: messages.status_msg(
            status, worker.traffic, self.get_clock().now().to_msg(), worker.last_frame_id,
            self.teacher_name, time.monotonic()))

    def _publish_all_status(self) -> None:
        now = time.monotonic()
        diagnostics = DiagnosticArray()
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        for name, worker in self.cameras.items():
            status = worker.stream.status()
            self._publish_status(name, status)
            diagnostics.status.append(messages.diagnostic_status(self.get_name(), status,
                                                                 worker.traffic, now))
        self._publish(self.diagnostics_pub, lambda: diagnostics)

    # ------------------------------------------------------------------ services

    @staticmethod
    def _decoder_path(path: str, name: str, cameras: int) -> str:
        path = os.path.expanduser(path)
        if cameras == 1:
            return path
        root, ext = os.path.splitext(path)
        return f'{root}_{name.replace("/", "_")}{ext or ".pt"}'

    def _save_path(self, name: str) -> str:
        if self.p['decoder.save_path']:
            return self._decoder_path(self.p['decoder.save_path'], name, len(self.cameras))
        return os.path.expanduser(f'~/.ros/ditta_ros/{name.replace("/", "_")}.pt')

    def _add_services(self, prefix: str, names: List[str]) -> None:
        actions = {
            'start_adaptation': lambda n: self.cameras[n].stream.start_adaptation(),
            'reset': lambda n: self.cameras[n].stream.reset(),
            'save_decoder': lambda n: self.cameras[n].stream.save(self._save_path(n)),
        }
        for service, action in actions.items():
            self._made(self.create_service(
                Trigger, prefix + service,
                lambda request, response, a=action, s=service: self._serve(a, s, names, response)))

    def _serve(self, action, service: str, names: List[str], response):
        results, ok = [], True
        for name in names:
            try:
                results.append(action(name))
            except Exception as exc:
                ok = False
                results.append(f'{name}: {exc}')
        response.success = ok
        response.message = '; '.join(results)
        if ok:
            self.get_logger().info(f'{service}: {response.message}')
        else:
            self.get_logger().warning(f'{service}: {response.message}')
        return response

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop camera workers and the adaptation thread; joins them (bounded wait)."""
        deadline = time.monotonic() + timeout
        for worker in self.cameras.values():
            worker.stream.shutdown()
        for worker in self.cameras.values():
            worker.stop(max(0.1, deadline - time.monotonic()))
        if self.adaptation_worker is not None:
            self.adaptation_worker.stop(max(0.1, deadline - time.monotonic()))



class DittaNode(DittaNodeBase, Node):
    """The node, running from the start (see the module docstring)."""

    def __init__(self, **kwargs):
        Node.__init__(self, 'ditta', **kwargs)
        self._setup()
        self._load()
        self._subscribe()
        self.get_logger().info(self._ready_line())


def ignore_further_signals() -> None:
    """From here on SIGINT and SIGTERM are ignored, so that shutting down runs to its end. A
    Ctrl-C in the terminal of `ros2 launch` reaches the node twice (the terminal signals the
    process group, and launch forwards one more); the second one had raised KeyboardInterrupt
    inside the thread joins of the shutdown and aborted the process (exit -6)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _shut_down(node: Optional['DittaNode']) -> None:
    """Stop the node's threads and rclpy, whatever signals still arrive."""
    while True:
        try:
            ignore_further_signals()
            if node is not None:
                node.shutdown()
                logging.getLogger('ditta_ros').removeHandler(node._log_handler)
                node.destroy_node()
            rclpy.try_shutdown()
            return
        except KeyboardInterrupt:  # raised before the signals were ignored: finish the job
            continue


def run(make_node: Callable[[], Node], start: Callable[[Node], None] = lambda node: None,
        args=None) -> int:
    """rclpy set-up, spin and clean shutdown around the node `make_node` builds; `start` runs
    once it is built. Startup errors end the process with one line that says what to fix."""
    configure_process()
    rclpy.init(args=args)
    try:
        node = make_node()
        start(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        _shut_down(None)
        return 0
    except Exception as exc:  # startup errors: one clear line that says what to fix
        rclpy.logging.get_logger('ditta').fatal(f'startup failed: {exc}')
        _shut_down(None)
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _shut_down(node)
    return 0


def main(args=None) -> int:
    return run(DittaNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
