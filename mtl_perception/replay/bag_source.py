"""Stereo/mono frames with optional ground truth out of a rosbag2 (sqlite3 or mcap).

Adds to ``rosbag_io`` what replay needs: topic and type checks before anything runs, CompressedImage
decoding (cv2.imdecode), grouping of the per-topic messages into frames by header stamp, and one
clear ``UserError`` for a corrupt, truncated or empty bag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from mtl_perception.contract import INPUT_ENCODINGS
from mtl_perception.data import rosbag_io
from mtl_perception.errors import UserError
from mtl_perception.image_codec import decode_compressed

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (rosbag_io.IMAGE, COMPRESSED_IMAGE)
# A partial frame (some topics of its stamp still missing) is given up after this many newer
# stamps, so a bag with a topic that stops half-way cannot hold every frame in memory.
MAX_PENDING_FRAMES = 16
STORAGE_SUFFIXES = (".mcap", ".db3")
log = logging.getLogger(__name__)


class BagReadError(UserError):
    """The bag cannot be (fully) read: corrupt, truncated, empty, or missing what replay needs."""


def storage_paths(path: Path) -> list[Path]:
    """What to open with rosbags' ``Reader``, in recording order: a bare storage file itself, the
    storage files a bag directory's metadata.yaml lists, or the directory when they are compressed.

    rosbags' directory reader pairs metadata.yaml's topics with the storage's channels by type *and*
    QoS, so a bag whose metadata QoS differs from its mcap channels reads as empty; a storage file
    describes its own channels, so it is read directly wherever it can be.
    """
    if path.is_file():
        return [path]
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    if str(info.get("compression_mode") or "none").lower() != "none":
        return [path]
    return [path / PurePath(name).name for name in info["relative_file_paths"]]


@dataclass(frozen=True)
class ReplayTopics:
    """Topic names read from the bag; defaults are those the generator writes."""

    left: str = rosbag_io.LEFT_IMAGE
    right: str = rosbag_io.RIGHT_IMAGE
    left_info: str = rosbag_io.LEFT_INFO
    right_info: str = rosbag_io.RIGHT_INFO
    semantic: str = rosbag_io.GT_SEMANTIC
    disparity: str = rosbag_io.GT_DISPARITY
    depth: str = rosbag_io.GT_DEPTH
    steering: str = rosbag_io.GT_STEERING

    def expected_types(self, stereo: bool) -> dict[str, tuple[str, tuple[str, ...]]]:
        """role -> (topic, accepted message types) for the topics a ``stereo``/mono replay reads."""
        roles = {
            "left": (self.left, IMAGE_TYPES),
            "left_info": (self.left_info, (rosbag_io.CAMERA_INFO,)),
            "semantic": (self.semantic, IMAGE_TYPES),
            "depth": (self.depth, (rosbag_io.IMAGE,)),
            "steering": (self.steering, (rosbag_io.JOINT_STATE,)),
        }
        if stereo:
            roles["right"] = (self.right, IMAGE_TYPES)
            roles["right_info"] = (self.right_info, (rosbag_io.CAMERA_INFO,))
            roles["disparity"] = (self.disparity, (rosbag_io.DISPARITY,))
        return roles


GROUND_TRUTH_ROLES = ("semantic", "disparity", "depth", "steering")


@dataclass
class ReplayFrame:
    """One input frame (stereo pair or mono image) with the ground truth recorded for its stamp."""

    index: int
    stamp: int  # header stamp, ns
    log_time: int  # bag log time of the left image, ns (replay pacing)
    left: np.ndarray  # HxWx3 (or HxW mono8) uint8
    encoding: str  # of left/right, as the pipeline names it
    right: np.ndarray | None = None
    left_info: dict[str, Any] | None = None
    right_info: dict[str, Any] | None = None
    semantic: np.ndarray | None = None  # uint8 class ids, 255 = ignore
    disparity: np.ndarray | None = None  # float32 pixels, 0 = invalid
    depth: np.ndarray | None = None  # float32 metres, 0 = invalid
    steering: float | None = None  # radians, positive = left
    frame_id: str = ""

    @property
    def has_ground_truth(self) -> bool:
        return any(getattr(self, role) is not None for role in GROUND_TRUTH_ROLES)

    def camera(self) -> tuple[float, float, float] | None:
        """(fx, baseline, principal offset) of the left image from the camera_infos (P[0,3] =
        -fx * B; offset = right P[0,2] - left P[0,2]), if known: the pipeline's CameraModel."""
        if self.left_info is None:
            return None
        fx = float(self.left_info["p"][0])
        if self.right_info is None or float(self.right_info["p"][0]) == 0.0:
            return fx, 0.0, 0.0
        right = self.right_info["p"]
        return fx, -float(right[3]) / float(right[0]), float(right[2]) - float(self.left_info["p"][2])


def decode_image(msgtype: str, msg: Any) -> tuple[np.ndarray, str]:
    """(array, encoding) of a sensor_msgs Image or CompressedImage (decoded as BGR or mono)."""
    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed(msg.data, msg.format)
    return rosbag_io.image_to_numpy(msg), msg.encoding


@dataclass
class _Partial:
    stamp: int
    log_time: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


class BagSource:
    """Checked access to a replay bag: ``frames()`` yields ``ReplayFrame`` in stamp order.

    Raises ``BagReadError`` on open (not a bag, unreadable, a required topic missing or of the wrong
    type, no input messages) and from ``frames()`` when the data turns out corrupt part-way.
    """

    def __init__(self, path: str | Path, topics: ReplayTopics | None = None, stereo: bool = True) -> None:
        self.path = Path(path)
        self.topics = topics or ReplayTopics()
        self.stereo = stereo
        if not self.path.exists():
            raise BagReadError(f"bag not found: {self.path}")
        if self.path.is_file() and self.path.parent.joinpath("metadata.yaml").is_file():
            self.path = self.path.parent  # the .mcap/.db3 file inside a bag directory: read the bag
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:
            raise BagReadError(
                f"{self.path} is neither a rosbag2 directory nor a storage file "
                f"({' or '.join(STORAGE_SUFFIXES)})"
            )
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagReadError(
                f"{self.path} is not a rosbag2 directory (no metadata.yaml); pass the bag folder "
                f"or one {' or '.join(STORAGE_SUFFIXES)} file"
            )
        try:
            self.storages = storage_paths(self.path)
            available: dict[str, tuple[str, int]] = {}
            for storage in self.storages:
                with Reader(storage) as reader:
                    for c in reader.connections:
                        msgtype, count = available.get(c.topic, (c.msgtype, 0))
                        available[c.topic] = (msgtype, count + c.msgcount)
        except Exception as exc:  # rosbags raises ReaderError and storage-specific errors
            raise BagReadError(f"cannot open bag {self.path} (corrupt or unsupported): {exc}") from exc
        self.available = available
        self.roles = self._check_topics(available)
        self.frame_count = available[self.topics.left][1]
        if self.frame_count == 0:
            raise BagReadError(f"bag {self.path} has no messages on {self.topics.left}; nothing to replay")

    def topics_report(self) -> str:
        """The topics a frame needs and those the bag has, for an error that says why nothing matched."""
        needed = [self.topics.left] + ([self.topics.right] if self.stereo else [])
        held = ", ".join(f"{t} ({m}, {n} messages)" for t, (m, n) in sorted(self.available.items()))
        return (
            f"a frame needs {' and '.join(needed)} with the same header stamp; "
            f"the bag has {held or 'no topics'}"
        )

    def _check_topics(self, available: dict[str, tuple[str, int]]) -> dict[str, tuple[str, str]]:
        """role -> (topic, msgtype) of the topics present; required inputs must be there."""
        required = ("left", "left_info") + (("right", "right_info") if self.stereo else ())
        roles: dict[str, tuple[str, str]] = {}
        for role, (topic, accepted) in self.topics.expected_types(self.stereo).items():
            if topic not in available:
                if role in required:
                    option = f"--{role.replace('_', '-')}-topic"
                    raise BagReadError(
                        f"bag {self.path} has no topic {topic} ({role}); topics in the bag: "
                        f"{', '.join(sorted(available)) or 'none'} (set it with {option})"
                    )
                continue
            msgtype = available[topic][0]
            if msgtype not in accepted:
                raise BagReadError(
                    f"bag {self.path}: topic {topic} ({role}) is {msgtype}, expected {' or '.join(accepted)}"
                )
            roles[role] = (topic, msgtype)
        return roles

    @property
    def ground_truth(self) -> tuple[str, ...]:
        """Ground-truth roles the bag holds."""
        return tuple(role for role in GROUND_TRUTH_ROLES if role in self.roles)

    def frames(self) -> Iterator[ReplayFrame]:
        """Frames in the bag's order; camera_info is the latest seen (it may be latched once)."""
        by_topic = {topic: (role, msgtype) for role, (topic, msgtype) in self.roles.items()}
        image_roles = ("left", "right") if self.stereo else ("left",)
        wanted = set(image_roles) | set(self.ground_truth)
        infos: dict[str, dict[str, Any]] = {}
        pending: dict[int, _Partial] = {}
        emitted = 0
        try:
            for connection, log_time, raw in self._messages(by_topic):
                role, msgtype = by_topic[connection.topic]
                msg = rosbag_io.TYPES.deserialize_cdr(raw, msgtype)
                if role in ("left_info", "right_info"):
                    infos[role] = rosbag_io.camera_info_to_dict(msg)
                    continue
                stamp = rosbag_io.stamp_ns(msg.header)
                partial = pending.setdefault(stamp, _Partial(stamp))
                try:
                    partial.fields[role] = self._convert(role, msgtype, msg)
                except ValueError as exc:  # an encoding or layout replay cannot read
                    raise BagReadError(
                        f"bag {self.path}: {connection.topic} at stamp {stamp}: {exc}"
                    ) from exc
                if role == "left":
                    partial.log_time = log_time
                    partial.fields["frame_id"] = msg.header.frame_id
                for ready in self._ready(pending, wanted, image_roles):
                    yield self._frame(emitted, ready, infos)
                    emitted += 1
        except UserError:
            raise
        except Exception as exc:  # rosbags/mcap/sqlite raise many types for damaged files
            raise BagReadError(
                f"bag {self.path} is corrupt or truncated after {emitted} frame(s): {exc}"
            ) from exc
        for partial in sorted(pending.values(), key=lambda p: p.stamp):
            if all(role in partial.fields for role in image_roles):
                yield self._frame(emitted, partial, infos)
                emitted += 1
        if emitted == 0:
            raise BagReadError(f"bag {self.path}: no frame to replay: {self.topics_report()}")

    def _messages(self, by_topic: dict[str, tuple[str, str]]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time, raw CDR) of the wanted topics, storage file after storage file."""
        for storage in self.storages:
            with Reader(storage) as reader:
                connections = [c for c in reader.connections if c.topic in by_topic]
                if connections:
                    yield from reader.messages(connections=connections)

    def _ready(
        self, pending: dict[int, _Partial], wanted: set[str], image_roles: tuple[str, ...]
    ) -> list[_Partial]:
        """Complete frames, plus the oldest incomplete ones beyond ``MAX_PENDING_FRAMES``."""
        ready = [p for p in pending.values() if wanted <= p.fields.keys()]
        overflow = sorted(pending.values(), key=lambda p: p.stamp)[
            : max(0, len(pending) - MAX_PENDING_FRAMES)
        ]
        out = []
        for partial in sorted({id(p): p for p in ready + overflow}.values(), key=lambda p: p.stamp):
            del pending[partial.stamp]
            if all(role in partial.fields for role in image_roles):
                out.append(partial)
            else:
                log.warning("stamp %d has no %s image; skipped", partial.stamp, " and ".join(image_roles))
        return out

    def _convert(self, role: str, msgtype: str, msg: Any) -> Any:
        if role in ("left", "right"):
            image, encoding = decode_image(msgtype, msg)
            if encoding not in INPUT_ENCODINGS or image.dtype != np.uint8:
                # The node refuses these too (one table: mtl_perception.contract).
                raise ValueError(
                    f"{role} image encoding {encoding!r} is not a camera encoding the models read; "
                    f"expected one of {', '.join(INPUT_ENCODINGS)}"
                )
            return image, encoding
        if role == "semantic":
            return decode_image(msgtype, msg)[0]
        if role == "disparity":
            disparity = rosbag_io.image_to_numpy(msg.image).astype(np.float32)
            # DisparityImage marks invalid pixels below min_disparity (or NaN/inf); metrics want 0.
            invalid = (
                ~np.isfinite(disparity) | (disparity < max(float(msg.min_disparity), 0.0)) | (disparity <= 0)
            )
            disparity[invalid] = 0.0
            return disparity
        if role == "depth":
            depth = rosbag_io.image_to_numpy(msg).astype(np.float32)
            if msg.encoding == "mono16":  # REP-118 16UC1 depth is millimetres
                depth = depth / 1000.0
            depth[~np.isfinite(depth)] = 0.0
            return depth
        return rosbag_io.steering_from_msg(msg)

    def _frame(self, index: int, partial: _Partial, infos: dict[str, dict[str, Any]]) -> ReplayFrame:
        fields = partial.fields
        left, encoding = fields["left"]
        right = fields.get("right")
        if right is not None and right[1] != encoding:
            raise BagReadError(
                f"bag {self.path}: stamp {partial.stamp} left is {encoding} but right is {right[1]}"
            )
        return ReplayFrame(
            index=index,
            stamp=partial.stamp,
            log_time=partial.log_time,
            left=left,
            encoding=encoding,
            right=None if right is None else right[0],
            left_info=infos.get("left_info"),
            right_info=infos.get("right_info"),
            semantic=fields.get("semantic"),
            disparity=fields.get("disparity"),
            depth=fields.get("depth"),
            steering=fields.get("steering"),
            frame_id=fields.get("frame_id", ""),
        )
