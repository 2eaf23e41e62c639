"""Run the built node as a separate process and talk to it over real DDS (loopback only).

Used by ditta-eval (replaying recorded drives through the real node) and by the integration
tests. The node executable is the one the build installed (lib/ditta_ros/ditta_node under a
prefix of AMENT_PREFIX_PATH), started with a params file, as `ros2 run` would start it.
"""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import yaml

from ditta_ros.labels import config_dir


class ReplayError(RuntimeError):
    """The node under replay did not do what was awaited (exited, timed out, did not answer)."""


def dds_environment() -> Dict[str, str]:
    """Keep traffic on this machine, in a domain of this process (and its children) alone.
    Apply it to os.environ before this process initialises ROS, and pass it to the node."""
    env = {
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'FASTDDS_DEFAULT_PROFILES_FILE': os.path.join(config_dir(), 'fastdds_localhost.xml'),
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }
    if 'DITTA_DOMAIN_ID' not in os.environ:
        os.environ['DITTA_DOMAIN_ID'] = str(10 + os.getpid() % 200)
    env['ROS_DOMAIN_ID'] = os.environ['DITTA_DOMAIN_ID']
    return env


def node_executable(name: str = 'ditta_node') -> Optional[Path]:
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'lib' / 'ditta_ros' / name
        if prefix and candidate.is_file():
            return candidate
    return None


def nest(flat: Dict[str, object]) -> Dict[str, object]:
    tree: Dict[str, object] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class NodeProcess:
    """The ditta node in its own process; output captured to a log file."""

    def __init__(self, tmp_path: Path, params: Dict[str, object], name: str = 'ditta',
                 env: Optional[Dict[str, str]] = None, executable: str = 'ditta_node'):
        exe = node_executable(executable)
        if exe is None:
            raise RuntimeError(f'{executable} is not installed; run scripts/setup.sh first')
        self.params_file = tmp_path / f'{name}_params.yaml'
        # empty lists carry no type in a ROS params file: leave them to the node's defaults
        kept = {k: v for k, v in params.items() if not (isinstance(v, list) and not v)}
        self.params_file.write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(kept)}}))
        self.log_file = tmp_path / f'{name}.log'
        env = dict(os.environ, **(env or {}))
        env.update(dds_environment())
        env['PYTHONUNBUFFERED'] = '1'
        env['RCUTILS_LOGGING_BUFFERED_STREAM'] = '0'
        self._log = open(self.log_file, 'w')
        self.proc = subprocess.Popen([str(exe), '--ros-args', '--params-file',
                                      str(self.params_file), '-r', f'__node:={name}'],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text()

    def wait_for_log(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise ReplayError(f'node exited ({self.proc.returncode}) before {text!r}:\n{out}')
            time.sleep(0.1)
        raise ReplayError(f'{text!r} not in node log after {timeout} s:\n{self.log()}')

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self, sig=signal.SIGINT, timeout: float = 15.0) -> int:
        """Signal the node, wait for it; kill it (and fail) if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise ReplayError(f'node did not exit within {timeout} s of {sig}:\n'
                                     f'{self.log()}')
        self._log.close()
        return self.proc.returncode


class Client:
    """An rclpy node of this process (a tool or a test), spun by a background thread."""

    def __init__(self, name: str = 'ditta_replay_client'):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self):
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self._running = False
        self._thread.join(5)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)

    def collect(self, msg_type, topic: str, transient: bool = False) -> List:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        received: List = []
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if transient
                         else DurabilityPolicy.VOLATILE)
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, msg_type, topic: str):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        return self.node.create_publisher(
            msg_type, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise ReplayError(f'service {name} not available')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not future.done():
            raise ReplayError(f'service {name} did not answer in {timeout} s')
        return future.result()


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = '') -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise ReplayError(f'timed out after {timeout} s waiting for {what}')


def image_message(frame: np.ndarray, stamp_s: float, frame_id: str = 'camera'):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))
    msg.header.frame_id = frame_id
    msg.height, msg.width = frame.shape[:2]
    msg.encoding = 'rgb8'
    msg.step = frame.shape[1] * 3
    msg.data = np.ascontiguousarray(frame).tobytes()
    return msg


def stamp_key(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def wait_matched(pub, timeout: float = 20.0) -> None:
    """The publisher sees the node's subscription before the node's (possibly best-effort)
    reader has matched it; frames sent in between would be lost, so give discovery a moment."""
    wait_until(lambda: pub.get_subscription_count() > 0, timeout, 'the node to subscribe')
    time.sleep(1.0)


def _wait_at_most(seconds: float, predicate: Callable[[], bool]) -> None:
    """Wait until `predicate` holds or `seconds` pass (no error: the caller reports the rest)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)


def _accounts_for(statuses, frames: int) -> bool:
    """Whether the latest status has received `frames` frames in all and settled each one
    (processed, dropped or rejected)."""
    if not statuses:
        return False
    last = statuses[-1]
    settled = last.frames_processed + last.frames_dropped + last.frames_rejected
    return last.frames_received >= frames and settled >= last.frames_received


def replay_video(client: Client, video, topic: str, node_name: str, warmup: int,
                 wait_for_adaptation: bool, lockstep: bool = True, frame_timeout: float = 60.0,
                 progress: Optional[Callable[[], None]] = None) -> dict:
    """Publish a video's frames to `topic` and record the masks the node sends back.

    lockstep: send the next frame once the previous frame's mask arrived (nothing can be
    dropped by the node); otherwise frames go out at the video's own rate. With
    wait_for_adaptation, the frame after the warm-up is held until the node reports `adapted`
    or `failed`. Returns preds (None where no mask came back), sent/received counts, the time
    the frames after the warm-up took, the node's dropped and rejected counts, its last status.
    """
    from sensor_msgs.msg import Image
    from ditta_ros.msg import AdaptationStatus
    from ditta_ros.ros.params import camera_name
    prefix = f'/{node_name}/{camera_name(topic)}'
    masks: Dict[int, np.ndarray] = {}

    def on_mask(msg):
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        masks[stamp_key(msg.header)] = rows[:, :msg.width].copy()

    mask_sub = client.node.create_subscription(Image, prefix + '/mask', on_mask, 100)
    statuses = client.collect(AdaptationStatus, prefix + '/status', transient=True)
    pub = client.publisher(Image, topic)
    keys: List[int] = []
    eval_started = None
    try:
        wait_matched(pub)
        received_before = statuses[-1].frames_received if statuses else 0
        started = time.monotonic()
        for i, frame in enumerate(video.frames):
            if i == warmup:
                eval_started = time.monotonic()
            msg = image_message(frame, video.stamps[i], video.frame_id)
            keys.append(stamp_key(msg.header))
            if not lockstep:
                delay = started + (video.stamps[i] - video.stamps[0]) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(msg)
            if lockstep:
                key = keys[-1]
                rejected_before = statuses[-1].frames_rejected if statuses else 0
                wait_until(lambda: key in masks or (
                    statuses and statuses[-1].frames_rejected > rejected_before),
                    frame_timeout, f'the mask of frame {i}')
            if wait_for_adaptation and i == warmup - 1:
                wait_until(lambda: statuses and statuses[-1].phase_name in ('adapted', 'failed'),
                           3600, 'the node to finish adapting')
            if progress is not None:
                progress()
        if not lockstep:  # let the last masks arrive; frames the node dropped never will
            _wait_at_most(10.0, lambda: all(k in masks for k in keys[-2:]))
        eval_seconds = time.monotonic() - eval_started if eval_started else 0.0
        if not lockstep:  # and a status that counts every frame sent (not a stale dropped
            # count); frames lost before the node saw them never will be, and show as missing
            _wait_at_most(10.0, lambda: _accounts_for(statuses, received_before + len(keys)))
    finally:
        client.node.destroy_subscription(mask_sub)
        client.node.destroy_publisher(pub)
    last = statuses[-1] if statuses else None
    return {'preds': [masks.get(k) for k in keys], 'sent': len(keys),
            'eval_seconds': eval_seconds,
            'received': sum(k in masks for k in keys),
            'dropped': last.frames_dropped if last else 0,
            'rejected': last.frames_rejected if last else 0, 'status': last}
