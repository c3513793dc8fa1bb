"""Replay evaluation on a tiny bag with a tiny random model: outputs, gates, bad bags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_replay import (
    FRAMES,
    GROUND_DISPARITY,
    START_NS,
    camera_infos,
    tiny_bag,
    tiny_model,
    write_tiny_bag,
)

from mtl_perception.cli import main
from mtl_perception.data import rosbag_io
from mtl_perception.errors import UserError
from mtl_perception.replay.bag_source import BagReadError, BagSource, ReplayTopics, decode_image
from mtl_perception.replay.gates import Gate, failed_gates, parse_gates
from mtl_perception.runtime import read_model_info

__all__ = ["tiny_bag", "tiny_model"]  # session fixtures used by name


def replay(bag: Path, model: Path, out: Path, *extra: str) -> int:
    return main(
        ["replay", str(bag), "--model", str(model), "--out", str(out), "--backend", "onnxruntime", *extra]
    )


@pytest.fixture(scope="module")
def replayed(tiny_bag: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replayed")
    assert replay(tiny_bag, tiny_model, out) == 0
    return out


def test_bag_source_groups_frames_with_ground_truth(tiny_bag: Path) -> None:
    source = BagSource(tiny_bag)
    frames = list(source.frames())
    assert source.ground_truth == ("semantic", "disparity", "depth", "steering")
    assert [f.index for f in frames] == list(range(FRAMES))
    assert len({f.stamp for f in frames}) == FRAMES
    first = frames[0]
    assert first.left.shape == (64, 128, 3) and first.right.shape == (64, 128, 3)
    np.testing.assert_allclose(first.disparity, GROUND_DISPARITY)
    assert first.camera() == pytest.approx((64.0, 0.3, 0.0))
    assert frames[3].steering == pytest.approx(0.03)


def test_metrics_json_report_and_predictions_bag(replayed: Path, tiny_model: Path) -> None:
    summary = json.loads((replayed / "metrics.json").read_text())
    assert summary["frames"] == {
        "replayed": FRAMES,
        "processed": FRAMES,
        "dropped": 0,
        "drop_rate": 0.0,
        "with_ground_truth": FRAMES,
    }
    accuracy = summary["accuracy"]
    assert 0.0 <= accuracy["miou"] <= 1.0
    assert set(accuracy["iou"]) >= {"road", "sidewalk", "building"}
    for key in ("d1_all", "epe", "abs_rel", "delta1", "seg_ause", "disparity_ause", "depth_ause"):
        assert accuracy[key] is not None and accuracy[key] >= 0.0, key
    # ECE bins the top-class probability: every pixel when the model outputs it, none otherwise.
    has_confidence = "semantic_confidence" in read_model_info(tiny_model).outputs
    assert len(summary["calibration"]["pixels"]) == 15
    assert sum(summary["calibration"]["pixels"]) == (FRAMES * 64 * 128 if has_confidence else 0)
    assert (accuracy["seg_ece"] is not None) == has_confidence
    assert len(summary["sparsification"]["disparity_sparsification"]["curve"]) == 20
    # The steering window is 2 frames, so every frame after the first has a prediction.
    steering = summary["steering"]
    assert steering["frames_scored"] == FRAMES - 1 and steering["frames_incomplete_window"] == 1
    assert steering["rmse_deg"] == pytest.approx(steering["mse_deg2"] ** 0.5)
    assert summary["run"]["steering_graph"].endswith("tiny.steering.onnx")
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert summary["throughput_fps"] > 0
    assert len(summary["per_frame"]) == FRAMES and "miou" in summary["per_frame"][0]
    assert summary["headline"]["miou"] == accuracy["miou"]

    report = (replayed / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 6 * 5 + 3  # panels + timeline/calibration/sparsification
    assert 'src="http' not in report  # self-contained

    predictions = BagSource(replayed / "predictions", ReplayTopics(), stereo=False)
    topics = {m.topic for m in rosbag_io.read_bag(predictions.path)}
    assert {
        "/mtl_perception/semantic",
        "/mtl_perception/disparity",
        "/mtl_perception/depth",
        "/mtl_perception/steering",
        rosbag_io.LEFT_IMAGE,
    } <= topics


def test_a_gate_on_an_unmeasured_metric_fails(tiny_bag: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Gates that pass and fail on known answers are in test_replay_known_answer.py."""
    assert replay(tiny_bag, tiny_model, tmp_path / "ok", "--fail-above", "steering_rmse_deg=1e9") == 0
    assert replay(tiny_bag, tiny_model, tmp_path / "absent", "--fail-above", "no_such_metric=1") == 1


def test_gate_parsing_and_checks() -> None:
    gates = parse_gates(["miou=0.5"], ["epe=2"])
    assert gates == [Gate("miou", 0.5, below=True), Gate("epe", 2.0, below=False)]
    assert failed_gates(gates, {"miou": 0.6, "epe": 1.0}) == []
    assert len(failed_gates(gates, {"miou": 0.4, "epe": 3.0})) == 2
    with pytest.raises(UserError, match="METRIC=NUMBER"):
        parse_gates(["miou"], None)


def test_sqlite3_bag_without_ground_truth_gives_timing_only(tiny_model: Path, tmp_path: Path) -> None:
    bag = write_tiny_bag(tmp_path / "bag", frames=3, storage="sqlite3", ground_truth=False)
    assert replay(bag, tiny_model, tmp_path / "out", "--storage", "sqlite3") == 0
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "accuracy" not in summary and summary["frames"]["processed"] == 3
    assert "timing only" in (tmp_path / "out" / "report.html").read_text()


def test_compressed_images_are_decoded() -> None:
    import cv2

    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    _, png = cv2.imencode(".png", image)
    msg = rosbag_io.TYPES.types["sensor_msgs/msg/CompressedImage"](
        header=rosbag_io.header(0, "f"), format="png", data=png.reshape(-1)
    )
    decoded, encoding = decode_image("sensor_msgs/msg/CompressedImage", msg)
    assert encoding == "bgr8" and np.array_equal(decoded, image)


def test_missing_topic_and_wrong_type_are_clear(tiny_bag: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BagReadError, match="no topic /cam/left"):
        BagSource(tiny_bag, ReplayTopics(left="/cam/left"))
    with pytest.raises(BagReadError, match="expected sensor_msgs/msg/Image"):
        BagSource(tiny_bag, ReplayTopics(left=rosbag_io.LEFT_INFO))
    assert replay(tiny_bag, tiny_model, tmp_path / "o", "--right-topic", "/nope") == 2


def test_empty_and_missing_bags_are_clear(tmp_path: Path) -> None:
    left_info, _ = camera_infos()
    with rosbag_io.BagWriter(tmp_path / "empty") as writer:
        writer.write(rosbag_io.LEFT_INFO, rosbag_io.camera_info_msg(left_info, 0), 0)
    with pytest.raises(BagReadError, match="no topic"):
        BagSource(tmp_path / "empty")
    with pytest.raises(BagReadError, match="not found"):
        BagSource(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BagReadError, match="not a rosbag2"):
        BagSource(tmp_path / "plain")


def test_truncated_bag_is_refused_clearly(tiny_bag: Path, tmp_path: Path) -> None:
    bag = tmp_path / "truncated"
    shutil.copytree(tiny_bag, bag)
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size * 2 // 3])
    with pytest.raises(BagReadError, match="corrupt"):
        BagSource(bag)


def test_bad_frame_part_way_still_writes_what_was_evaluated(tiny_model: Path, tmp_path: Path) -> None:
    bag = write_tiny_bag(tmp_path / "bag", frames=3)
    # Append a frame whose left image is in an encoding replay cannot read: the bag fails part-way.
    with rosbag_io.BagWriter(tmp_path / "tail") as writer:
        msg = rosbag_io.image_msg(np.zeros((64, 128, 3), np.uint8), "rgb8", START_NS + 10**9, "left_optical")
        msg.encoding = "yuv422"
        writer.write(rosbag_io.LEFT_IMAGE, msg, START_NS + 10**9)
    merged = tmp_path / "merged"
    frames = list(rosbag_io.read_bag(bag)) + list(rosbag_io.read_bag(tmp_path / "tail"))
    with rosbag_io.BagWriter(merged) as writer:
        for m in frames:
            writer.write(m.topic, m.msg, m.log_time)
    out = tmp_path / "out"
    assert replay(merged, tiny_model, out) == 2
    summary = json.loads((out / "metrics.json").read_text())
    assert "yuv422" in summary["error"]
    assert summary["frames"]["processed"] == 3
    assert "Incomplete" in (out / "report.html").read_text()
