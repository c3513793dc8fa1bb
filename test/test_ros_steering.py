"""Steering over real DDS: the node's window follows the header stamps, and what it publishes is
exactly what ``Pipeline.process`` computes for the same frames and stamps."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import fixtures_ros
import pytest
import torch
from fixtures_ros import BASELINE, FX, camera_info, image_message, start_harness, stop_harness
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.data.frames import procedural_frames
from mtl_perception.export.onnx_export import export_steering_head
from mtl_perception.model_info import read_model_info, steering_path_for
from mtl_perception.networks import SteeringHead
from mtl_perception.ros.node import PerceptionNode
from mtl_perception.runtime import CameraModel, Pipeline, create_backend

ros_context = fixtures_ros.ros_context
tiny_models = fixtures_ros.tiny_models
HEIGHT, WIDTH = 96, 160
WINDOW = 4
STEREO_INPUTS = {
    "left/image_rect": Image,
    "right/image_rect": Image,
    "left/camera_info": CameraInfo,
    "right/camera_info": CameraInfo,
}
PAIRS = procedural_frames((HEIGHT, WIDTH), 5)
START_NS, PERIOD_NS = 1_000_000_000, 100_000_000
# Frame ticks (x 100 ms): tick 5 never comes (a dropped camera frame), then the bag loops to tick 0.
TICKS = [0, 1, 2, 3, 4, 6, 7, 8, 9, 0, 1, 2, 3]
# Hand-derived: steering once WINDOW consecutive frames are in, again WINDOW frames after each restart.
STEERING_AT = [3, 4, 8, 12]  # indices into TICKS


def _stamp_ns(index: int) -> int:
    return START_NS + TICKS[index] * PERIOD_NS


def _model_with_window(directory: Path, model: Path) -> Path:
    """A copy of the tiny stereo model with a random steering head over WINDOW frames beside it."""
    path = directory / "steering_window.onnx"
    shutil.copy(model, path)
    torch.manual_seed(3)
    head = SteeringHead(read_model_info(model).embedding_dim, window=WINDOW)
    export_steering_head(head, steering_path_for(path))
    return path


def _reference(model: Path, frames: list[int], stamps: list[float | None]) -> list[float | None]:
    """Pipeline steering for the pairs ``frames`` with ``stamps`` (seconds), in order."""
    backend = create_backend("onnxruntime", model, threads=1)
    steering = create_backend("onnxruntime", steering_path_for(model), threads=1)
    pipeline = Pipeline(backend, steering_backend=steering)
    camera = CameraModel(FX, BASELINE)
    try:
        return [
            pipeline.process(*PAIRS[i % len(PAIRS)], camera=camera, stamp=stamp).steering
            for i, stamp in zip(frames, stamps, strict=True)
        ]
    finally:
        backend.close()
        steering.close()


def test_steering_waits_for_consecutive_frames_and_equals_the_pipeline(
    ros_context: Context, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model = _model_with_window(tmp_path, tiny_models["stereo"])
    indices = list(range(len(TICKS)))
    expected = _reference(model, indices, [_stamp_ns(i) / 1e9 for i in indices])
    assert [i for i, value in enumerate(expected) if value is not None] == STEERING_AT
    # The window after the gap is frames 5..8 alone: a pipeline given only those agrees.
    assert expected[8] == _reference(model, [5, 6, 7, 8], [None] * 4)[-1]

    overrides = [
        Parameter("model_file_path", value=str(model)),
        Parameter("backend", value="onnxruntime"),
        Parameter("threads", value=1),
    ]
    node = PerceptionNode(context=ros_context, parameter_overrides=overrides)
    harness = start_harness(ros_context, node, STEREO_INPUTS)
    try:
        harness.wait_connected(node)
        for _ in range(3):
            harness.publish("left/camera_info", camera_info(WIDTH, HEIGHT))
            harness.publish("right/camera_info", camera_info(WIDTH, HEIGHT, tx=-FX * BASELINE))
            time.sleep(0.05)
        for index in indices:
            left, right = PAIRS[index % len(PAIRS)]
            harness.publish("left/image_rect", image_message(left, "rgb8", _stamp_ns(index)))
            harness.publish("right/image_rect", image_message(right, "rgb8", _stamp_ns(index)))
            # One frame at a time, so the node drops none (a drop would restart its window too).
            assert harness.wait_for(lambda n=index + 1: len(harness.messages("semantic")) >= n)
        assert harness.wait_for(lambda: len(harness.messages("steering/marker")) >= len(STEERING_AT))
        assert node.statistics.frames_dropped == 0

        def diagnostics() -> dict[str, str]:
            status = harness.latest_status()
            return {kv.key: kv.value for kv in status.values} if status is not None else {}

        assert harness.wait_for(lambda: diagnostics().get("steering published") == "4")
        values = diagnostics()
        assert values["steering window restarts"] == "2"
        assert values["steering last restart"] == "stamp went back 0.900 s"

        # The tolerance is a live parameter; a bad value is refused.
        assert node.set_parameters([Parameter("steering_max_gap_seconds", value=0.25)])[0].successful
        assert node._pipeline.steering_max_gap == 0.25
        assert not node.set_parameters([Parameter("steering_max_gap_seconds", value=-1.0)])[0].successful
        assert node.set_parameters([Parameter("steering_max_gap_seconds", value=0.0)])[0].successful
        assert node._pipeline.steering_max_gap is None
    finally:
        stop_harness(harness, node)

    steering = harness.messages("steering")
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in steering]
    assert stamps == [_stamp_ns(i) for i in STEERING_AT]
    marker_stamps = [
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in harness.messages("steering/marker")
    ]
    assert marker_stamps == stamps
    # Same ONNX files, one thread each: the floats are identical.
    assert [m.position[0] for m in steering] == [expected[i] for i in STEERING_AT]
    assert all(m.name == ["steering"] for m in steering)


@pytest.mark.parametrize("value", [-0.1, 61.0])
def test_an_out_of_range_gap_is_refused_at_start(
    ros_context: Context, tiny_models: dict[str, Path], value: float
) -> None:
    from mtl_perception.errors import UserError

    overrides = [
        Parameter("model_file_path", value=str(tiny_models["stereo"])),
        Parameter("backend", value="onnxruntime"),
        Parameter("steering_max_gap_seconds", value=value),
    ]
    with pytest.raises(UserError, match="steering_max_gap_seconds"):
        PerceptionNode(context=ros_context, parameter_overrides=overrides)
