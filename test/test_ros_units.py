"""ROS-side pieces without DDS traffic: conversions, stereo sync, parameters, diagnostics, markers,
the shipped parameter/launch files and the `run` command's argument handling."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from fixtures_ros import camera_info, image_message, stamped_header
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from mtl_perception.commands import run as run_command
from mtl_perception.image_codec import decode_compressed
from mtl_perception.replay.bag_source import COMPRESSED_IMAGE, decode_image
from mtl_perception.ros.conversions import (
    InvalidMessageError,
    compressed_to_numpy,
    disparity_image,
    image_to_numpy,
    intrinsics_from_camera_info,
    numpy_to_image,
    scaled_camera_info,
    stereo_intrinsics,
)
from mtl_perception.ros.diagnostics import NodeStatistics
from mtl_perception.ros.params import SPECS, NodeParameters, apply_changes, validate
from mtl_perception.ros.spinning import BackgroundSpinner
from mtl_perception.ros.sync import StereoSynchronizer
from mtl_perception.ros.visualization import steering_marker, steering_message

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)

# -- conversions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "shape"),
    [("rgb8", (5, 7, 3)), ("bgr8", (5, 7, 3)), ("rgba8", (5, 7, 4)), ("bgra8", (5, 7, 4)), ("mono8", (5, 7))],
)
def test_image_round_trip_every_input_encoding(encoding: str, shape: tuple[int, ...]) -> None:
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    msg = image_message(array, encoding, 5)
    assert msg.step == 7 * (shape[2] if len(shape) == 3 else 1)
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_image_honours_row_padding() -> None:
    array = RNG.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :9] = array.reshape(4, 9)
    msg = Image(height=4, width=3, encoding="rgb8", step=16, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), array)


@pytest.mark.parametrize("big_endian", [False, True])
def test_float_image_honours_byte_order(big_endian: bool) -> None:
    values = RNG.standard_normal((3, 4)).astype(np.float32)
    data = values.astype(">f4" if big_endian else "<f4").tobytes()
    msg = Image(height=3, width=4, encoding="32FC1", step=16, is_bigendian=big_endian, data=data)
    np.testing.assert_array_equal(image_to_numpy(msg, allowed=("32FC1",)), values)


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8)), "unsupported encoding"),
        (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "zero-size"),
        (Image(height=2, width=4, encoding="rgb8", step=12, data=bytes(20)), "truncated"),
        (Image(height=2, width=4, encoding="rgb8", step=8, data=bytes(16)), "step"),
    ],
)
def test_bad_images_are_refused_with_a_reason(msg: Image, reason: str) -> None:
    with pytest.raises(InvalidMessageError, match=reason):
        image_to_numpy(msg)


@pytest.mark.parametrize(
    ("shape", "encoding"), [((6, 8, 3), "bgr8"), ((6, 8, 4), "bgra8"), ((6, 8), "mono8")]
)
def test_compressed_png_decodes_losslessly(shape: tuple[int, ...], encoding: str) -> None:
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    ok, png = cv2.imencode(".png", array)
    assert ok
    msg = CompressedImage(format="png", data=png.tobytes())
    decoded, decoded_encoding = compressed_to_numpy(msg)
    assert decoded_encoding == encoding
    np.testing.assert_array_equal(decoded, array)
    # replay reads bags through the same decoder (rosbags messages carry data as a uint8 array)
    bag_msg = argparse.Namespace(format="png", data=png.reshape(-1))
    replayed, replayed_encoding = decode_image(COMPRESSED_IMAGE, bag_msg)
    assert replayed_encoding == encoding
    np.testing.assert_array_equal(replayed, array)


def test_compressed_jpeg_and_bad_payloads() -> None:
    array = np.full((16, 24, 3), (30, 120, 200), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    decoded, encoding = decode_compressed(jpeg.tobytes(), "jpeg")
    assert encoding == "bgr8" and decoded.shape == (16, 24, 3)
    assert np.abs(decoded.astype(int) - array).max() <= 3  # lossy, but this flat colour survives
    with pytest.raises(InvalidMessageError, match=r"cannot decode.*'jpeg'"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=jpeg.tobytes()[:40]))
    with pytest.raises(InvalidMessageError, match="cannot decode"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=b""))
    ok, png16 = cv2.imencode(".png", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="uint16, not 8-bit"):
        decode_compressed(png16.tobytes(), "16UC1; png compressed")


def test_stereo_intrinsics_and_bad_camera_info() -> None:
    left, right = camera_info(64, 32, fx=80.0), camera_info(64, 32, fx=80.0, tx=-80.0 * 0.2)
    intrinsics = stereo_intrinsics(left, right)
    assert intrinsics.fx == 80.0 and intrinsics.baseline == pytest.approx(0.2)
    assert intrinsics.principal_offset == 0.0
    right.p[2] += 7.5  # a rectification that moved the right principal point
    assert stereo_intrinsics(left, right).principal_offset == pytest.approx(7.5)
    with pytest.raises(InvalidMessageError, match="baseline"):
        stereo_intrinsics(left, left)
    zero = camera_info(64, 32, fx=0.0)
    zero.k[0] = 0.0
    with pytest.raises(InvalidMessageError, match="focal"):
        intrinsics_from_camera_info(zero)
    nan = camera_info(64, 32)
    nan.p[2] = math.nan
    with pytest.raises(InvalidMessageError, match="NaN"):
        intrinsics_from_camera_info(nan)


def test_scaled_camera_info_keeps_geometry() -> None:
    info = camera_info(200, 100, fx=150.0, tx=-150.0 * 0.3)
    scaled = scaled_camera_info(info, 100, 25, stamped_header(1))
    assert (scaled.width, scaled.height) == (100, 25)
    assert scaled.k[0] == 75.0 and scaled.k[2] == 50.0 and scaled.k[4] == 37.5 and scaled.k[5] == 12.5
    assert scaled.p[0] == 75.0 and -scaled.p[3] / scaled.p[0] == pytest.approx(0.3)


def test_disparity_image_fields_and_valid_window() -> None:
    disparity = np.full((6, 8), -1.0, np.float32)
    disparity[1:4, 2:7] = 5.0
    msg = disparity_image(
        disparity,
        stamped_header(7),
        focal_length=90.0,
        baseline=0.1,
        min_disparity=0.0,
        max_disparity=32.0,
        delta_d=1 / 16,
    )
    window = msg.valid_window
    assert (window.x_offset, window.y_offset, window.width, window.height) == (2, 1, 5, 3)
    assert msg.image.encoding == "32FC1" and msg.f == 90.0 and msg.delta_d == 0.0625
    np.testing.assert_array_equal(image_to_numpy(msg.image, allowed=("32FC1",)), disparity)


# -- sync -----------------------------------------------------------------------------------------


def test_exact_sync_pairs_equal_stamps_only() -> None:
    sync: StereoSynchronizer[str] = StereoSynchronizer(3)
    assert sync.push_left(100, "L100") is None
    assert sync.push_right(101, "R101") is None
    pair = sync.push_right(100, "R100")
    assert pair is not None and (pair.left, pair.right) == ("L100", "R100")
    assert sync.pending() == (0, 1)  # R101 is newer than the pair: it may still match L101
    assert sync.unmatched == 0
    assert sync.push_left(101, "L101") is not None


def test_approximate_sync_takes_the_closest_stamp_within_tolerance() -> None:
    sync: StereoSynchronizer[str] = StereoSynchronizer(5, approximate=True, tolerance_s=0.004)
    sync.push_left(1_000_000, "far")
    sync.push_left(10_000_000, "near")
    pair = sync.push_right(12_000_000, "R")
    assert pair is not None and pair.left == "near"
    assert sync.unmatched == 1  # "far" is older than the match
    assert sync.push_right(30_000_000, "R2") is None  # 18 ms from anything: no match
    sync.configure(approximate=False, tolerance_s=0.0)
    assert sync.push_left(30_000_001, "L") is None


def test_sync_queue_is_bounded_and_counts_unmatched() -> None:
    reported: list[int] = []
    sync: StereoSynchronizer[int] = StereoSynchronizer(2, on_unmatched=reported.append)
    for stamp in range(10):
        sync.push_left(stamp, stamp)
    assert sync.pending() == (2, 0)
    assert sync.unmatched == 8 and sum(reported) == 8
    pair = sync.push_right(9, 9)
    assert pair is not None and pair.left == 9 and sync.unmatched == 9 and sync.pairs == 1
    assert sum(reported) == 9


@pytest.mark.parametrize("approximate", [False, True])
def test_sync_accounts_for_every_message(approximate: bool) -> None:
    """pushed = 2 * pairs + unmatched + waiting after every push, and flush empties the queues."""
    rng = np.random.default_rng(3)
    reported: list[int] = []
    sync: StereoSynchronizer[int] = StereoSynchronizer(
        3, approximate=approximate, tolerance_s=0.002, on_unmatched=reported.append
    )
    pushed = 0
    for frame in range(300):
        stamp = frame * 10_000_000
        sides = [sync.push_left, sync.push_right]
        rng.shuffle(sides)  # either camera's message may come first
        for push in sides:
            if rng.random() < 0.8:  # some messages never come: their partners stay single
                jitter = int(rng.integers(0, 1_500_000)) if approximate else 0
                push(stamp + jitter, frame)
                pushed += 1
                assert pushed == 2 * sync.pairs + sync.unmatched + sum(sync.pending())
    assert 0 < sync.pairs < 300 and sync.unmatched > 0 and sum(reported) == sync.unmatched
    waiting = sum(sync.pending())
    assert sync.flush() == waiting and sync.pending() == (0, 0)
    assert pushed == 2 * sync.pairs + sync.unmatched


def test_sync_reports_stamps_that_never_match() -> None:
    sync: StereoSynchronizer[int] = StereoSynchronizer(2)
    for frame in range(3):  # one side alone is a missing camera, not a stamp mismatch
        sync.push_left(frame * 100, frame)
    assert sync.mismatch() is None
    for frame in range(2):
        sync.push_right(frame * 100 + 1, frame)  # 1 ns off: exact sync never matches
    assert sync.mismatch() is None  # the right queue has not overflowed yet
    sync.push_right(201, 2)
    assert sync.mismatch() == (200, 201)
    sync.configure(approximate=True, tolerance_s=1e-8)
    assert sync.push_left(300, 3) is None and sync.push_right(301, 3) is not None
    assert sync.mismatch() is None  # a pair formed: the streak is over


# -- parameters -----------------------------------------------------------------------------------


def test_parameter_validation_messages() -> None:
    assert validate(NodeParameters()) is None
    assert "backend" in (validate(NodeParameters(backend="cuda")) or "")
    assert "below max_disparity" in (validate(NodeParameters(min_disparity=10.0, max_disparity=5.0)) or "")
    _, problem = apply_changes(NodeParameters(), [Parameter("model_file_path", value="x.onnx")])
    assert problem is not None and "read-only" in problem
    values, problem = apply_changes(NodeParameters(), [Parameter("confidence_threshold", value=2.5)])
    assert problem is None and values.confidence_threshold == 2.5


def test_resize_transport_and_timeout_parameters_are_checked() -> None:
    assert "resize_mode" in (validate(NodeParameters(resize_mode="crop")) or "")
    assert "input_transport" in (validate(NodeParameters(input_transport="theora")) or "")
    assert "input_timeout_seconds" in (validate(NodeParameters(input_timeout_seconds=-1.0)) or "")
    assert validate(NodeParameters(resize_mode="letterbox", input_transport="compressed")) is None
    for name, value in (("resize_mode", "letterbox"), ("input_transport", "compressed")):
        _, problem = apply_changes(NodeParameters(), [Parameter(name, value=value)])
        assert problem is not None and "read-only" in problem  # the pipeline / subscriptions are built once
    values, problem = apply_changes(NodeParameters(), [Parameter("input_timeout_seconds", value=0.0)])
    assert problem is None and values.input_timeout_seconds == 0.0


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_shipped_parameter_file_keys_are_declared(mode: str) -> None:
    """rclpy's own parser reads the file; every key must be a parameter the node declares."""
    path = REPO / "config" / f"{mode}.yaml"
    context = Context()
    rclpy.init(context=context, args=["test", "--ros-args", "--params-file", str(path)])
    try:
        node = Node("mtl_perception", context=context, automatically_declare_parameters_from_overrides=True)
        names = set(node.get_parameters_by_prefix("")) - {"use_sim_time", "start_type_description_service"}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert names, f"{path} declared nothing"
    assert names <= set(SPECS), f"undeclared keys in {path}: {names - set(SPECS)}"
    assert "mode" in names


@pytest.mark.parametrize("name", ["stereo.launch.py", "mono.launch.py"])
def test_launch_files_compile(name: str) -> None:
    source = (REPO / "launch" / name).read_text()
    compile(source, name, "exec")
    assert "generate_launch_description" in source


def test_launch_description_builder_compiles() -> None:
    # Compiled, not imported: `launch` and `launch_ros` are not installable outside a ROS 2 install.
    path = REPO / "mtl_perception" / "ros" / "launch_description.py"
    source = path.read_text()
    compile(source, path.name, "exec")
    assert "def perception_launch_description(mode: str)" in source


def test_run_command_passes_ros_arguments_through() -> None:
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    args, unknown = parser.parse_known_args(
        ["stereo", "--params-file", "a.yaml", "--ros-args", "--params-file", "b.yaml", "-r", "x:=y"]
    )
    assert unknown == [] and args.params_file == Path("a.yaml")
    argv = run_command.ros_arguments(args.mode, args.params_file, args.ros_args)
    assert argv[1:] == [
        "--ros-args",
        "--params-file",
        "a.yaml",
        "-p",
        "mode:=stereo",
        "--params-file",
        "b.yaml",
        "-r",
        "x:=y",
    ]


# -- diagnostics and visualization -----------------------------------------------------------------


def test_statistics_rates_drops_and_warn_state() -> None:
    now = [100.0]
    stats = NodeStatistics("node", "hw", window_s=2.0, stale_after_s=0.0, clock=lambda: now[0])
    for _ in range(4):
        stats.input_received()
        stats.published(latency_ms=20.0, infer_ms=5.0)
        now[0] += 0.5
    stats.dropped(3)
    status = stats.to_status()
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK
    assert values["frames dropped"] == "3" and values["latency mean (ms)"] == "20.0"
    assert float(values["output rate (Hz)"]) == pytest.approx(2.0)  # 4 events in the last 2 s
    stats.rejected("unsupported encoding '16UC1'")
    assert stats.to_status().level == DiagnosticStatus.WARN
    assert "16UC1" in stats.to_status().message
    now[0] += 10.0
    assert stats.to_status().level == DiagnosticStatus.OK
    assert stats.to_status().values[1].value == "0.00"  # the input rate decays once frames stop


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_statistics_buckets_and_summary_add_up() -> None:
    waiting = [1]
    stats = NodeStatistics("node", "hw", views=2, waiting_images=lambda: waiting[0])
    for _ in range(9):
        stats.image_received()
    stats.unmatched(2)
    for _ in range(3):
        stats.input_received()
    stats.published(latency_ms=10.0, infer_ms=2.0)
    stats.dropped()
    values = _values(stats.to_status())
    images = [values[f"images {k}"] for k in ("in", "unmatched", "waiting")]
    frames = [values[f"frames {k}"] for k in ("in", "processed", "dropped")]
    assert images == ["9", "2", "1"] and frames == ["3", "1", "1"]
    assert values["frames in progress"] == "1"  # the third pair is still with the worker
    stats.rejected("unsupported encoding '16UC1'")
    waiting[0] = 0
    stats.unmatched(1)  # the shutdown flush
    assert stats.summary() == (
        "frames in 3: processed 1, dropped 1, rejected 1 (a frame is a stereo pair); "
        "images in 9: paired 6, unmatched 3"
    )
    mono = NodeStatistics("node", "hw")
    assert "images unmatched" not in _values(mono.to_status())
    assert mono.summary() == "frames in 0: processed 0, dropped 0, rejected 0"


def test_statistics_stale_without_input_and_not_while_paused() -> None:
    now = [0.0]
    stats = NodeStatistics("node", "hw", stale_after_s=3.0, clock=lambda: now[0])
    assert stats.to_status().level == DiagnosticStatus.OK
    now[0] = 3.5
    status = stats.to_status()
    assert status.level == DiagnosticStatus.STALE and "no input image yet for 3.5 s" in status.message
    stats.image_received()
    assert stats.to_status().level == DiagnosticStatus.OK
    now[0] = 10.0
    assert "no input image for 6.5 s" in stats.to_status().message
    stats.set_paused(True)
    assert stats.to_status().level == DiagnosticStatus.WARN  # paused: silence is expected
    now[0] = 20.0
    stats.set_paused(False)  # resuming restarts the clock
    assert stats.to_status().level == DiagnosticStatus.OK
    stats.stale_after_s = 0.0
    now[0] = 1000.0
    assert stats.to_status().level == DiagnosticStatus.OK


def test_statistics_zero_stamps_stay_out_of_latency() -> None:
    now = [0.0]
    stats = NodeStatistics("node", "hw", stale_after_s=0.0, clock=lambda: now[0])
    stats.published(latency_ms=30.0, infer_ms=1.0)
    stats.zero_stamp()
    stats.published(latency_ms=None, infer_ms=1.0)
    status = stats.to_status()
    values = _values(status)
    assert values["latency mean (ms)"] == "30.0" and values["latency max (ms)"] == "30.0"
    assert values["frames processed"] == "2" and values["frames with zero stamp"] == "1"
    assert status.level == DiagnosticStatus.WARN and "stamps are 0" in status.message
    now[0] = 10.0
    assert stats.to_status().level == DiagnosticStatus.OK  # the warning holds a few seconds


def test_statistics_count_steering_and_its_window_restarts() -> None:
    stats = NodeStatistics("node", "hw", stale_after_s=0.0)
    stats.published(latency_ms=10.0, infer_ms=1.0, steering=True)
    assert "steering published" not in _values(stats.to_status())  # no steering graph: not shown
    stats.steering = True
    stats.published(latency_ms=10.0, infer_ms=1.0, steering=False)
    stats.steering_restarted("gap 0.300 s > 0.150 s (a frame is missing)")
    stats.steering_restarted("stamp went back 0.900 s")
    values = _values(stats.to_status())
    assert values["steering published"] == "1" and values["frames processed"] == "2"
    assert values["steering window restarts"] == "2"
    assert values["steering last restart"] == "stamp went back 0.900 s"
    assert stats.to_status().level == DiagnosticStatus.OK  # a restart is normal (a bag loop), not a fault


def test_steering_gap_parameter_is_live_and_checked() -> None:
    assert "steering_max_gap_seconds" in (validate(NodeParameters(steering_max_gap_seconds=-0.5)) or "")
    values, problem = apply_changes(NodeParameters(), [Parameter("steering_max_gap_seconds", value=0.25)])
    assert problem is None and values.steering_max_gap_seconds == 0.25
    assert NodeParameters().steering_max_gap_seconds == 0.0  # 0: estimated from the frame gaps


def test_statistics_conditions_combine_and_clear() -> None:
    now = [0.0]
    stats = NodeStatistics("node", "hw", stale_after_s=1.0, clock=lambda: now[0])
    stats.image_received()
    stats.set_condition("qos left", "incompatible QoS on /left: RELIABILITY")
    stats.note("incompatible QoS", "/left: RELIABILITY (1 publishers in all)")
    stats.lost(4)
    status = stats.to_status()
    assert status.level == DiagnosticStatus.WARN
    assert "RELIABILITY" in status.message and "4 messages lost" in status.message
    assert _values(status)["messages lost"] == "4" and "RELIABILITY" in _values(status)["incompatible QoS"]
    now[0] = 2.0
    status = stats.to_status()
    assert status.level == DiagnosticStatus.STALE  # the worst level wins, every message is kept
    assert status.message.startswith("no input image") and "RELIABILITY" in status.message
    stats.set_condition("qos left", None)
    stats.image_received()
    now[0] = 10.0
    stats.image_received()
    assert stats.to_status().level == DiagnosticStatus.OK and stats.to_status().message == "running"


def test_steering_contract_and_marker_direction() -> None:
    header = stamped_header(3)
    msg = steering_message(header, 0.3)
    assert msg.name == ["steering"] and msg.position[0] == pytest.approx(0.3)
    tip = steering_marker(header, 0.3).points[1]
    assert tip.x < 0 and tip.z > 0 and tip.y == 0  # left turn -> towards -x in the optical frame
    assert steering_marker(header, 0.0).points[1].x == pytest.approx(0.0)


def test_numpy_to_image_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "mono8", stamped_header(0))


def test_background_spinner_runs_callbacks_and_stops_before_shutdown() -> None:
    context = Context()
    rclpy.init(context=context, domain_id=100 + os.getpid() % 100)
    node = Node("spinner_probe", context=context)
    ticks: list[int] = []
    node.create_timer(0.01, lambda: ticks.append(1))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = BackgroundSpinner(executor).start()
    try:
        deadline = time.monotonic() + 5.0
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ticks) >= 3
    finally:
        spinner.stop(timeout_s=5.0)
    assert not spinner.running
    count = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == count  # nothing runs after stop()
    node.destroy_node()
    rclpy.try_shutdown(context=context)
