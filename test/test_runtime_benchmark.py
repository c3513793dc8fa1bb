"""Latency statistics, isolated measurements, and smoke runs of `mtl-perception benchmark` and
benchmarks/ort_profile.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_replay import tiny_model

from mtl_perception.cli import main
from mtl_perception.errors import UserError
from mtl_perception.runtime.benchmark import LatencyStats, Measurement, MeasurementError, measure_isolated

__all__ = ["tiny_model"]  # session fixture used by name


def test_latency_stats() -> None:
    stats = LatencyStats.of([10.0] * 98 + [100.0, 200.0])
    assert stats.frames == 100
    assert stats.p50_ms == pytest.approx(10.0)
    assert stats.p99_ms > 100.0
    assert stats.mean_ms == pytest.approx(12.8)
    assert stats.fps == pytest.approx(1000 / 12.8)


@pytest.mark.slow
def test_benchmark_command_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    args = ["benchmark", "--sizes", "64x128", "--frames", "2", "--warmup", "1", "--threads", "1"]
    assert main([*args, "--json", str(output)]) == 0
    size = json.loads(output.read_text())["sizes"]["64x128"]
    assert set(size["pipeline"]) == {"onnxruntime", "torch"}
    for entry in size["pipeline"].values():
        assert entry["frames"] == 2 and entry["infer_ms"] > 0 and entry["fps"] > 0
    comparison = size["multitask_vs_single_task"]
    assert {"multitask", "segmentation_only", "disparity_only", "multitask_speedup"} <= set(comparison)
    assert size["opencv_sgbm"]["num_disparities"] % 16 == 0


def test_measurement_round_trips_through_json_and_refuses_unknown_fields() -> None:
    spec = Measurement("sgbm", "sgbm", (32, 64), threads=1, frames=2, warmup=0, max_disparity=16.0)
    assert Measurement.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown measurement fields"):
        Measurement.from_json(spec.to_json()[:-1] + ', "spin": true}')
    with pytest.raises(ValueError, match="needs a model"):
        Measurement("pipeline", "p", (32, 64), threads=1, frames=2, warmup=0)


def test_onnxruntime_is_measured_in_a_process_without_torch(tiny_model: Path) -> None:
    """The worker that times ONNX Runtime loads neither torch nor any other backend."""
    spec = Measurement("pipeline", "ort", (64, 128), threads=1, frames=2, warmup=1, model=str(tiny_model))
    code = (
        "import sys\n"
        "from mtl_perception.runtime.benchmark import Measurement, measure\n"
        f"result = measure(Measurement.from_json({spec.to_json()!r}))\n"
        "assert result['frames'] == 2 and result['infer_ms'] > 0, result\n"
        "loaded = [m for m in ('torch', 'tensorrt') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_isolated_measurements_return_figures_or_fail_loudly(tiny_model: Path, tmp_path: Path) -> None:
    spec = Measurement("infer", "ort", (64, 128), threads=1, frames=3, warmup=1, model=str(tiny_model))
    assert measure_isolated(spec)["frames"] == 3
    sgbm = Measurement("sgbm", "sgbm", (32, 64), threads=1, frames=2, warmup=0, max_disparity=20.0)
    assert measure_isolated(sgbm)["num_disparities"] == 32
    torch_without_pt = tmp_path / "no_checkpoint.onnx"
    torch_without_pt.write_bytes(tiny_model.read_bytes())
    skipped = Measurement(
        "pipeline",
        "torch",
        (64, 128),
        threads=1,
        frames=2,
        warmup=0,
        model=str(torch_without_pt),
        backend="torch",
    )
    assert "no_checkpoint.pt" in measure_isolated(skipped)["skipped"]
    missing = Measurement(
        "infer", "gone", (64, 128), threads=1, frames=2, warmup=0, model=str(tmp_path / "x.onnx")
    )
    with pytest.raises(MeasurementError, match="gone"):
        measure_isolated(missing)


def test_bad_size_is_a_user_error() -> None:
    from mtl_perception.commands.benchmark import parse_size

    assert parse_size("256x512") == (256, 512)
    with pytest.raises(UserError, match="HxW"):
        parse_size("256")


@pytest.mark.slow
def test_a_checkpoint_is_benchmarked_at_other_input_sizes(tmp_path: Path) -> None:
    from fixtures_networks import tiny_mono_config, tiny_stereo_config

    from mtl_perception.networks import build_model, save_checkpoint

    stereo = tmp_path / "stereo.pt"
    save_checkpoint(stereo, build_model(tiny_stereo_config()), tiny_stereo_config())  # trained at 64x128
    output = tmp_path / "bench.json"
    args = ["benchmark", "--checkpoint", str(stereo), "--sizes", "96x160", "--frames", "2", "--warmup", "1"]
    assert main([*args, "--threads", "1", "--backends", "onnxruntime", "--json", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["weights"] == str(stereo)
    assert result["sizes"]["96x160"]["pipeline"]["onnxruntime"]["frames"] == 2
    mono = tmp_path / "mono.pt"
    save_checkpoint(mono, build_model(tiny_mono_config()), tiny_mono_config())
    assert main(["benchmark", "--checkpoint", str(mono), "--sizes", "64x128"]) == 2
    assert main(["benchmark", "--checkpoint", str(stereo), "--sizes", "64x100"]) == 2  # not a multiple of 32


def test_ort_profile_script_reports_kernel_time_per_operator(tiny_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "profile.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ort_profile.py"
    command = [sys.executable, str(script), str(tiny_model), "--threads", "1", "--runs", "2"]
    subprocess.run([*command, "--json", str(output)], check=True, capture_output=True)
    report = json.loads(output.read_text())["models"][str(tiny_model)]
    per_op = report["per_op_ms"]
    assert per_op["Conv"] > 0 and report["kernel_ms_per_run"] == pytest.approx(sum(per_op.values()))
    assert list(per_op.values()) == sorted(per_op.values(), reverse=True)
