"""Replay known answers: an oracle backend that returns each frame's ground truth scores perfectly.

The oracle is a ``Backend`` keyed on the left view it is given (as the pipeline feeds it), with
answers taken from what the test wrote into the bag, never from the bag reader under test. So a
reader that swaps the views, a scorer that compares against the wrong ground truth or a pipeline
that mangles the maps fails these tests; the same gates that pass here fail on a 4 px error.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_replay import SIZE, START_NS, camera_infos, tiny_frames, write_tiny_bag
from rosbags.rosbag2 import Reader

from mtl_perception import runtime
from mtl_perception.cli import main
from mtl_perception.contract import STEREO_OUTPUTS
from mtl_perception.data import rosbag_io
from mtl_perception.data.labels import CLASSES
from mtl_perception.replay.bag_source import BagReadError, BagSource
from mtl_perception.replay.evaluation import ReplayEvaluator
from mtl_perception.runtime import ModelInfo

ORACLE = "oracle"
EMBEDDING_DIM = 4
# What a correct pipeline scores with the oracle. Depth is f*B/d in float32 against a float64 truth,
# hence a tolerance instead of 0.
KNOWN_ANSWER_GATES = (
    "--fail-below",
    "miou=1",
    "pixel_accuracy=1",
    "delta1=1",
    "--fail-above",
    "d1_all=0",
    "epe=1e-5",
    "abs_rel=1e-5",
)


def _view_key(rgb: np.ndarray) -> bytes:
    return np.ascontiguousarray(rgb, np.uint8).tobytes()


class OracleBackend:
    """Answers each frame with the ground truth written for its left view (at model size).

    ``disparity_offset`` adds a known error. A left view it never saw raises LookupError, saying
    when it is one of the right views (the views were swapped), and so does a right view that is
    not the left view's partner.
    """

    name = ORACLE

    def __init__(self, frames: list[dict], disparity_offset: float = 0.0) -> None:
        height, width = SIZE
        shape = (1, 3, height, width)
        self.info = ModelInfo(
            mode="stereo",
            inputs={"left": shape, "right": shape},
            outputs=STEREO_OUTPUTS,
            version="oracle",
            embedding_dim=EMBEDDING_DIM,
            input_size=SIZE,
            max_disparity=64.0,
            classes=tuple({"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES),
        )
        self.answers = {_view_key(f["left"]): f for f in frames}
        self.right_views = {_view_key(f["right"]) for f in frames}
        self.disparity_offset = disparity_offset

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Back from the pipeline's NCHW 0..1 tensor to the uint8 RGB view that was written.
        left, right = (np.rint(inputs[v][0].transpose(1, 2, 0) * 255.0) for v in ("left", "right"))
        frame = self.answers.get(_view_key(left))
        if frame is None:
            swapped = _view_key(left) in self.right_views
            raise LookupError(
                "the oracle was given a left view it never wrote"
                + (": it is a right view, left and right were swapped" if swapped else "")
            )
        if _view_key(right) != _view_key(frame["right"]):
            raise LookupError("the right view is not the one written with this left view")
        truth, maps = frame["truth"], np.zeros((1, *SIZE), np.float32)
        return {
            "semantic": truth["semantic"][None].astype(np.int64),
            "semantic_uncertainty": maps,
            "disparity": (truth["disparity"] + np.float32(self.disparity_offset))[None],
            "disparity_uncertainty": maps + 1.0,
            "embedding": np.zeros((1, EMBEDDING_DIM), np.float32),
        }

    def close(self) -> None:
        pass


InstallOracle = Callable[..., Path]


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> InstallOracle:
    """``oracle(frames, offset)`` makes `replay --backend oracle` use an OracleBackend; returns --model."""

    def install(frames: list[dict], disparity_offset: float = 0.0) -> Path:
        backend = OracleBackend(frames, disparity_offset)
        real = runtime.create_backend
        monkeypatch.setattr(
            runtime,
            "create_backend",
            lambda kind, path, **kw: backend if kind == ORACLE else real(kind, path, **kw),
        )
        monkeypatch.setattr(runtime, "read_model_info", lambda path: backend.info)
        model = tmp_path / "oracle.onnx"  # `replay` wants a model file; the oracle needs no weights
        model.write_text("answers come from the test's ground truth\n")
        return model

    return install


def replay(bag: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["replay", str(bag), "--model", str(model), "--out", str(out), "--backend", ORACLE, *extra])


def summary_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bag(tmp_path_factory.mktemp("known_answer") / "bag", frames=3)


def test_ground_truth_scores_perfectly_and_passes_tight_gates(
    bag: Path, oracle: InstallOracle, tmp_path: Path
) -> None:
    model = oracle(tiny_frames(3))
    assert replay(bag, model, tmp_path / "out", *KNOWN_ANSWER_GATES) == 0
    summary = summary_of(tmp_path / "out")
    accuracy = summary["accuracy"]
    assert summary["frames"]["processed"] == 3
    assert accuracy["miou"] == 1.0 and accuracy["pixel_accuracy"] == 1.0
    assert accuracy["d1_all"] == 0.0 and accuracy["epe"] == pytest.approx(0.0, abs=1e-6)
    assert accuracy["abs_rel"] == pytest.approx(0.0, abs=1e-6) and accuracy["delta1"] == 1.0
    assert all(row["miou"] == 1.0 and row["d1_all"] == 0.0 for row in summary["per_frame"])


def test_four_pixels_off_gives_d1_one_and_epe_four_and_fails_the_gates(
    bag: Path, oracle: InstallOracle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = oracle(tiny_frames(3), disparity_offset=4.0)
    assert replay(bag, model, tmp_path / "out", *KNOWN_ANSWER_GATES) == 1
    accuracy = summary_of(tmp_path / "out")["accuracy"]
    # Every valid truth is at most 12.8 px, so 4 px is > 3 px and > 5 %: all outliers.
    assert accuracy["d1_all"] == 1.0
    assert accuracy["epe"] == pytest.approx(4.0, abs=1e-5)
    assert accuracy["miou"] == 1.0
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("GATE FAILED")]
    assert {line.split()[2] for line in failed} == {"d1_all", "epe", "abs_rel", "delta1"}


def test_planted_bug_disparity_scored_against_depth_fails(
    bag: Path, oracle: InstallOracle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ReplayEvaluator._sample

    def wrong_truth(self: ReplayEvaluator, frame: object) -> dict:
        sample = original(self, frame)
        return {**sample, "disparity": sample["depth"]}

    monkeypatch.setattr(ReplayEvaluator, "_sample", wrong_truth)
    model = oracle(tiny_frames(3))
    assert replay(bag, model, tmp_path / "out", *KNOWN_ANSWER_GATES) == 1
    assert summary_of(tmp_path / "out")["accuracy"]["epe"] > 1.0


def test_planted_bug_swapped_views_in_the_reader_fails(
    bag: Path, oracle: InstallOracle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BagSource._frame

    def swapped(self: BagSource, *args: object) -> object:
        frame = original(self, *args)
        frame.left, frame.right = frame.right, frame.left
        return frame

    monkeypatch.setattr(BagSource, "_frame", swapped)
    model = oracle(tiny_frames(3))
    with pytest.raises(LookupError, match="swapped"):
        replay(bag, model, tmp_path / "out")


def test_the_left_topic_arrives_as_left(tmp_path: Path) -> None:
    """Right = left shifted 4 px to the left (a fronto-parallel scene at disparity 4)."""
    texture = np.random.default_rng(5).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    right = np.roll(texture, -4, axis=1)
    left_info, right_info = camera_infos()
    with rosbag_io.BagWriter(tmp_path / "shifted") as writer:
        rosbag_io.write_stereo_frame(writer, START_NS, texture, right, left_info, right_info)
    (frame,) = BagSource(tmp_path / "shifted").frames()
    assert frame.encoding == "rgb8" and frame.right is not None
    assert np.array_equal(frame.left, texture)
    # A point at column x of the left view is at x - 4 in the right view.
    assert np.array_equal(frame.right[:, :-4], frame.left[:, 4:])
    assert not np.array_equal(frame.left[:, :-4], frame.right[:, 4:])


def test_metadata_qos_unlike_the_mcap_channels_still_replays(
    bag: Path, oracle: InstallOracle, tmp_path: Path
) -> None:
    edited = tmp_path / "qos"
    shutil.copytree(bag, edited)
    metadata = yaml.safe_load((edited / "metadata.yaml").read_text())
    forever = {"sec": 9223372036, "nsec": 854775807}  # how ros2 bag writes "infinite"
    reliable = {  # a real recording's profile; rosbags' own writer leaves the list empty
        "history": "keep_last",
        "depth": 10,
        "reliability": "reliable",
        "durability": "volatile",
        "deadline": forever,
        "lifespan": forever,
        "liveliness": "automatic",
        "liveliness_lease_duration": forever,
        "avoid_ros_namespace_conventions": False,
    }
    for topic in metadata["rosbag2_bagfile_information"]["topics_with_message_count"]:
        topic["topic_metadata"]["offered_qos_profiles"] = [reliable]
    (edited / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    with Reader(edited) as reader:  # the bug this guards: rosbags pairs topics by QoS too
        assert next(reader.messages(connections=reader.connections), None) is None
    model = oracle(tiny_frames(3))
    assert replay(edited, model, tmp_path / "out", *KNOWN_ANSWER_GATES) == 0
    assert summary_of(tmp_path / "out")["frames"]["processed"] == 3


def test_a_bare_mcap_file_replays(bag: Path, oracle: InstallOracle, tmp_path: Path) -> None:
    bare = tmp_path / "recording.mcap"
    shutil.copy(next(bag.glob("*.mcap")), bare)
    model = oracle(tiny_frames(3))
    assert replay(bare, model, tmp_path / "out", *KNOWN_ANSWER_GATES) == 0
    assert summary_of(tmp_path / "out")["frames"]["processed"] == 3
    (tmp_path / "notes.txt").write_text("not a bag")
    with pytest.raises(BagReadError, match="neither a rosbag2 directory nor a storage file"):
        BagSource(tmp_path / "notes.txt")


def test_a_replay_that_evaluates_nothing_is_an_error(
    oracle: InstallOracle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right images stamped 1 ns after their left: no pair ever completes."""
    frames = tiny_frames(2, ground_truth=False)
    left_info, right_info = camera_infos()
    with rosbag_io.BagWriter(tmp_path / "unpaired") as writer:
        for frame in frames:
            stamp = frame["stamp"]
            writer.write(rosbag_io.LEFT_IMAGE, rosbag_io.image_msg(frame["left"], "rgb8", stamp, "l"), stamp)
            writer.write(
                rosbag_io.RIGHT_IMAGE, rosbag_io.image_msg(frame["right"], "rgb8", stamp + 1, "r"), stamp + 1
            )
            writer.write(rosbag_io.LEFT_INFO, rosbag_io.camera_info_msg(left_info, stamp), stamp)
            writer.write(rosbag_io.RIGHT_INFO, rosbag_io.camera_info_msg(right_info, stamp), stamp)
    model = oracle(frames)
    assert replay(tmp_path / "unpaired", model, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "no frame to replay" in error
    assert f"{rosbag_io.LEFT_IMAGE} and {rosbag_io.RIGHT_IMAGE} with the same header stamp" in error
    assert f"the bag has {rosbag_io.LEFT_INFO} (sensor_msgs/msg/CameraInfo, 2 messages)" in error
    assert summary_of(tmp_path / "out")["frames"]["processed"] == 0


def _constant_steering_graph(path: Path, value: float, window: int) -> Path:
    """A steering graph (the runtime's contract and metadata) whose output is ``value`` for any window."""
    import onnx
    from onnx import TensorProto, helper

    info = ModelInfo(
        mode="steering",
        inputs={"embeddings": (1, window, EMBEDDING_DIM)},
        outputs=("steering",),
        version="test",
        embedding_dim=EMBEDDING_DIM,
        window=window,
    )
    # steering = value + 0 * sum(embeddings): the input stays part of the graph.
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["embeddings"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "value"], ["summed"]),
            helper.make_node("Reshape", ["summed", "shape"], ["steering"]),
        ],
        "constant_steering",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, window, EMBEDDING_DIM])],
        [helper.make_tensor_value_info("steering", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("value", TensorProto.FLOAT, [], [value]),
            helper.make_tensor("shape", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, info.metadata())
    onnx.save(model, path)
    return path


def _write_frames(path: Path, frames: list[dict]) -> Path:
    left_info, right_info = camera_infos()
    with rosbag_io.BagWriter(path) as writer:
        for frame in frames:
            rosbag_io.write_stereo_frame(
                writer, frame["stamp"], frame["left"], frame["right"], left_info, right_info, **frame["truth"]
            )
    return path


def test_constant_steering_scores_the_hand_computed_error(
    oracle: InstallOracle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steering 0.25 rad on frames 0-8 at 10 Hz without frame 4; the truth of frame i is 0.01 i rad.

    Window 3: frames 0, 1 and 5, 6 (after the gap) have no full window, so only 2, 3, 7 and 8 are
    scored: errors 0.23, 0.22, 0.18, 0.17 rad, mean square 0.04065 rad^2.
    """
    frames = [frame for index, frame in enumerate(tiny_frames(9)) if index != 4]
    bag = _write_frames(tmp_path / "gap", frames)
    model = oracle(frames)
    _constant_steering_graph(model.with_name("oracle.steering.onnx"), 0.25, window=3)
    expected_mse = 0.04065 * (180 / math.pi) ** 2  # deg^2
    assert replay(bag, model, tmp_path / "out", "--fail-above", "steering_rmse_deg=11.56") == 0
    steering = summary_of(tmp_path / "out")["steering"]
    assert steering["frames_scored"] == 4 and steering["frames_incomplete_window"] == 4
    assert steering["mse_deg2"] == pytest.approx(expected_mse, rel=1e-12)
    assert steering["rmse_deg"] == pytest.approx(math.sqrt(expected_mse), rel=1e-12)  # 11.552 deg
    assert steering["mae_deg"] == pytest.approx(0.2 * 180 / math.pi, rel=1e-12)
    per_frame = summary_of(tmp_path / "out")["per_frame"]
    assert [row.get("steering_error_deg") is not None for row in per_frame] == [
        False, False, True, True, False, False, True, True
    ]  # fmt: skip
    assert per_frame[2]["steering_error_deg"] == pytest.approx(math.degrees(0.23), rel=1e-12)
    printed = capsys.readouterr().out
    assert "steering: RMSE 11.6 deg, MSE 133.4 deg^2 over 4 frames (4 with an incomplete window" in printed
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Steering</h2>" in report and "mse_deg2" in report and "frames_incomplete_window" in report
    # The same answer is a gate: just below it fails.
    assert replay(bag, model, tmp_path / "tight", "--fail-above", "steering_rmse_deg=11.55") == 1


def test_without_a_steering_graph_steering_is_not_scored_and_says_so(
    bag: Path, oracle: InstallOracle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = oracle(tiny_frames(3))
    assert replay(bag, model, tmp_path / "out") == 0
    summary = summary_of(tmp_path / "out")
    assert "steering" not in summary and summary["run"]["steering_graph"] == "none"
    assert "steering" in summary["run"]["ground_truth"]
    assert "no steering graph ships with this model (oracle.steering.onnx absent)" in capsys.readouterr().out
    assert "No steering graph beside the model" in (tmp_path / "out" / "report.html").read_text()
