"""One camera stream on the ROS side: keep-latest hand-off, decode, stream, encode, publish.

The subscription callback only stores the newest message (a frame replaced before the worker
took it is counted as dropped), so the executor and the camera pipeline never wait on the model.
The worker thread decodes, runs the camera stream, and publishes masks carrying the input's header.
A frame that cannot be decoded is answered by a throttled error log and a counter; the stream
goes on with the next frame.
"""
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque

import numpy as np

from ditta_ros.stream.base import StreamBase
from ditta_ros.io.image_codec import ImageDecodeError, decode_compressed, decode_image
from ditta_ros.labels import LabelSet


@dataclass
class OutputSettings:
    """What a camera worker publishes; the node updates it when parameters change."""
    color_mask: bool = True
    confidence: bool = False
    confidence_encoding: str = '32FC1'   # 32FC1 (0..1) | mono8 (0..255, as Nav2's layers read)
    max_image_pixels: int = 4096 * 4096


CONFIDENCE_ENCODINGS = ('32FC1', 'mono8')


def confidence_image(confidence, encoding: str) -> np.ndarray:
    """The reliability map [H, W] (0..1) as the confidence image's array: float32 for 32FC1,
    round(255 x) as uint8 for mono8."""
    values = confidence.to('cpu').numpy()
    if encoding == 'mono8':
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return values.astype(np.float32)


@dataclass
class CameraTraffic:
    """Counters and recent timings of one camera (read by status and diagnostics)."""
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    last_error: str = ''
    published_at: Deque[float] = field(default_factory=lambda: deque(maxlen=100))
    latency_s: Deque[float] = field(default_factory=lambda: deque(maxlen=100))
    stage_s: Deque[tuple] = field(default_factory=lambda: deque(maxlen=100))

    def rate_hz(self, now: float) -> float:
        recent = [t for t in self.published_at if now - t <= 5.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def mean_latency_ms(self) -> float:
        return 1000.0 * float(np.mean(self.latency_s)) if self.latency_s else 0.0

    def stage_means_ms(self) -> dict:
        """Mean decode / model / encode+publish time per frame (recent window)."""
        if not self.stage_s:
            return {'decode': 0.0, 'model': 0.0, 'publish': 0.0}
        decode, model, publish = np.mean(np.asarray(self.stage_s), axis=0) * 1000.0
        return {'decode': float(decode), 'model': float(model), 'publish': float(publish)}


class CameraWorker:
    """Keep-latest slot + worker thread for one camera."""

    def __init__(self, stream: StreamBase, labels: LabelSet, compressed: bool,
                 settings: OutputSettings, publish: Callable[..., None],
                 log_error: Callable[[str], None]):
        self.stream = stream
        self.labels = labels
        self.compressed = compressed
        self.settings = settings
        self.publish = publish          # publish(header, label, color, confidence)
        self.log_error = log_error
        self.traffic = CameraTraffic()
        self.last_frame_id = ''
        self._slot = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f'ditta-{stream.name}',
                                        daemon=True)
        self._thread.start()

    def offer(self, msg) -> None:
        """Subscription callback: hand over the newest frame and return at once."""
        now = time.monotonic()
        with self._cond:
            self.traffic.received += 1
            if self._slot is not None:
                self.traffic.dropped += 1
            self._slot = (msg, now)
            self._cond.notify()

    def _take(self):
        with self._cond:
            while self._slot is None and not self._stopping:
                self._cond.wait(0.5)
            if self._stopping:
                return None
            item, self._slot = self._slot, None
            return item

    def _run(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            msg, received = item
            try:
                self._handle(msg, received)
            except ImageDecodeError as exc:
                self._reject(str(exc))
            except Exception as exc:  # keep the camera alive whatever one frame does
                self._reject(f'{exc.__class__.__name__}: {exc}')

    def _reject(self, reason: str) -> None:
        self.traffic.rejected += 1
        self.traffic.last_error = reason
        self.log_error(f'{self.stream.name}: frame rejected: {reason}')

    def _handle(self, msg, received: float) -> None:
        t0 = time.monotonic()
        limit = self.settings.max_image_pixels
        frame = decode_compressed(msg, limit) if self.compressed else decode_image(msg, limit)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.last_frame_id = msg.header.frame_id
        t1 = time.monotonic()
        prediction = self.stream.process(frame, stamp, want_reliability=self.settings.confidence)
        label = prediction.label.to('cpu').numpy().astype(np.uint8) if prediction else None
        t2 = time.monotonic()
        if prediction is not None:
            color = self.labels.colorize(label) if self.settings.color_mask else None
            confidence = None
            if self.settings.confidence and prediction.reliability is not None:
                confidence = confidence_image(prediction.reliability,
                                              self.settings.confidence_encoding)
            self.publish(msg.header, label, color, confidence)
        t3 = time.monotonic()
        self.traffic.processed += 1
        if prediction is not None:
            self.traffic.published_at.append(t3)
            self.traffic.latency_s.append(t3 - received)
            self.traffic.stage_s.append((t1 - t0, t2 - t1, t3 - t2))

    def stop(self, timeout: float = 5.0) -> bool:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()
