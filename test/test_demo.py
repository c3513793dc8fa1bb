"""The one-command demo and node-mode replay, end to end over DDS with a tiny model and bag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures_quantize import export_tiny_model
from fixtures_replay import tiny_bag, tiny_model

from mtl_perception.cli import main

__all__ = ["tiny_bag", "tiny_model"]  # session fixtures used by name

pytest.importorskip("rclpy")


@pytest.mark.slow
def test_demo_end_to_end_through_the_node(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Renders a 4-frame bag at the tiny model's size, plays it into the node, writes the report."""
    out = tmp_path / "demo"
    args = [
        "demo",
        "--model",
        str(tiny_model),
        "--width",
        "128",
        "--height",
        "64",
        "--frames",
        "4",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--backend",
        "onnxruntime",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert str((out / "report.html").resolve()) in printed and "latency_p50_ms" in printed
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["run"]["mode"] == "node"
    assert summary["frames"]["replayed"] == 4
    assert summary["frames"]["processed"] >= 1  # a loaded 2-core machine may drop some: that is measured
    assert summary["frames"]["processed"] + summary["frames"]["dropped"] == 4
    assert "miou" in summary["accuracy"] and summary["latency_ms"]["p50"] > 0
    # The tiny model's steering graph is scored against the bag's steering truth.
    assert "steering" in summary and ("steering: RMSE" in printed or "steering: no frame scored" in printed)
    # The second run reuses the cached bag instead of rendering it again; this model has no
    # steering graph beside it, and the demo says so.
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(tiny_model, bare)
    assert main([*args[:1], "--model", str(bare), *args[3:], "--mode", "pipeline"]) == 0
    printed = capsys.readouterr().out
    assert "rendering" not in printed
    assert "no steering graph ships with this model (model.steering.onnx absent)" in printed
    assert "steering" not in json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_node_mode_replay_collects_outputs_by_stamp(tiny_bag: Path, tiny_model: Path, tmp_path: Path) -> None:
    common = ["--model", str(tiny_model), "--backend", "onnxruntime", "--threads", "1"]
    out = tmp_path / "node"
    assert main(["replay", str(tiny_bag), *common, "--out", str(out), "--mode", "node", "--rate", "0.5"]) == 0
    assert main(["replay", str(tiny_bag), *common, "--out", str(tmp_path / "pipeline")]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    stamps = [row["stamp"] for row in summary["per_frame"]]
    assert stamps == sorted(stamps) and len(stamps) == 6
    processed = [row for row in summary["per_frame"] if row["latency_ms"] is not None]
    assert processed and all("epe" in row for row in processed)
    # Known answer: the node publishes the pipeline's maps, so each frame the node processed scores
    # exactly as the in-process pipeline scores it (a swap or a node-only transformation would not).
    reference = json.loads((tmp_path / "pipeline" / "metrics.json").read_text())["per_frame"]
    by_stamp = {row["stamp"]: row for row in reference}
    for row in processed:
        for metric in ("miou", "epe", "d1_all", "abs_rel"):
            assert row[metric] == pytest.approx(by_stamp[row["stamp"]][metric], abs=1e-6), metric
    # The steering window is 2: the node publishes steering from its second consecutive processed
    # frame on; a frame the node dropped restarts the window (one more frame without steering).
    steering = summary["steering"]
    assert steering["frames_scored"] + steering["frames_incomplete_window"] == len(processed)
    restarts = 1 + sum(row["latency_ms"] is None for row in summary["per_frame"])
    assert 1 <= steering["frames_incomplete_window"] <= restarts
    # Node outputs have no disparity uncertainty topic, so only semantic and depth AUSE exist.
    assert summary["accuracy"]["depth_ause"] is not None
    log = (out / "node.log").read_text()
    assert log.count("stereo perception with backend onnxruntime") == 1
    assert "frames in " in log and "rosout" not in log  # the shutdown summary, logged cleanly after SIGINT


def test_mono_model_replays_through_the_mono_node(tiny_bag: Path, tmp_path: Path) -> None:
    """A mono model reads the bag's left images through `image_rect`; depth is scored, not disparity."""
    model = export_tiny_model(tmp_path, "mono")
    out = tmp_path / "mono"
    args = ["replay", str(tiny_bag), "--model", str(model), "--out", str(out)]
    assert main([*args, "--mode", "node", "--backend", "onnxruntime", "--rate", "0.5"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    processed = [row for row in summary["per_frame"] if row["latency_ms"] is not None]
    assert processed and all("abs_rel" in row and "epe" not in row for row in processed)
    assert "abs_rel" in summary["accuracy"] and "d1_all" not in summary["accuracy"]
    assert "mono perception" in (out / "node.log").read_text()


def test_demo_refuses_a_missing_model(tmp_path: Path) -> None:
    assert main(["demo", "--model", str(tmp_path / "none.onnx"), "--cache", str(tmp_path)]) == 2
