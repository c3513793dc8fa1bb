"""`mtl-perception infer` on image files and folders: the maps it writes are the pipeline's."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_replay import tiny_model

from mtl_perception.cli import main
from mtl_perception.contract import OutputPolicy
from mtl_perception.data.frames import procedural_frames
from mtl_perception.runtime import CameraModel, Pipeline, create_backend

__all__ = ["tiny_model"]  # session fixture used by name
SIZE = (70, 150)  # not the tiny model's 64x128: resizing is part of what is checked
FX, BASELINE = 80.0, 0.3


def _write_pairs(root: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = procedural_frames(SIZE, count, seed=4)
    for index, (left, right) in enumerate(pairs):
        for view, image in (("left", left), ("right", right)):
            (root / view).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / view / f"frame_{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return pairs


def test_stereo_folders_give_the_pipeline_maps(tiny_model: Path, tmp_path: Path) -> None:
    pairs = _write_pairs(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = [
        "infer",
        str(tmp_path / "in" / "left"),
        str(tmp_path / "in" / "right"),
        "--model",
        str(tiny_model),
    ]
    args += ["--out", str(out), "--fx", str(FX), "--baseline", str(BASELINE), "--formats", "npy", "pfm"]
    args += ["--backend", "onnxruntime", "--threads", "1", "--min-disparity", "1.0"]
    assert main(args) == 0

    backend = create_backend("onnxruntime", tiny_model, threads=1)
    pipeline = Pipeline(backend, policy=OutputPolicy(min_disparity=1.0))
    for index, (left, right) in enumerate(pairs):
        expected = pipeline.process(left, right, camera=CameraModel(FX, BASELINE))
        stem = out / f"frame_{index}"
        np.testing.assert_array_equal(
            cv2.imread(f"{stem}_semantic.png", cv2.IMREAD_UNCHANGED), expected.semantic
        )
        for name in ("disparity", "depth", "depth_uncertainty", "semantic_uncertainty"):
            saved = np.load(f"{stem}_{name}.npy")
            np.testing.assert_array_equal(saved, getattr(expected, name), err_msg=name)
            pfm = cv2.imread(f"{stem}_{name}.pfm", cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(pfm, saved, err_msg=f"{name}.pfm")
        for name in ("semantic_color", "overlay", "disparity_color", "depth_color"):
            assert cv2.imread(f"{stem}_{name}.png").shape == (*SIZE, 3)
    backend.close()
    index = json.loads((out / "index.json").read_text())
    assert index["mode"] == "stereo" and sorted(index["frames"]) == ["frame_0", "frame_1"]


def test_single_pair_without_calibration_writes_no_depth(tiny_model: Path, tmp_path: Path) -> None:
    _write_pairs(tmp_path / "in", 1)
    left, right = tmp_path / "in" / "left" / "frame_0.png", tmp_path / "in" / "right" / "frame_0.png"
    out = tmp_path / "out"
    assert main(["infer", str(left), str(right), "--model", str(tiny_model), "--out", str(out)]) == 0
    assert (out / "frame_0_disparity.npy").is_file()
    assert not list(out.glob("*depth*"))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one_input", "is a stereo model"),
        ("unpaired", "no right image of the same name"),
        ("half_calibration", "both --fx and --baseline"),
    ],
)
def test_clear_errors(
    case: str, message: str, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _write_pairs(tmp_path / "in", 2)
    left, right = tmp_path / "in" / "left", tmp_path / "in" / "right"
    args = ["infer", str(left), str(right), "--model", str(tiny_model), "--out", str(tmp_path / "out")]
    if case == "one_input":
        args.remove(str(right))
    elif case == "unpaired":
        (right / "frame_1.png").rename(right / "other.png")
    else:
        args += ["--fx", "80"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
