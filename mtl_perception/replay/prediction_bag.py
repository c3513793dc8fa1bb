"""The replay's predictions as a rosbag2 rviz can play: the node's output topics next to the input."""

from __future__ import annotations

from pathlib import Path

from mtl_perception.contract import disparity_message_values, to_rgb
from mtl_perception.data import rosbag_io
from mtl_perception.data.labels import colorize
from mtl_perception.replay.bag_source import ReplayFrame
from mtl_perception.replay.evaluation import Prediction

# Output topics under this namespace, named as the live node names them (DESIGN.md, Node topics).
NAMESPACE = "/mtl_perception"


class PredictionBagWriter:
    """Writes each evaluated frame's input image, camera_info and predicted maps at its stamp."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        self.path = Path(path)
        self._writer = rosbag_io.BagWriter(self.path, storage)
        self.frames = 0

    def __enter__(self) -> PredictionBagWriter:
        self._writer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.__exit__(*exc)

    def write(self, frame: ReplayFrame, prediction: Prediction) -> None:
        """Write one frame's outputs (header stamp and optical frame of the input, as the node does)."""
        stamp, frame_id = frame.stamp, frame.frame_id
        write = self._writer.write
        # The input, re-encoded as a raw rgb8 Image so rviz shows it whatever the bag held.
        write(
            rosbag_io.LEFT_IMAGE,
            rosbag_io.image_msg(to_rgb(frame.left, frame.encoding), "rgb8", stamp, frame_id),
            stamp,
        )
        if frame.left_info is not None:
            write(rosbag_io.LEFT_INFO, rosbag_io.camera_info_msg(frame.left_info, stamp), stamp)
        write(
            f"{NAMESPACE}/semantic",
            rosbag_io.image_msg(prediction["semantic"], "mono8", stamp, frame_id),
            stamp,
        )
        write(
            f"{NAMESPACE}/semantic/color",
            rosbag_io.image_msg(colorize(prediction["semantic"]), "rgb8", stamp, frame_id),
            stamp,
        )
        for key, topic in (
            ("semantic_uncertainty", "semantic/uncertainty"),
            ("semantic_confidence", "semantic/confidence"),
            ("depth_uncertainty", "depth/uncertainty"),
        ):
            if key in prediction:
                write(
                    f"{NAMESPACE}/{topic}",
                    rosbag_io.image_msg(prediction[key], "32FC1", stamp, frame_id),
                    stamp,
                )
        if "depth" in prediction:
            write(f"{NAMESPACE}/depth", rosbag_io.depth_msg(prediction["depth"], stamp, frame_id), stamp)
        camera = frame.camera()
        if "disparity" in prediction and camera is not None:
            focal, baseline, _ = camera
            # As the node publishes it: invalid pixels carry min_disparity - 1 (here -1), not NaN.
            values = disparity_message_values(prediction["disparity"], 0.0)
            msg = rosbag_io.disparity_msg(values, stamp, frame_id, focal, baseline)
            write(f"{NAMESPACE}/disparity", msg, stamp)
        if prediction.get("steering") is not None:
            write(
                f"{NAMESPACE}/steering",
                rosbag_io.steering_msg(prediction["steering"], stamp, frame_id),
                stamp,
            )
        self.frames += 1
