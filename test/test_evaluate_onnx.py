"""`evaluate --model`: exported models go through a runtime backend into the same metrics and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import make_synthetic
from fixtures_quantize import export_tiny_model

from mtl_perception.cli import main
from mtl_perception.training.evaluation import evaluate_exported, flat_scalars


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 32x64 test frames: the models (64x128) see them resized, disparity scaled."""
    root = tmp_path_factory.mktemp("evaluate_data")
    make_synthetic(root, frames={"test": 3})
    return root


def evaluate_cli(tmp_path: Path, data_root: Path, *source: str) -> dict:
    out = tmp_path / "eval.json"
    assert main(["evaluate", *source, "--data", str(data_root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["source"] == source[1]
    return report["metrics"]


def assert_same_metrics(a: dict, b: dict) -> None:
    flat_a, flat_b = flat_scalars(a), flat_scalars(b)
    assert set(flat_a) == set(flat_b)
    for key, value in flat_a.items():
        assert flat_b[key] == pytest.approx(value, rel=1e-3, abs=1e-3, nan_ok=True), key


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_onnx_model_scores_like_its_checkpoint(mode: str, tmp_path: Path, data_root: Path) -> None:
    onnx_path = export_tiny_model(tmp_path, mode, train_steps=2)
    from_checkpoint = evaluate_cli(tmp_path, data_root, "--checkpoint", str(onnx_path.with_suffix(".pt")))
    from_onnx = evaluate_cli(tmp_path, data_root, "--model", str(onnx_path))
    assert_same_metrics(from_checkpoint, from_onnx)
    if mode == "stereo":
        assert from_onnx["epe"] is not None and from_onnx["abs_rel"] is not None  # depth from disparity
        assert len(from_onnx["disparity_sparsification"]["curve"]) == 20
    else:
        assert "epe" not in from_onnx and from_onnx["abs_rel"] is not None
    # The torch backend runs the .pt beside the .onnx file: the same numbers again.
    from_torch = evaluate_cli(tmp_path, data_root, "--model", str(onnx_path), "--backend", "torch")
    assert_same_metrics(from_onnx, from_torch)
    # Static batch-1 graphs: a batch of 2 is run frame by frame and gives the same result.
    batched = evaluate_exported(onnx_path, str(data_root), "test", batch_size=2)
    assert_same_metrics(from_onnx, batched)


def test_refuses_two_sources_and_missing_model(tmp_path: Path, data_root: Path, capsys) -> None:
    missing = tmp_path / "missing.onnx"
    args = ["evaluate", "--data", str(data_root)]
    assert main([*args, "--model", str(missing), "--baseline", "sgbm"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main([*args, "--model", str(missing)]) == 2
    assert "missing.onnx" in capsys.readouterr().err
