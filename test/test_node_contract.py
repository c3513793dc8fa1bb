"""The node publishes exactly what ``Pipeline.process`` computes on the same frames, bit for bit.

Any node-only transformation (a left/right swap, extra masking, a resize) makes a map differ.
Both sides run the same ONNX file on ONNX Runtime with one thread, so the floats are identical.
"""

from __future__ import annotations

import time
from pathlib import Path

import fixtures_ros
import numpy as np
import pytest
from fixtures_ros import (
    BASELINE,
    FX,
    STEERING_WINDOW,
    camera_info,
    image_message,
    start_harness,
    stop_harness,
)
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.contract import OutputPolicy, disparity_message_values
from mtl_perception.data.frames import procedural_frames
from mtl_perception.model_info import steering_path_for
from mtl_perception.ros.conversions import image_to_numpy
from mtl_perception.ros.node import PerceptionNode
from mtl_perception.runtime import CameraModel, Pipeline, create_backend

ros_context = fixtures_ros.ros_context
tiny_models = fixtures_ros.tiny_models
HEIGHT, WIDTH = 90, 170  # not the model's 64x128: the resize and the rescaling are part of the check
STEREO_INPUTS = {
    "left/image_rect": Image,
    "right/image_rect": Image,
    "left/camera_info": CameraInfo,
    "right/camera_info": CameraInfo,
}
FRAMES = STEERING_WINDOW + 1


def _array(msg: Image) -> np.ndarray:
    return np.array(image_to_numpy(msg, allowed=(msg.encoding,)))


def _reference(model: Path, pairs: list[tuple[np.ndarray, np.ndarray]], policy: OutputPolicy) -> list:
    """The pipeline's results for the same frames, in order (steering needs the history)."""
    backend = create_backend("onnxruntime", model, threads=1)
    steering = create_backend("onnxruntime", steering_path_for(model), threads=1)
    pipeline = Pipeline(
        backend,
        steering_backend=steering,
        policy=policy,
    )
    camera = CameraModel(FX, BASELINE)
    try:
        return [pipeline.process(left, right, camera=camera) for left, right in pairs]
    finally:
        backend.close()
        steering.close()


def test_node_publishes_the_pipeline_maps_bit_for_bit(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    model = tiny_models["stereo"]
    pairs = procedural_frames((HEIGHT, WIDTH), FRAMES)
    # A policy that masks part of every map (medians of the untrained net's own outputs), so any
    # node-side masking difference shows: half the pixels below min_disparity, a depth threshold
    # that makes part of the rest unknown.
    raw = _reference(model, pairs, OutputPolicy())[-1]
    min_disparity = float(np.median(raw.disparity))
    threshold = float(np.median(raw.depth_uncertainty[raw.disparity > min_disparity]))
    policy = OutputPolicy(min_disparity=min_disparity, confidence_threshold=threshold)
    expected = _reference(model, pairs, policy)
    last = expected[-1]
    assert np.isnan(last.disparity).any() and np.isfinite(last.disparity).any()
    assert np.isposinf(last.depth).any() and np.isnan(last.depth).any() and np.isfinite(last.depth).any()
    # The check can see a swap: the same frames with the views exchanged give another disparity.
    swapped = _reference(model, [(right, left) for left, right in pairs], policy)[-1]
    assert not np.array_equal(swapped.disparity, last.disparity, equal_nan=True)

    overrides = [
        Parameter("model_file_path", value=str(model)),
        Parameter("backend", value="onnxruntime"),
        Parameter("threads", value=1),
        Parameter("min_disparity", value=min_disparity),
        Parameter("confidence_threshold", value=threshold),
    ]
    node = PerceptionNode(context=ros_context, parameter_overrides=overrides)
    harness = start_harness(ros_context, node, STEREO_INPUTS)
    try:
        harness.wait_connected(node)
        for _ in range(3):
            harness.publish("left/camera_info", camera_info(WIDTH, HEIGHT))
            harness.publish("right/camera_info", camera_info(WIDTH, HEIGHT, tx=-FX * BASELINE))
            time.sleep(0.05)
        for index, (left, right) in enumerate(pairs):
            stamp = 1_000_000_000 + index * 100_000_000
            harness.publish("left/image_rect", image_message(left, "rgb8", stamp))
            harness.publish("right/image_rect", image_message(right, "rgb8", stamp))
            # One frame at a time: a dropped frame would change the steering history.
            assert harness.wait_for(lambda n=index + 1: len(harness.messages("depth/uncertainty")) >= n)
        assert harness.wait_for(lambda: len(harness.messages("steering")) >= 1)
    finally:
        stop_harness(harness, node)

    def published(topic: str) -> np.ndarray:
        return _array(harness.messages(topic)[-1])

    np.testing.assert_array_equal(published("semantic"), last.semantic)
    np.testing.assert_array_equal(published("semantic/color"), last.semantic_color())
    np.testing.assert_array_equal(published("semantic/uncertainty"), last.semantic_uncertainty)
    np.testing.assert_array_equal(published("semantic/confidence"), last.semantic_confidence)
    np.testing.assert_array_equal(published("depth"), last.depth)
    np.testing.assert_array_equal(published("depth/uncertainty"), last.depth_uncertainty)
    disparity_msg = harness.messages("disparity")[-1]
    np.testing.assert_array_equal(
        _array(disparity_msg.image), disparity_message_values(last.disparity, min_disparity)
    )
    assert disparity_msg.min_disparity == pytest.approx(min_disparity)
    assert disparity_msg.max_disparity == pytest.approx(last.max_disparity)
    assert disparity_msg.f == pytest.approx(FX * last.scale_x) and disparity_msg.t == pytest.approx(BASELINE)
    steering = harness.messages("steering")
    assert len(steering) == FRAMES - STEERING_WINDOW + 1
    assert steering[-1].position[0] == pytest.approx(last.steering, abs=1e-7)
    assert steering[0].position[0] == pytest.approx(expected[STEERING_WINDOW - 1].steering, abs=1e-7)
