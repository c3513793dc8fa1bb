"""benchmarks/uncertainty_table.py: the comparison of single model, ensemble and student runs end to end
on tiny checkpoints and a tiny dataset; its pieces have known answers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from fixtures_data import make_synthetic
from fixtures_training import tiny_checkpoints

from mtl_perception.data.datasets import build_dataset


def _script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "uncertainty_table.py"
    spec = importlib.util.spec_from_file_location("uncertainty_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_separation_auroc_has_known_answers() -> None:
    script = _script()
    assert script.separation_auroc([0.1, 0.2], [0.5, 0.6]) == 1.0  # out of domain all more uncertain
    assert script.separation_auroc([0.5, 0.6], [0.1, 0.2]) == 0.0
    assert script.separation_auroc([0.1, 0.5], [0.1, 0.5]) == pytest.approx(0.5)


def test_photo_tensor_crops_the_centre_to_the_model_aspect_then_resizes() -> None:
    image = np.zeros((100, 400, 3), np.uint8)
    image[:, 100:300] = 255  # the centre 200x100: the 2:1 crop of a 64x128 model
    tensor = _script().photo_tensor(image, (64, 128))
    assert tensor.shape == (1, 3, 64, 128) and bool((tensor == 1.0).all())


def test_corrupted_frames_change_the_views_and_keep_the_labels(tmp_path: Path) -> None:
    make_synthetic(tmp_path, {"test": 1})
    dataset = build_dataset("synthetic", tmp_path, "test", eval_size=(64, 128))
    corrupted = _script().CorruptedFrames(dataset, "gaussian_blur")[0]
    clean = dataset[0]
    assert not torch.equal(corrupted["left"], clean["left"]) and not torch.equal(
        corrupted["right"], clean["right"]
    )
    for key in ("semantic", "disparity", "depth"):
        assert torch.equal(corrupted[key], clean[key])


def test_table_scores_single_ensemble_and_out_of_domain_sets(tmp_path: Path, monkeypatch) -> None:
    make_synthetic(tmp_path / "data", {"test": 2})
    make_synthetic(tmp_path / "unseen", {"test": 2}, seed=3)
    paths = tiny_checkpoints(tmp_path, 2)
    out = tmp_path / "table.json"
    argv = [
        "uncertainty_table.py",
        "--model",
        f"single@0={paths[0]}",
        "--model",
        f"single@1={paths[1]}",
        "--model",
        f"ensemble={paths[0]},{paths[1]}",
    ]
    argv += ["--data", str(tmp_path / "data"), "--unseen", str(tmp_path / "unseen"), "--recipes", "darkness"]
    argv += ["--threads", "1", "--json", str(out), "--photos-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    script = _script()
    photos = np.random.default_rng(0).integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    monkeypatch.setattr(script, "load_photos", lambda folder: {"a": photos[0], "b": photos[1]})
    script.main()
    report = json.loads(out.read_text())
    single, ensemble = report["rows"]["single@0"], report["rows"]["ensemble"]
    assert (single["members"], ensemble["members"]) == (1, 2)
    for row in (single, ensemble):
        assert set(row["out_of_domain"]) == {"corrupted/darkness", "unseen_domain", "real_photos"}
        # A photo given as both views has no parallax: scored for segmentation only.
        assert row["out_of_domain"]["real_photos"]["auroc_geometry"] is None
        assert row["in_domain"]["disparity_coverage_2sigma"] is not None
        for ood in (row["out_of_domain"][name] for name in ("corrupted/darkness", "unseen_domain")):
            assert ood["frames"] == 2 and 0.0 <= ood["auroc_semantic"] <= 1.0
    # The ensemble of two different networks is not either of them.
    assert ensemble["in_domain"]["epe"] != single["in_domain"]["epe"]
    assert "| ensemble | stereo | 2 | 1 |" in report["table"]
    assert "| ensemble | corrupted/darkness |" in report["table"]
    # The two single networks are one row kind: their mean ± spread.
    singles = [report["rows"][f"single@{k}"]["in_domain"]["epe"] for k in range(2)]
    summary = report["kinds"]["single"]
    assert summary["repeats"] == 2
    assert summary["in_domain"]["EPE"]["mean"] == pytest.approx(sum(singles) / 2)
    assert summary["in_domain"]["EPE"]["std"] == pytest.approx(abs(singles[0] - singles[1]) / 2**0.5)
    assert "| single | stereo | 1 | 2 |" in report["table"] and " ± " in report["table"]
    # --resume keeps the recorded rows with the same checkpoints and scores only the new ones.
    argv += ["--resume", "--model", f"single@2={paths[1]}"]
    monkeypatch.setattr(sys, "argv", argv)
    loaded = []
    monkeypatch.setattr(
        script, "load_row", lambda paths: loaded.append(paths) or script.load_checkpoint(paths[0])[0]
    )
    script.main()
    resumed = json.loads(out.read_text())
    assert loaded == [[paths[1]]]
    assert resumed["rows"]["ensemble"] == report["rows"]["ensemble"]
    assert resumed["kinds"]["single"]["repeats"] == 3
    # Rows scored on other sets are not kept: another recipe list rescores every row.
    argv += ["--recipes", "jpeg"]
    loaded.clear()
    script.main()
    assert len(loaded) == 4
    assert set(json.loads(out.read_text())["rows"]["ensemble"]["out_of_domain"]) == {
        "corrupted/jpeg",
        "unseen_domain",
        "real_photos",
    }


def test_in_domain_only_scores_the_split_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    make_synthetic(tmp_path / "data", {"val": 2})
    make_synthetic(tmp_path / "unseen", {"val": 2}, seed=3)  # there, and still not scored
    paths = tiny_checkpoints(tmp_path, 1)
    out = tmp_path / "table.json"
    argv = ["uncertainty_table.py", "--model", f"single={paths[0]}", "--split", "val", "--in-domain-only"]
    argv += ["--data", str(tmp_path / "data"), "--unseen", str(tmp_path / "unseen")]
    argv += ["--threads", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    _script().main()
    report = json.loads(out.read_text())
    assert report["rows"]["single"]["out_of_domain"] == {}
    assert report["rows"]["single"]["in_domain"]["epe"] is not None
    assert (report["recipes"], report["unseen"]) == ([], None)
    printed = capsys.readouterr().out
    assert "| single |" in printed and "out-of-domain set" not in printed  # no empty OOD table
    # Photos are out-of-domain too: asking for both is refused rather than half-done.
    monkeypatch.setattr(sys, "argv", [*argv, "--photos-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        _script().main()


def test_a_missing_unseen_folder_is_recorded_as_not_scored(tmp_path: Path, monkeypatch) -> None:
    make_synthetic(tmp_path / "data", {"val": 2})
    paths = tiny_checkpoints(tmp_path, 1)
    out = tmp_path / "table.json"
    argv = ["uncertainty_table.py", "--model", f"single={paths[0]}", "--split", "val"]
    argv += ["--recipes", "darkness", "--data", str(tmp_path / "data"), "--unseen", str(tmp_path / "missing")]
    argv += ["--threads", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    _script().main()
    report = json.loads(out.read_text())
    assert report["unseen"] is None
    assert set(report["rows"]["single"]["out_of_domain"]) == {"corrupted/darkness"}
