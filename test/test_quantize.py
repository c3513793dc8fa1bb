"""INT8 quantization: metadata kept, runtime loads it, outputs close to FP32, CLI and benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_data import make_synthetic
from fixtures_quantize import export_tiny_model

from mtl_perception.cli import main
from mtl_perception.commands.quantize import hold_out
from mtl_perception.data.frames import frame_feeds, procedural_frames
from mtl_perception.errors import UserError
from mtl_perception.export.quantize import (
    activation_products,
    calibration_feeds,
    int8_drift,
    int8_path_for,
    output_head_nodes,
    quantize_int8,
)
from mtl_perception.model_info import steering_path_for
from mtl_perception.runtime import CameraModel, Pipeline, create_backend, read_model_info

# Measured on this fixture (40 training steps, 4 calibration frames, 2 held-out test frames): 98 % of
# pixels keep their class, disparity moves 0.06 px on average; the bounds leave room for CPU kernels.
MIN_AGREEMENT = 0.9
MAX_DISPARITY_DRIFT_PX = 0.5


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(fp32 model, int8 model written by the CLI, dataset root)."""
    root = tmp_path_factory.mktemp("quantize")
    fp32 = export_tiny_model(root, "stereo", train_steps=40)
    steering_path_for(fp32).write_bytes(b"steering graph stand-in")
    make_synthetic(root / "data", frames={"val": 6, "test": 2})
    report = root / "quantize.json"
    args = ["quantize", str(fp32), "--data", str(root / "data"), "--frames", "4", "--check-frames", "2"]
    assert main([*args, "--json", str(report)]) == 0
    return fp32, int8_path_for(fp32), root / "data"


def test_int8_file_keeps_metadata_and_holds_int8_weights(quantized: tuple[Path, Path, Path]) -> None:
    fp32, int8, _ = quantized
    assert int8.name == "tiny.int8.onnx"
    assert steering_path_for(int8).read_bytes() == steering_path_for(fp32).read_bytes()
    source, info = read_model_info(fp32), read_model_info(int8)
    assert (info.mode, info.input_size, info.classes) == (source.mode, source.input_size, source.classes)
    assert (info.max_disparity, info.embedding_dim, info.version) == (
        source.max_disparity,
        source.embedding_dim,
        source.version,
    )
    assert info.extra["precision"] == "int8"
    assert info.extra["int8_calibration"].startswith("minmax")
    model = onnx.load(str(int8))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert len(int8_weights) > 20  # per-channel conv weights of the backbone and decoders
    report = json.loads((fp32.parent / "quantize.json").read_text())
    # The disparity heads and the cost volume stay FP32: their weights (second operands) reach them
    # without a DequantizeLinear.
    assert report["fp32_layers"]
    for name in report["fp32_layers"]:
        assert not _quantized_inputs(model, name)[1], name


def test_runtime_runs_int8_with_fp32_shapes_dtypes_and_close_outputs(
    quantized: tuple[Path, Path, Path],
) -> None:
    fp32, int8, data = quantized
    reference, candidate = create_backend("onnxruntime", fp32), create_backend("onnxruntime", int8)
    feed = frame_feeds(procedural_frames(reference.info.input_size, 1, seed=3), reference.info)[0]
    want = {k: np.array(v) for k, v in reference.infer(feed).items()}
    got = candidate.infer(feed)
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
    # Drift on held-out frames of the calibration data's domain (the dataset's test split).
    drift = int8_drift(fp32, int8, calibration_feeds(data, "test", reference.info, 2))
    assert drift["segmentation_agreement"] > MIN_AGREEMENT
    assert 0 < drift["disparity_mean_abs_diff"] < MAX_DISPARITY_DRIFT_PX  # > 0: it really is quantized
    # And through the whole pipeline, as the ROS node runs it.
    left, right = procedural_frames((96, 200), 1, seed=4)[0]
    result = Pipeline(candidate).process(left, right, camera=CameraModel(fx=100.0, baseline=0.3))
    assert result.semantic.shape == (96, 200) and np.isfinite(result.disparity).all()


def test_int8_evaluates_like_fp32_through_the_cli(quantized: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fp32, int8, data = quantized
    metrics = {}
    for model in (fp32, int8):
        out = tmp_path / f"{model.stem}.json"
        assert main(["evaluate", "--model", str(model), "--data", str(data), "--json", str(out)]) == 0
        metrics[model] = json.loads(out.read_text())["metrics"]
    assert metrics[fp32]["epe"] == pytest.approx(metrics[int8]["epe"], abs=MAX_DISPARITY_DRIFT_PX)
    assert metrics[fp32]["pixel_accuracy"] == pytest.approx(metrics[int8]["pixel_accuracy"], abs=0.1)


def test_benchmark_times_an_exported_file(quantized: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, int8, _ = quantized
    out = tmp_path / "bench.json"
    args = ["benchmark", "--model", str(int8), "--backends", "onnxruntime", "torch", "--threads", "1"]
    args += ["--camera-sizes", "96x200"]
    assert main([*args, "--frames", "2", "--warmup", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["model"]
    assert result["precision"] == "int8" and result["input_size"] == [64, 128]
    assert result["pipeline"]["onnxruntime"]["frames"] == 2
    assert "skipped" in result["pipeline"]["torch"]  # no tiny.int8.pt checkpoint beside it
    camera = result["camera_sizes"]["96x200"]
    assert list(camera) == ["onnxruntime"] and camera["onnxruntime"]["frames"] == 2
    share = camera["onnxruntime"]["pre_post_share_of_infer"]
    split = camera["onnxruntime"]
    assert share == pytest.approx((split["pre_ms"] + split["post_ms"]) / split["infer_ms"], rel=1e-2)


def test_refuses_int8_input_bad_method_and_empty_calibration(quantized: tuple[Path, Path, Path]) -> None:
    fp32, int8, data = quantized
    assert main(["quantize", str(int8), "--data", str(data), "--frames", "1"]) == 2
    feed = frame_feeds(procedural_frames((64, 128), 1), read_model_info(fp32))
    with pytest.raises(UserError, match="calibration method"):
        quantize_int8(fp32, fp32.with_name("x.onnx"), feed, method="median")
    with pytest.raises(UserError, match="no calibration frames"):
        quantize_int8(fp32, fp32.with_name("x.onnx"), [])


def test_output_heads_are_the_last_weighted_layers(quantized: tuple[Path, Path, Path]) -> None:
    model = onnx.load(str(quantized[0]))
    heads = output_head_nodes(model, ["disparity"])
    assert heads and all(h.endswith("Conv") for h in heads)
    assert output_head_nodes(model, ["no_such_output"]) == []


def _quantized_inputs(model: onnx.ModelProto, node_name: str) -> list[bool]:
    """Per input of ``node_name``: does it come from a DequantizeLinear (an INT8 tensor)?"""
    producer = {out: node for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [name in producer and producer[name].op_type == "DequantizeLinear" for name in node.input]


def test_cost_volume_stays_fp32_as_the_model_card_says(quantized: tuple[Path, Path, Path]) -> None:
    fp32, int8, _ = quantized
    products = activation_products(onnx.load(str(fp32)))
    assert products, "the stereo graph's cost volume is a MatMul of two activations"
    model = onnx.load(str(int8))
    for name in products:
        assert _quantized_inputs(model, name) == [False, False]
    # The check can fail: other weighted layers of the same file do read INT8 tensors.
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert any(all(_quantized_inputs(model, name)[:2]) for name in convs)


def test_hold_out_spreads_check_frames_and_keeps_calibration() -> None:
    calibration, check = hold_out(list(range(10)), 2)
    assert check == [2, 7] and len(calibration) == 8 and not set(check) & set(calibration)
    assert hold_out([0, 1], 5) == ([0], [1])
    assert hold_out([0], 3) == ([0], [])
    assert hold_out([0, 1, 2], 0) == ([0, 1, 2], [])
