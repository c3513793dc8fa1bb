"""benchmarks/sigma_calibration.py: one σ factor fitted on a split, applied as a shift of the log scale."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from fixtures_data import make_synthetic
from fixtures_training import tiny_checkpoints, tiny_model_dict

from mtl_perception.networks import DeployModel, build_model, model_config_from_dict

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports uncertainty_table beside it
    spec = importlib.util.spec_from_file_location("sigma_calibration", BENCHMARKS / "sigma_calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaled_sigma_multiplies_the_published_uncertainty_and_nothing_else(monkeypatch) -> None:
    script = _script(monkeypatch)
    config = model_config_from_dict(tiny_model_dict("stereo"))
    torch.manual_seed(0)
    model = build_model(config).eval()
    left, right = torch.rand(2, 1, 3, *config.input_size)
    with torch.no_grad():
        plain = dict(zip(DeployModel(model).output_names, DeployModel(model)(left, right), strict=True))
        deploy = DeployModel(script.ScaledSigma(model, 2.5))
        scaled = dict(zip(deploy.output_names, deploy(left, right), strict=True))
    torch.testing.assert_close(scaled["disparity_uncertainty"], 2.5 * plain["disparity_uncertainty"])
    for name in ("disparity", "semantic", "semantic_confidence"):
        torch.testing.assert_close(scaled[name], plain[name])


def test_the_factor_fitted_on_the_scored_split_lowers_its_nll(tmp_path: Path, monkeypatch) -> None:
    """Fitted on the split it scores, the factor is that split's NLL minimum: the scaled NLL cannot be
    higher (it would be if the factor were applied the wrong way round)."""
    make_synthetic(tmp_path / "data", {"val": 2, "test": 2})
    paths = tiny_checkpoints(tmp_path, 2)
    out = tmp_path / "calibration.json"
    argv = ["sigma_calibration.py", "--model", f"single@0={paths[0]}", "--model", f"single@1={paths[1]}"]
    argv += ["--data", str(tmp_path / "data"), "--fit-split", "test", "--threads", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    _script(monkeypatch).main()
    report = json.loads(out.read_text())
    for row in report["rows"].values():
        assert row["sigma_scale"] == pytest.approx(row["test_sigma_scale"])
        assert math.isfinite(row["sigma_scale"]) and row["sigma_scale"] > 0
        assert row["calibrated"]["nll"] <= row["raw"]["nll"] + 1e-9
    assert report["kinds"]["single"]["repeats"] == 2
    assert "| single | 2 |" in report["table"]
