"""rosbag2 files (MCAP or sqlite3) of a camera sequence with its ground truth, via `rosbags`.

A sequence bag holds the camera frames (sensor_msgs/Image rgb8 on /camera/image_raw, or
sensor_msgs/CompressedImage on /camera/image_raw/compressed) and, stamped identically, the
ground truth as sensor_msgs/Image: Cityscapes label ids (mono8) on /ground_truth/label_ids and
instance ids (mono16) on /ground_truth/instance_ids, for the frames that have them.
"""
from pathlib import Path
from typing import Iterable, Optional, Tuple

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ditta_ros.io.image_codec import decode_compressed, decode_image, encode_compressed

IMAGE_TOPIC = '/camera/image_raw'
LABEL_TOPIC = '/ground_truth/label_ids'
INSTANCE_TOPIC = '/ground_truth/instance_ids'
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_Image = TYPESTORE.types['sensor_msgs/msg/Image']
_CompressedImage = TYPESTORE.types['sensor_msgs/msg/CompressedImage']
_Header = TYPESTORE.types['std_msgs/msg/Header']
_Time = TYPESTORE.types['builtin_interfaces/msg/Time']

# (stamp in ns, RGB frame, label ids or None, instance ids or None)
BagFrame = Tuple[int, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]


def _header(stamp_ns: int, frame_id: str):
    return _Header(stamp=_Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                   frame_id=frame_id)


def _raw_image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    array = np.ascontiguousarray(array)
    return _Image(header=_header(stamp_ns, frame_id), height=array.shape[0],
                  width=array.shape[1], encoding=encoding, is_bigendian=0,
                  step=array[0].nbytes, data=array.reshape(-1).view(np.uint8))


def write_sequence_bag(path, frames: Iterable[BagFrame], storage: str = 'mcap',
                       compressed: Optional[str] = None, frame_id: str = 'camera') -> int:
    """Write one sequence; returns the number of frames. `compressed`: None, 'jpeg' or 'png'."""
    if storage not in STORAGES:
        raise ValueError(f'unknown bag storage {storage!r}; choose mcap or sqlite3')
    count = 0
    with Writer(Path(path), version=9, storage_plugin=STORAGES[storage]) as writer:
        image_type = _CompressedImage if compressed else _Image
        image_conn = writer.add_connection(IMAGE_TOPIC + ('/compressed' if compressed else ''),
                                           image_type.__msgtype__, typestore=TYPESTORE)
        label_conn = writer.add_connection(LABEL_TOPIC, _Image.__msgtype__, typestore=TYPESTORE)
        inst_conn = writer.add_connection(INSTANCE_TOPIC, _Image.__msgtype__,
                                          typestore=TYPESTORE)
        for stamp_ns, rgb, label_ids, instance_ids in frames:
            if compressed:
                msg = _CompressedImage(header=_header(stamp_ns, frame_id), format=compressed,
                                       data=np.frombuffer(encode_compressed(rgb, compressed),
                                                          np.uint8))
            else:
                msg = _raw_image(rgb, 'rgb8', stamp_ns, frame_id)
            writer.write(image_conn, stamp_ns, TYPESTORE.serialize_cdr(msg, image_type.__msgtype__))
            if label_ids is not None:
                writer.write(label_conn, stamp_ns, TYPESTORE.serialize_cdr(
                    _raw_image(label_ids.astype(np.uint8), 'mono8', stamp_ns, frame_id),
                    _Image.__msgtype__))
            if instance_ids is not None:
                writer.write(inst_conn, stamp_ns, TYPESTORE.serialize_cdr(
                    _raw_image(instance_ids.astype(np.uint16), 'mono16', stamp_ns, frame_id),
                    _Image.__msgtype__))
            count += 1
    return count


def _mono(msg) -> np.ndarray:
    dtype = np.uint16 if msg.encoding == 'mono16' else np.uint8
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width * np.dtype(dtype).itemsize].view(dtype).copy()


def read_sequence_bag(path) -> Tuple[list, list, dict, dict, str]:
    """(stamps ns, RGB frames, {index: label ids}, {index: instance ids}, frame_id)."""
    stamps, frames, labels_by_stamp, instances_by_stamp = [], [], {}, {}
    frame_id = ''
    with Reader(Path(path)) as reader:
        topics = {c.topic: c for c in reader.connections}
        image_conn = topics.get(IMAGE_TOPIC) or topics.get(IMAGE_TOPIC + '/compressed')
        if image_conn is None:
            raise ValueError(f'{path}: no {IMAGE_TOPIC} or {IMAGE_TOPIC}/compressed topic '
                             f'(topics: {", ".join(topics)})')
        for conn, _, raw in reader.messages():
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if conn is image_conn:
                frames.append(decode_compressed(msg) if 'Compressed' in conn.msgtype
                              else np.array(decode_image(msg)))
                stamps.append(stamp)
                frame_id = msg.header.frame_id
            elif conn.topic == LABEL_TOPIC:
                labels_by_stamp[stamp] = _mono(msg)
            elif conn.topic == INSTANCE_TOPIC:
                instances_by_stamp[stamp] = _mono(msg)
    order = np.argsort(stamps, kind='stable')
    stamps = [stamps[i] for i in order]
    frames = [frames[i] for i in order]
    index = {s: i for i, s in enumerate(stamps)}
    labels = {index[s]: v for s, v in labels_by_stamp.items() if s in index}
    instances = {index[s]: v for s, v in instances_by_stamp.items() if s in index}
    return stamps, frames, labels, instances, frame_id
