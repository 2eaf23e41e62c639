"""Run the built node as a separate process and talk to it over real DDS (loopback only).

The node executable is the one the build installed (lib/ditta_ros/ditta_node under a prefix of
AMENT_PREFIX_PATH), started with a params file, as `ros2 run` would start it.
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

ROOT = Path(__file__).resolve().parents[1]


def dds_environment() -> Dict[str, str]:
    """Keep test traffic on this machine, in a domain of this test run."""
    env = {
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'FASTDDS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' / 'fastdds_localhost.xml'),
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }
    if 'DITTA_TEST_DOMAIN_ID' not in os.environ:
        os.environ['DITTA_TEST_DOMAIN_ID'] = str(10 + os.getpid() % 200)
    env['ROS_DOMAIN_ID'] = os.environ['DITTA_TEST_DOMAIN_ID']
    return env


def node_executable() -> Optional[Path]:
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'lib' / 'ditta_ros' / 'ditta_node'
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

    def __init__(self, tmp_path: Path, params: Dict[str, object], name: str = 'ditta'):
        exe = node_executable()
        if exe is None:
            raise RuntimeError('ditta_node is not installed; run scripts/setup.sh first')
        self.params_file = tmp_path / f'{name}_params.yaml'
        self.params_file.write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(params)}}))
        self.log_file = tmp_path / f'{name}.log'
        env = dict(os.environ)
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
                raise AssertionError(f'node exited ({self.proc.returncode}) before {text!r}:\n{out}')
            time.sleep(0.1)
        raise AssertionError(f'{text!r} not in node log after {timeout} s:\n{self.log()}')

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
                raise AssertionError(f'node did not exit within {timeout} s of {sig}:\n'
                                     f'{self.log()}')
        self._log.close()
        return self.proc.returncode


class Client:
    """An rclpy node in the test process, spun by a background thread."""

    def __init__(self, name: str = 'ditta_test_client'):
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
            raise AssertionError(f'service {name} not available')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not future.done():
            raise AssertionError(f'service {name} did not answer in {timeout} s')
        return future.result()


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = '') -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')


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
