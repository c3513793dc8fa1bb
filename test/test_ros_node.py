"""The perception node over real DDS: best-effort inputs, reliable outputs, every topic checked."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import fixtures_ros
import numpy as np
import psutil
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from fixtures_ros import (
    BASELINE,
    FRAME_ID,
    FX,
    STEERING_WINDOW,
    WAIT_S,
    RosHarness,
    camera_info,
    image_message,
    stamped_header,
    start_harness,
    stop_harness,
)
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from mtl_perception.data.frames import procedural_frames
from mtl_perception.errors import UserError
from mtl_perception.ros.conversions import image_to_numpy
from mtl_perception.ros.node import PerceptionNode
from mtl_perception.runtime import CameraModel, create_backend
from mtl_perception.runtime.pipeline import Pipeline, PipelineResult

ros_context = fixtures_ros.ros_context  # pytest fixtures shared with other ROS test modules
tiny_models = fixtures_ros.tiny_models
HEIGHT, WIDTH = 96, 160  # input images; the tiny models run at 64x128
STEREO_INPUTS = {
    "left/image_rect": Image,
    "right/image_rect": Image,
    "left/camera_info": CameraInfo,
    "right/camera_info": CameraInfo,
}
MONO_INPUTS = {"image_rect": Image, "camera_info": CameraInfo}
PAIRS = procedural_frames((HEIGHT, WIDTH), 3)


def as_array(msg: Image) -> np.ndarray:
    return image_to_numpy(msg, allowed=(msg.encoding,))


@contextlib.contextmanager
def running_node(
    context: Context, model: Path, inputs: dict[str, type], *, connect: bool = True, **params: object
) -> Iterator[tuple[PerceptionNode, RosHarness]]:
    """The node and a probe; ``connect=False`` skips waiting for the inputs to match (QoS tests)."""
    overrides = [Parameter("model_file_path", value=str(model)), Parameter("backend", value="onnxruntime")]
    overrides += [Parameter(name, value=value) for name, value in params.items()]
    node = PerceptionNode(context=context, parameter_overrides=overrides)
    harness = start_harness(context, node, inputs)
    try:
        if connect:
            harness.wait_connected(node)
        yield node, harness
    finally:
        stop_harness(harness, node)


def send_camera_info(harness: RosHarness, width: int = WIDTH, height: int = HEIGHT) -> None:
    """Publish camera_info a few times (best effort) so the node has cached it before images."""
    for _ in range(3):
        if "image_rect" in harness.publishers:
            harness.publish("camera_info", camera_info(width, height))
        else:
            harness.publish("left/camera_info", camera_info(width, height))
            harness.publish("right/camera_info", camera_info(width, height, tx=-FX * BASELINE))
        time.sleep(0.05)


def send_pair(harness: RosHarness, stamp_ns: int, index: int = 0, encoding: str = "rgb8") -> None:
    left, right = PAIRS[index % len(PAIRS)]
    harness.publish("left/image_rect", image_message(left, encoding, stamp_ns))
    harness.publish("right/image_rect", image_message(right, encoding, stamp_ns))


def wait_outputs(harness: RosHarness, topic: str, count: int, timeout_s: float = WAIT_S) -> list:
    assert harness.wait_for(lambda: len(harness.messages(topic)) >= count, timeout_s), (
        f"expected {count} messages on {topic}, got {len(harness.messages(topic))}"
    )
    return harness.messages(topic)


def test_stereo_outputs_headers_sizes_and_geometry(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (_node, harness):
        send_camera_info(harness)
        stamps = [1_000_000_000 + i * 100_000_000 for i in range(STEERING_WINDOW + 1)]
        for index, stamp in enumerate(stamps):
            send_pair(harness, stamp, index)
            wait_outputs(harness, "semantic", index + 1)
        for topic in ("semantic", "semantic/color", "semantic/uncertainty", "depth", "depth/uncertainty"):
            msg = wait_outputs(harness, topic, len(stamps))[-1]
            assert (msg.height, msg.width) == (HEIGHT, WIDTH), topic
            assert msg.header.frame_id == FRAME_ID
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamps[-1]
        encodings = {t: harness.messages(t)[-1].encoding for t in ("semantic", "semantic/color", "depth")}
        assert encodings == {"semantic": "mono8", "semantic/color": "rgb8", "depth": "32FC1"}
        assert as_array(harness.messages("semantic")[-1]).max() < 10  # class ids of the 10-class table

        disparity_msg = wait_outputs(harness, "disparity", len(stamps))[-1]
        assert disparity_msg.header.frame_id == FRAME_ID
        assert disparity_msg.f == pytest.approx(FX) and disparity_msg.t == pytest.approx(BASELINE)
        assert disparity_msg.delta_d == pytest.approx(1 / 16)
        assert disparity_msg.max_disparity == pytest.approx(16 * WIDTH / 128)  # model range, rescaled
        disparity = as_array(disparity_msg.image)
        depth = as_array(harness.messages("depth")[-1])
        valid = disparity >= disparity_msg.min_disparity
        assert valid.any()
        np.testing.assert_allclose(depth[valid], FX * BASELINE / disparity[valid], rtol=1e-4)
        assert np.isnan(depth[~valid]).all()

        info = harness.messages("depth/camera_info")[-1]
        assert (info.width, info.height) == (WIDTH, HEIGHT) and info.k[0] == pytest.approx(FX)

        steering = wait_outputs(harness, "steering", 1)[-1]
        assert steering.name == ["steering"] and math.isfinite(steering.position[0])
        assert wait_outputs(harness, "steering/marker", 1)[-1].header.frame_id == FRAME_ID
        status = wait_outputs(harness, "/diagnostics", 1)[-1].status[0]
        assert {kv.key: kv.value for kv in status.values}["backend"] == "onnxruntime"


def test_model_resolution_scales_camera_info(ros_context: Context, tiny_models: dict[str, Path]) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS, output_resolution="model") as (
        _node,
        harness,
    ):
        send_camera_info(harness)
        send_pair(harness, 5_000_000_000)
        depth = wait_outputs(harness, "depth", 1)[-1]
        info = wait_outputs(harness, "depth/camera_info", 1)[-1]
        disparity_msg = wait_outputs(harness, "disparity", 1)[-1]
    assert (depth.width, depth.height) == (128, 64) == (info.width, info.height)
    assert info.k[0] == pytest.approx(FX * 128 / WIDTH) and info.k[4] == pytest.approx(FX * 64 / HEIGHT)
    assert disparity_msg.f == pytest.approx(FX * 128 / WIDTH)
    assert disparity_msg.max_disparity == pytest.approx(16.0)


def test_semantic_color_is_computed_only_while_subscribed(
    ros_context: Context, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    colorized: list[int] = []
    original = PipelineResult.semantic_color
    monkeypatch.setattr(PipelineResult, "semantic_color", lambda self: colorized.append(1) or original(self))
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        send_pair(harness, 1)
        wait_outputs(harness, "semantic/color", 1)
        assert len(colorized) == 1
        color = next(s for s in harness.probe.subscriptions if s.topic_name.endswith("semantic/color"))
        harness.probe.destroy_subscription(color)
        assert harness.wait_for(lambda: node.count_subscribers("semantic/color") == 0)
        for stamp in (2, 3):  # one at a time: the node would skip a frame sent while it is busy
            send_pair(harness, stamp)
            wait_outputs(harness, "semantic", stamp)
    assert len(colorized) == 1
    assert len(harness.messages("semantic/color")) == 1


def test_mono_node_publishes_metric_depth(ros_context: Context, tiny_models: dict[str, Path]) -> None:
    with running_node(ros_context, tiny_models["mono"], MONO_INPUTS) as (node, harness):
        assert node.mode == "mono"
        send_camera_info(harness)
        harness.publish("image_rect", image_message(PAIRS[0][0][:, :, ::-1], "bgr8", 2_000_000_000))
        depth = wait_outputs(harness, "depth", 1)[-1]
        info = wait_outputs(harness, "depth/camera_info", 1)[-1]
        assert wait_outputs(harness, "depth/uncertainty", 1)[-1].encoding == "32FC1"
        assert harness.messages("disparity") == []
    values = as_array(depth)
    assert depth.encoding == "32FC1" and values.shape == (HEIGHT, WIDTH)
    assert np.all(np.isnan(values) | (values > 0))
    assert (info.width, info.height) == (WIDTH, HEIGHT)


def _bad_inputs(harness: RosHarness) -> list[tuple[str, object]]:
    """(expected reason, action publishing a bad frame) for each kind of bad input."""
    left, right = PAIRS[0]

    def pair(left_msg: Image, right_msg: Image) -> None:
        harness.publish("left/image_rect", left_msg)
        harness.publish("right/image_rect", right_msg)

    def with_camera_info(left_info: CameraInfo, right_info: CameraInfo, stamp_ns: int) -> None:
        harness.publish("left/camera_info", left_info)
        harness.publish("right/camera_info", right_info)
        time.sleep(0.1)  # best effort on separate topics: let the info land before the images
        send_pair(harness, stamp_ns)

    truncated = image_message(left, "rgb8", 13)
    truncated.data = truncated.data[:100]
    empty = image_message(left, "rgb8", 14)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    zero_fx = camera_info(WIDTH, HEIGHT, fx=0.0)
    good_right = camera_info(WIDTH, HEIGHT, tx=-FX * BASELINE)
    nan_right = camera_info(WIDTH, HEIGHT, tx=math.nan)
    return [
        ("unsupported encoding", lambda: pair(_as_16bit(11), _as_16bit(11))),
        (
            "differ in size",
            lambda: pair(image_message(left, "rgb8", 12), image_message(right[:-2], "rgb8", 12)),
        ),
        ("truncated", lambda: pair(truncated, image_message(right, "rgb8", 13))),
        ("zero-size", lambda: pair(empty, empty)),
        ("focal length", lambda: with_camera_info(zero_fx, good_right, 15)),
        ("NaN", lambda: with_camera_info(camera_info(WIDTH, HEIGHT), nan_right, 16)),
    ]


def _as_16bit(stamp_ns: int) -> Image:
    msg = image_message(np.zeros((HEIGHT, WIDTH), np.uint8), "mono8", stamp_ns)
    msg.encoding, msg.step, msg.data = "16UC1", WIDTH * 2, bytes(WIDTH * HEIGHT * 2)
    return msg


def test_bad_inputs_are_skipped_with_a_reason(ros_context: Context, tiny_models: dict[str, Path]) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        stats = node.statistics
        for expected, publish_bad in _bad_inputs(harness):
            before = node.statistics.frames_rejected
            publish_bad()
            assert harness.wait_for(
                lambda b=before, e=expected: stats.frames_rejected > b and e in stats.last_problem
            ), expected
            assert expected in node.statistics.last_problem, node.statistics.last_problem
        assert harness.messages("semantic") == []
        # the node is alive: good camera_info and a good pair still give outputs
        send_camera_info(harness)
        time.sleep(0.2)
        send_pair(harness, 20)
        wait_outputs(harness, "semantic", 1)
        status = wait_outputs(harness, "/diagnostics", 1)[-1].status[0]
        assert status.level == DiagnosticStatus.WARN and "input rejected" in status.message


def test_burst_keeps_the_newest_and_bounds_memory(ros_context: Context, tiny_models: dict[str, Path]) -> None:
    frames = 80
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        send_pair(harness, 1)  # warm-up: first inference allocates the session's buffers
        wait_outputs(harness, "semantic", 1)
        process = psutil.Process()
        rss_before = process.memory_info().rss
        stamps = [10_000_000_000 + i * 1_000_000 for i in range(frames)]
        for index, stamp in enumerate(stamps):
            send_pair(harness, stamp, index)
            time.sleep(0.002)  # faster than the node's inference
        last = stamps[-1]
        assert harness.wait_for(
            lambda: any(
                m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == last
                for m in harness.messages("semantic")
            ),
        ), "the newest frame was never published"
        rss_growth = process.memory_info().rss - rss_before
        stats = node.statistics
        # the statistics are updated after the outputs go out, so wait until every input is accounted for
        assert harness.wait_for(
            lambda: stats.frames_out + stats.frames_dropped + stats.frames_rejected >= stats.frames_in,
        ), f"in {stats.frames_in}, out {stats.frames_out}, dropped {stats.frames_dropped}"
        assert stats.frames_out < frames + 1
        assert stats.frames_dropped > 0
    assert rss_growth < 64 * 2**20, f"resident memory grew by {rss_growth / 2**20:.1f} MiB"


def test_enable_service_pauses_and_parameters_are_checked(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        client = harness.probe.create_client(SetBool, f"{node.get_fully_qualified_name()}/enable")
        assert client.wait_for_service(timeout_sec=WAIT_S)
        response = client.call(SetBool.Request(data=False), timeout_sec=WAIT_S)
        assert response is not None and response.success and not node.parameters.enable
        send_camera_info(harness)
        send_pair(harness, 30)
        time.sleep(0.5)
        assert harness.messages("semantic") == [] and node.statistics.frames_in == 0
        assert client.call(SetBool.Request(data=True), timeout_sec=WAIT_S).success
        send_pair(harness, 31)
        wait_outputs(harness, "depth/uncertainty", 1)  # published after depth: frame 31 is complete

        refused = node.set_parameters_atomically(
            [Parameter("max_disparity", value=1.0), Parameter("min_disparity", value=5.0)]
        )
        assert not refused.successful and "below max_disparity" in refused.reason
        assert not node.set_parameters([Parameter("backend", value="torch")])[0].successful
        assert not node.set_parameters([Parameter("queue_size", value=0)])[0].successful

        assert node.set_parameters([Parameter("confidence_threshold", value=1e-9)])[0].successful
        count = len(harness.messages("depth"))
        send_pair(harness, 32)
        depth = as_array(wait_outputs(harness, "depth", count + 1)[-1])
        uncertainty = as_array(harness.messages("depth/uncertainty")[-1])
        assert np.isnan(depth[uncertainty > 1e-9]).all()


def test_startup_errors_name_the_problem(
    ros_context: Context, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(UserError, match=r"missing\.onnx"):
        PerceptionNode(
            context=ros_context, parameter_overrides=[Parameter("model_file_path", value=str(missing))]
        )
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"corrupt\.onnx"):
        PerceptionNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("model_file_path", value=str(corrupt)),
                Parameter("backend", value="auto"),
            ],
        )
    with pytest.raises(UserError, match="mono model but the node's mode is stereo"):
        PerceptionNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("model_file_path", value=str(tiny_models["mono"])),
                Parameter("mode", value="stereo"),
            ],
        )
    with pytest.raises(UserError, match="backend"):
        PerceptionNode(context=ros_context, parameter_overrides=[Parameter("backend", value="cuda")])

    def failing_warm_up(self: Pipeline, runs: int = 2) -> float:
        raise RuntimeError("no kernel for this GPU")

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "warm_up", failing_warm_up)
        with pytest.raises(UserError, match=r"warm-up inference.*no kernel"):
            PerceptionNode(
                context=ros_context,
                parameter_overrides=[Parameter("model_file_path", value=str(tiny_models["stereo"]))],
            )


def _stamp(msg: Image) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_burst_counts_every_image_in_exactly_one_bucket(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    """images in = 2 x frames in + unmatched, frames in = processed + dropped + rejected."""
    sent = 0
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        stats = node.statistics
        left = PAIRS[0][0]
        base = 40_000_000_000
        for index in range(60):
            stamp = base + index * 10_000_000
            if index % 5 == 4:  # a left image whose right partner never comes
                harness.publish("left/image_rect", image_message(left, "rgb8", stamp + 5_000_000))
                sent += 1
            if index % 7 == 3:
                harness.publish("left/image_rect", _as_16bit(stamp))
                harness.publish("right/image_rect", _as_16bit(stamp))
            else:
                send_pair(harness, stamp, index)
            sent += 2
            time.sleep(0.002)  # faster than the node's inference
        # A bad pair the idle worker must reject (in the burst it may be replaced by a newer pair),
        # a lone left image, then a good pair that ends the run.
        assert harness.wait_for(
            lambda: stats.frames_in == stats.frames_out + stats.frames_dropped + stats.frames_rejected
        ), stats.summary()
        rejected_before = stats.frames_rejected
        harness.publish("left/image_rect", _as_16bit(base + 10**9))
        harness.publish("right/image_rect", _as_16bit(base + 10**9))
        assert harness.wait_for(lambda: stats.frames_rejected > rejected_before)
        harness.publish("left/image_rect", image_message(left, "rgb8", base + 2 * 10**9))
        last = base + 3 * 10**9
        send_pair(harness, last)
        sent += 5
        assert harness.wait_for(lambda: any(_stamp(m) == last for m in harness.messages("semantic")))
        assert harness.wait_for(
            lambda: stats.frames_in == stats.frames_out + stats.frames_dropped + stats.frames_rejected
        )
        status_count = len(harness.messages("/diagnostics"))
        status = wait_outputs(harness, "/diagnostics", status_count + 2)[-1].status[0]
    # destroy_node closed the books: the numbers below no longer move
    values = _values(status)
    assert int(values["images in"]) == stats.images_in and int(values["images waiting"]) == 0
    assert int(values["frames in progress"]) == 0
    assert stats.images_in == 2 * stats.frames_in + stats.images_unmatched, stats.summary()
    assert stats.frames_in == stats.frames_out + stats.frames_dropped + stats.frames_rejected, stats.summary()
    assert 0 < stats.images_in <= sent
    assert stats.images_unmatched >= 1 and stats.frames_dropped > 0 and stats.frames_rejected >= 1
    assert stats.frames_out >= 1
    assert f"images in {stats.images_in}: paired {2 * stats.frames_in}" in stats.summary()


def test_exact_sync_that_never_matches_is_reported(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS, queue_size=2) as (node, harness):
        send_camera_info(harness)
        left, right = PAIRS[0]
        for index in range(8):  # the right camera runs 1 ms behind: exact stamps never match
            stamp = 50_000_000_000 + index * 50_000_000
            harness.publish("left/image_rect", image_message(left, "rgb8", stamp))
            harness.publish("right/image_rect", image_message(right, "rgb8", stamp + 1_000_000))
            time.sleep(0.01)
        assert harness.wait_for(lambda: "never match" in node.statistics.to_status().message)
        status = wait_outputs(harness, "/diagnostics", len(harness.messages("/diagnostics")) + 1)[-1].status[
            0
        ]
        assert status.level == DiagnosticStatus.WARN
        assert "1.000 ms apart" in status.message and "approximate_sync" in status.message
        assert harness.messages("semantic") == [] and node.statistics.images_unmatched > 0
        # the suggested fix works, and the warning goes away with the first pair
        assert node.set_parameters([Parameter("approximate_sync", value=True)])[0].successful
        harness.publish("left/image_rect", image_message(left, "rgb8", 60_000_000_000))
        harness.publish("right/image_rect", image_message(right, "rgb8", 60_001_000_000))
        wait_outputs(harness, "semantic", 1)
        assert "never match" not in node.statistics.to_status().message


def test_zero_stamps_are_processed_but_kept_out_of_latency(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        send_pair(harness, 0)
        wait_outputs(harness, "depth/uncertainty", 1)
        assert harness.wait_for(lambda: node.statistics.frames_zero_stamp == 1)
        status = wait_outputs(harness, "/diagnostics", len(harness.messages("/diagnostics")) + 1)[-1].status[
            0
        ]
    values = _values(status)
    assert status.level == DiagnosticStatus.WARN and "stamps are 0" in status.message
    assert values["frames processed"] == "1" and values["latency mean (ms)"] == "nan"


def test_incompatible_qos_and_silence_show_in_diagnostics(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    # The probe publishes best effort; a reliable subscription cannot match it (RELIABILITY).
    with running_node(
        ros_context,
        tiny_models["stereo"],
        STEREO_INPUTS,
        connect=False,
        input_qos="reliable",
        input_timeout_seconds=0.5,
    ) as (node, harness):
        assert harness.wait_for(lambda: "RELIABILITY" in node.statistics.to_status().message)
        status = wait_outputs(harness, "/diagnostics", len(harness.messages("/diagnostics")) + 1)[-1].status[
            0
        ]
    assert status.level == DiagnosticStatus.STALE  # no image arrives at all: the worst level wins
    assert "no input image yet" in status.message
    assert "incompatible QoS on /" in status.message and "RELIABILITY" in status.message
    assert "RELIABILITY" in _values(status)["incompatible QoS"]


COMPRESSED_INPUTS = {
    "left/image_rect/compressed": CompressedImage,
    "right/image_rect/compressed": CompressedImage,
    "left/camera_info": CameraInfo,
    "right/camera_info": CameraInfo,
}


def _compressed(array_rgb: np.ndarray, extension: str, stamp_ns: int) -> CompressedImage:
    ok, data = cv2.imencode(extension, np.ascontiguousarray(array_rgb[:, :, ::-1]))  # cv2 writes BGR
    assert ok
    return CompressedImage(header=stamped_header(stamp_ns), format=extension[1:], data=data.tobytes())


def test_compressed_inputs_decode_to_the_raw_result(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    model = tiny_models["stereo"]
    left, right = PAIRS[1]
    backend = create_backend("onnxruntime", model, threads=1)
    try:
        expected = Pipeline(backend).process(left, right, camera=CameraModel(FX, BASELINE))
    finally:
        backend.close()
    with running_node(ros_context, model, COMPRESSED_INPUTS, input_transport="compressed", threads=1) as (
        node,
        harness,
    ):
        assert harness.probe.count_subscribers("left/image_rect") == 0  # the raw topic is not subscribed
        send_camera_info(harness)
        harness.publish("left/image_rect/compressed", _compressed(left, ".png", 7))
        harness.publish("right/image_rect/compressed", _compressed(right, ".png", 7))
        wait_outputs(harness, "depth/uncertainty", 1)
        harness.publish("left/image_rect/compressed", _compressed(left, ".jpg", 8))
        harness.publish("right/image_rect/compressed", _compressed(right, ".jpg", 8))
        wait_outputs(harness, "depth/uncertainty", 2)
        corrupt = _compressed(left, ".jpg", 9)
        corrupt.data = corrupt.data[:50]
        harness.publish("left/image_rect/compressed", corrupt)
        harness.publish("right/image_rect/compressed", _compressed(right, ".jpg", 9))
        assert harness.wait_for(lambda: "cannot decode" in node.statistics.last_problem)
    png_semantic, jpeg_semantic = (as_array(m) for m in harness.messages("semantic")[:2])
    np.testing.assert_array_equal(png_semantic, expected.semantic)  # PNG is lossless: bit for bit
    np.testing.assert_array_equal(as_array(harness.messages("depth")[0]), expected.depth)
    assert jpeg_semantic.shape == (HEIGHT, WIDTH)
    assert [_stamp(m) for m in harness.messages("semantic")] == [7, 8]


@pytest.mark.parametrize(("resize_mode", "width"), [("stretch", 128), ("letterbox", 107)])
def test_resize_mode_reaches_the_pipeline(
    ros_context: Context, tiny_models: dict[str, Path], resize_mode: str, width: int
) -> None:
    """At model resolution a letterboxed 160x96 image keeps its aspect: 107x64 of the 128x64 input."""
    with running_node(
        ros_context,
        tiny_models["stereo"],
        STEREO_INPUTS,
        resize_mode=resize_mode,
        output_resolution="model",
    ) as (node, harness):
        assert node.parameters.resize_mode == resize_mode
        send_camera_info(harness)
        send_pair(harness, 3)
        depth = wait_outputs(harness, "depth", 1)[-1]
        info = wait_outputs(harness, "depth/camera_info", 1)[-1]
    assert (depth.width, depth.height) == (width, 64) == (info.width, info.height)
    assert info.k[0] == pytest.approx(FX * width / WIDTH)


def test_bad_resize_mode_is_refused(ros_context: Context, tiny_models: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="resize_mode = 'crop' is not one of stretch, letterbox"):
        PerceptionNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("model_file_path", value=str(tiny_models["stereo"])),
                Parameter("resize_mode", value="crop"),
            ],
        )
