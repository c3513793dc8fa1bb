"""rosbag2 reading and writing with `rosbags`: numpy <-> ROS messages, sequence bags of the sim.

Message conversions are plain functions so the replay tools and tests reuse them. Steering is a
``sensor_msgs/msg/JointState`` with ``name=['steering']`` and ``position=[front-wheel angle, rad,
positive = left]``, stamped like the image it belongs to (the node publishes the same).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mtl_perception.contract import ENCODINGS
from mtl_perception.errors import UserError

LEFT_IMAGE = "/stereo/left/image_rect"
RIGHT_IMAGE = "/stereo/right/image_rect"
LEFT_INFO = "/stereo/left/camera_info"
RIGHT_INFO = "/stereo/right/camera_info"
GT_SEMANTIC = "/ground_truth/semantic"
GT_DISPARITY = "/ground_truth/disparity"
GT_DEPTH = "/ground_truth/depth"
GT_STEERING = "/ground_truth/steering"

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DISPARITY = "stereo_msgs/msg/DisparityImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
STEERING_JOINT = "steering"

SEQUENCE_TOPICS: dict[str, str] = {
    LEFT_IMAGE: IMAGE,
    RIGHT_IMAGE: IMAGE,
    LEFT_INFO: CAMERA_INFO,
    RIGHT_INFO: CAMERA_INFO,
    GT_SEMANTIC: IMAGE,
    GT_DISPARITY: DISPARITY,
    GT_DEPTH: IMAGE,
    GT_STEERING: JOINT_STATE,
}


def typestore():
    """The newest ROS 2 typestore rosbags ships (Kilted if present)."""
    store = getattr(Stores, "ROS2_KILTED", Stores.LATEST)
    return get_typestore(store)


TYPES = typestore()


def header(stamp_ns: int, frame_id: str):
    """std_msgs/Header for a stamp in nanoseconds."""
    time = TYPES.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    return TYPES.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def stamp_ns(msg_header: Any) -> int:
    """Nanoseconds of a message header's stamp."""
    return int(msg_header.stamp.sec) * 1_000_000_000 + int(msg_header.stamp.nanosec)


def image_msg(array: np.ndarray, encoding: str, stamp: int, frame_id: str):
    """sensor_msgs/Image from an HxW or HxWxC array (little-endian, dense rows)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding].dtype, ENCODINGS[encoding].channels
    array = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    height, width = array.shape[:2]
    if (array.ndim == 2 and channels != 1) or (array.ndim == 3 and array.shape[2] != channels):
        raise ValueError(f"array of shape {array.shape} does not fit encoding {encoding}")
    return TYPES.types[IMAGE](
        header=header(stamp, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * dtype.itemsize,
        data=np.frombuffer(array.tobytes(), dtype=np.uint8),
    )


def image_to_numpy(msg: Any) -> np.ndarray:
    """HxW or HxWxC array of a sensor_msgs/Image (copied, writable)."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {msg.encoding!r}")
    dtype, channels = ENCODINGS[msg.encoding].dtype, ENCODINGS[msg.encoding].channels
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = row[:, : msg.width * channels * dtype.itemsize].copy().view(dtype)
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return pixels.reshape(shape).astype(dtype.newbyteorder("="))


def camera_info_msg(info: dict[str, Any], stamp: int):
    """sensor_msgs/CameraInfo from a camera_info dict (keys as in calib.json)."""
    roi = TYPES.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return TYPES.types[CAMERA_INFO](
        header=header(stamp, info["header_frame_id"]),
        height=int(info["height"]),
        width=int(info["width"]),
        distortion_model=info["distortion_model"],
        d=np.asarray(info["d"], dtype=np.float64),
        k=np.asarray(info["k"], dtype=np.float64),
        r=np.asarray(info["r"], dtype=np.float64),
        p=np.asarray(info["p"], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def camera_info_to_dict(msg: Any) -> dict[str, Any]:
    """Inverse of ``camera_info_msg``."""
    return {
        "header_frame_id": msg.header.frame_id,
        "width": int(msg.width),
        "height": int(msg.height),
        "distortion_model": msg.distortion_model,
        "d": [float(v) for v in msg.d],
        "k": [float(v) for v in msg.k],
        "r": [float(v) for v in msg.r],
        "p": [float(v) for v in msg.p],
    }


def disparity_msg(
    disparity: np.ndarray,
    stamp: int,
    frame_id: str,
    focal: float,
    baseline: float,
    max_disparity: float | None = None,
):
    """stereo_msgs/DisparityImage (32FC1 pixels, invalid = 0 or NaN) with f, T and the valid range."""
    height, width = disparity.shape
    valid = disparity[np.isfinite(disparity) & (disparity > 0)]
    roi = TYPES.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=height, width=width, do_rectify=False
    )
    return TYPES.types[DISPARITY](
        header=header(stamp, frame_id),
        image=image_msg(disparity.astype(np.float32), "32FC1", stamp, frame_id),
        f=float(focal),
        t=float(baseline),
        valid_window=roi,
        min_disparity=0.0,
        max_disparity=float(
            max_disparity if max_disparity is not None else (valid.max() if valid.size else 0.0)
        ),
        delta_d=1.0 / 256.0,  # the resolution of the KITTI-style ground truth it came from
    )


def depth_msg(depth: np.ndarray, stamp: int, frame_id: str):
    """REP-118 depth image: 32FC1 metres, NaN where unknown (input: 0 = invalid)."""
    depth = depth.astype(np.float32)
    return image_msg(np.where(depth > 0, depth, np.float32(math.nan)), "32FC1", stamp, frame_id)


def steering_msg(angle: float, stamp: int, frame_id: str):
    """The steering contract: JointState name=['steering'], position=[front-wheel angle, rad, left +]."""
    return TYPES.types[JOINT_STATE](
        header=header(stamp, frame_id),
        name=[STEERING_JOINT],
        position=np.array([angle], dtype=np.float64),
        velocity=np.zeros(0, dtype=np.float64),
        effort=np.zeros(0, dtype=np.float64),
    )


def steering_from_msg(msg: Any) -> float:
    """Steering angle of a JointState following the contract."""
    names = list(msg.name)
    if STEERING_JOINT not in names:
        raise ValueError(f"JointState has no {STEERING_JOINT!r} joint (names: {names})")
    return float(msg.position[names.index(STEERING_JOINT)])


def message_to_numpy(msgtype: str, msg: Any) -> Any:
    """Plain-data view: images -> arrays, disparity -> array, camera_info -> dict, steering -> float."""
    if msgtype == IMAGE:
        return image_to_numpy(msg)
    if msgtype == DISPARITY:
        return image_to_numpy(msg.image)
    if msgtype == CAMERA_INFO:
        return camera_info_to_dict(msg)
    if msgtype == JOINT_STATE:
        return steering_from_msg(msg)
    raise ValueError(f"no numpy conversion for {msgtype}")


class BagWriter:
    """Write ROS messages to a rosbag2 (mcap by default) with topics created on first use."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise UserError(f"bag storage must be one of {sorted(plugins)}, got {storage!r}")
        self._writer = Writer(Path(path), version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, stamp: int) -> None:
        """Serialise ``msg`` (CDR) on ``topic`` at log time ``stamp`` (ns)."""
        msgtype = msg.__msgtype__
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=TYPES)
        self._writer.write(self._connections[topic], stamp, TYPES.serialize_cdr(msg, msgtype))


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time: int  # ns
    msg: Any


def read_bag(path: Path, topics: list[str] | None = None) -> Iterator[BagMessage]:
    """Iterate the messages of a rosbag2 (any storage) in log-time order, deserialised."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise UserError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, log_time, raw in reader.messages(connections=connections):
            msg = TYPES.deserialize_cdr(raw, connection.msgtype)
            yield BagMessage(connection.topic, connection.msgtype, log_time, msg)


def write_stereo_frame(
    writer: BagWriter,
    stamp: int,
    left: np.ndarray,
    right: np.ndarray,
    left_info: dict[str, Any],
    right_info: dict[str, Any],
    semantic: np.ndarray | None = None,
    disparity: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    steering: float | None = None,
) -> None:
    """Write one stereo frame: the node's inputs and whatever ground truth is given."""
    left_frame, right_frame = left_info["header_frame_id"], right_info["header_frame_id"]
    writer.write(LEFT_IMAGE, image_msg(left, "rgb8", stamp, left_frame), stamp)
    writer.write(RIGHT_IMAGE, image_msg(right, "rgb8", stamp, right_frame), stamp)
    writer.write(LEFT_INFO, camera_info_msg(left_info, stamp), stamp)
    writer.write(RIGHT_INFO, camera_info_msg(right_info, stamp), stamp)
    if semantic is not None:
        writer.write(GT_SEMANTIC, image_msg(semantic, "mono8", stamp, left_frame), stamp)
    if disparity is not None:
        focal = float(left_info["p"][0])
        baseline = -float(right_info["p"][3]) / float(right_info["p"][0])
        writer.write(GT_DISPARITY, disparity_msg(disparity, stamp, left_frame, focal, baseline), stamp)
    if depth is not None:
        writer.write(GT_DEPTH, depth_msg(depth, stamp, left_frame), stamp)
    if steering is not None:
        writer.write(GT_STEERING, steering_msg(steering, stamp, left_frame), stamp)
