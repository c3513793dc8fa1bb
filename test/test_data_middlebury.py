"""The Middlebury loader decodes PFM disparity, calib.txt depth, unknown pixels and resizing right."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from fixtures_data import (
    HEIGHT,
    MIDDLEBURY_BASELINE_MM,
    MIDDLEBURY_CALIB,
    MIDDLEBURY_DOFFS,
    MIDDLEBURY_F,
    WIDTH,
    make_middlebury,
    write_middlebury_scene,
)
from torch.utils.data import DataLoader

from mtl_perception.data.augment import AugmentConfig
from mtl_perception.data.datasets import available_splits, build_dataset
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.middlebury import MiddleburyDataset, read_pfm
from mtl_perception.data.sample import StereoArrays
from mtl_perception.errors import UserError


def _image(tensor: torch.Tensor) -> np.ndarray:
    return np.rint(tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _known(disparity: np.ndarray) -> np.ndarray:
    """What the loader must return: the written disparity where known, 0 where inf / NaN / 0."""
    return np.where(np.isfinite(disparity) & (disparity > 0), disparity, 0.0)


@pytest.fixture(scope="module")
def middlebury(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("middlebury")
    return root, make_middlebury(root)


@pytest.mark.parametrize(("scale", "order"), [("-1.0", "<"), ("1.0", ">")])
def test_pfm_rows_are_stored_bottom_up_and_read_top_first(tmp_path: Path, scale: str, order: str) -> None:
    # The file written byte by byte: the bottom image row (4, 5, inf) comes first in the data.
    path = tmp_path / "tiny.pfm"
    body = struct.pack(f"{order}3f", 4.0, 5.0, float("inf")) + struct.pack(f"{order}3f", 1.0, 2.0, 3.0)
    path.write_bytes(f"Pf\n3 2\n{scale}\n".encode("ascii") + body)
    np.testing.assert_array_equal(read_pfm(path), np.array([[1, 2, 3], [4, 5, np.inf]], dtype=np.float32))


def test_colour_or_corrupt_pfm_is_refused(tmp_path: Path) -> None:
    colour = tmp_path / "colour.pfm"
    colour.write_bytes(b"PF\n1 1\n-1.0\n" + struct.pack("<3f", 1.0, 2.0, 3.0))
    with pytest.raises(UserError, match="expected a single-channel float PFM"):
        read_pfm(colour)
    corrupt = tmp_path / "corrupt.pfm"
    corrupt.write_bytes(b"Pf\n300 200\n-1.0\n" + b"\x00" * 12)
    with pytest.raises(UserError, match="cannot be decoded"):
        read_pfm(corrupt)


def test_splits_and_frames(middlebury: tuple[Path, dict]) -> None:
    root, _ = middlebury
    assert available_splits("middlebury", root) == ["testQ", "trainingQ"]
    dataset = build_dataset("middlebury", root, "trainingQ")
    assert [(r.sequence, r.frame) for r in dataset.records] == [("Motorcycle", 0), ("Piano", 0)]
    # MiddEval3 names the left ground truth disp0GT.pfm; disp1.pfm (the right view's) is never used.
    assert [r.disparity.name for r in dataset.records if r.disparity] == ["disp0.pfm", "disp0GT.pfm"]


def test_disparity_depth_and_unknown_pixels(middlebury: tuple[Path, dict]) -> None:
    root, truth = middlebury
    dataset = build_dataset("middlebury", root, "trainingQ")
    for index, scene in enumerate(["Motorcycle", "Piano"]):
        sample, gt = dataset[index], truth[f"trainingQ/{scene}"]
        disparity = _known(gt["disparity"])
        assert (disparity == 0).mean() > 0.2  # the fixture's inf, NaN and 0 pixels are all there
        np.testing.assert_array_equal(sample["disparity"].numpy(), disparity)
        # Middlebury's rule: Z = baseline * f / (d + doffs), baseline in mm.
        baseline = MIDDLEBURY_BASELINE_MM / 1000.0
        depth = np.where(disparity > 0, baseline * MIDDLEBURY_F / (disparity + MIDDLEBURY_DOFFS), 0.0)
        np.testing.assert_allclose(sample["depth"].numpy(), depth, rtol=1e-6)
        assert np.isfinite(sample["depth"].numpy()).all()  # unknown is 0, never a fake +inf "far"
        np.testing.assert_array_equal(_image(sample["left"]), gt["left"])
        np.testing.assert_array_equal(_image(sample["right"]), gt["right"])
        assert sample["fx"].item() == pytest.approx(MIDDLEBURY_F)
        assert sample["baseline"].item() == pytest.approx(baseline)
        assert sample["doffs"].item() == pytest.approx(MIDDLEBURY_DOFFS)
        assert sample["has_depth"] and not sample["has_semantic"]
        assert (sample["semantic"] == IGNORE_INDEX).all()


def test_scene_without_ground_truth_has_no_depth(middlebury: tuple[Path, dict]) -> None:
    root, truth = middlebury
    sample = build_dataset("middlebury", root, "testQ")[0]
    assert not sample["has_depth"] and (sample["disparity"] == 0).all() and (sample["depth"] == 0).all()
    np.testing.assert_array_equal(_image(sample["left"]), truth["testQ/Australia"]["left"])


def test_root_of_scenes_is_split_dot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gts = [write_middlebury_scene(tmp_path / name, rng) for name in ("a", "b")]
    assert available_splits("middlebury", tmp_path) == ["."]
    batch = next(iter(DataLoader(build_dataset("middlebury", tmp_path, "."), batch_size=2)))
    assert batch["sequence"] == ["a", "b"] and batch["disparity"].shape == (2, HEIGHT, WIDTH)
    np.testing.assert_array_equal(batch["disparity"][1].numpy(), _known(gts[1]["disparity"]))


def test_eval_size_scales_disparity_with_width_and_keeps_depth(middlebury: tuple[Path, dict]) -> None:
    root, truth = middlebury
    source = build_dataset("middlebury", root, "trainingQ")[0]
    sample = build_dataset("middlebury", root, "trainingQ", eval_size=(16, 128))[0]
    assert sample["left"].shape == (3, 16, 128)
    assert sample["fx"].item() == pytest.approx(2 * MIDDLEBURY_F)
    disparity = _known(truth["trainingQ/Motorcycle"]["disparity"])
    values = sample["disparity"].numpy()
    # Each output is a source disparity times the width scale 2 (or an untouched unknown 0)...
    assert np.isin(values[values > 0], 2 * disparity[disparity > 0]).all()
    # ... while depth keeps its metric values.
    depth = sample["depth"].numpy()
    assert np.isin(depth[depth > 0], source["depth"].numpy()).all()


def test_zoom_scales_disparity(middlebury: tuple[Path, dict]) -> None:
    root, truth = middlebury
    still = {name: 0.0 for name in ("brightness", "contrast", "saturation", "hue", "gamma")}
    augment = AugmentConfig(**still, blur_probability=0.0, zoom_range=(2.0, 2.0))
    torch.manual_seed(0)
    sample = build_dataset("middlebury", root, "trainingQ", augment=augment)[0]
    assert sample["disparity"].shape == (HEIGHT, WIDTH)  # zoomed in, then cropped to the input size
    disparity = _known(truth["trainingQ/Motorcycle"]["disparity"])
    values = sample["disparity"].numpy()
    assert (values > 0).any() and np.isin(values[values > 0], 2 * disparity[disparity > 0]).all()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("baseline=193.001\n", "", "missing baseline"),
        ("doffs=124.343\n", "", "missing doffs"),
        ("cam0=[3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]", "cam0=[3979.911 0 1244.772]", "3x3"),
        ("cam0=[3979.911 0 1244.772;", "cam0=3979.911 0 1244.772;", "must be a matrix"),
        ("cam1=[3979.911 0 1369.115;", "cam1=[3979.911 x 1369.115;", "cam1 is not a 3x3"),
        ("baseline=193.001", "baseline=193,001", r"baseline='193,001' is not a float"),
        ("baseline=193.001", "baseline=-193.001", "must be positive"),
        ("width=64", "width=64.5", "width='64.5' is not a int"),
        ("isint=0\n", "isint 0\n", r"calib.txt:8: expected key=value"),
    ],
)
def test_malformed_calib_is_a_clear_error(tmp_path: Path, old: str, new: str, message: str) -> None:
    write_middlebury_scene(tmp_path / "scene", np.random.default_rng(0))
    assert old in MIDDLEBURY_CALIB
    (tmp_path / "scene" / "calib.txt").write_text(MIDDLEBURY_CALIB.replace(old, new))
    with pytest.raises(UserError, match=message):
        build_dataset("middlebury", tmp_path, ".")[0]


def test_calib_of_other_resolution_and_missing_calib(tmp_path: Path) -> None:
    write_middlebury_scene(tmp_path / "scene", np.random.default_rng(0))
    calib = tmp_path / "scene" / "calib.txt"
    calib.write_text(MIDDLEBURY_CALIB.replace(f"width={WIDTH}", "width=2964"))
    with pytest.raises(UserError, match=rf"written for {HEIGHT}x2964 images"):
        build_dataset("middlebury", tmp_path, ".")[0]
    calib.unlink()
    with pytest.raises(UserError, match="calibration not found"):
        build_dataset("middlebury", tmp_path, ".")[0]


def _real_pairs_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "real_pairs.py"
    spec = importlib.util.spec_from_file_location("real_pairs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_scene_writer_round_trips_through_the_loader(tmp_path: Path) -> None:
    script = _real_pairs_script()
    rng = np.random.default_rng(5)
    left, right = (rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(2))
    disparity = rng.uniform(1.0, 40.0, (HEIGHT, WIDTH)).astype(np.float32)
    disparity[:3, :5] = np.inf  # an asymmetric unknown corner: a flipped PFM would move it
    calib = {"f": 100.0, "cx": 30.0, "cy": 15.0, "doffs": 4.5, "baseline_mm": 250.0}
    script.write_scene(tmp_path / "scene", left, right, disparity, calib)
    assert "cam1=[100.0 0 34.500;" in (tmp_path / "scene" / "calib.txt").read_text()
    arrays = MiddleburyDataset(tmp_path, ".").load_arrays(0)
    np.testing.assert_array_equal(arrays.disparity, _known(disparity))
    np.testing.assert_array_equal(arrays.left, left)
    expected = np.where(arrays.disparity > 0, 0.25 * 100.0 / (arrays.disparity + 4.5), 0.0)
    np.testing.assert_allclose(arrays.depth, expected, rtol=1e-6)
    # The benchmark's depth score: the true disparity gives AbsRel 0, one 10 % too large does not.
    assert script.depth_abs_rel(arrays.disparity, arrays) == pytest.approx(0.0, abs=1e-6)
    assert script.depth_abs_rel(arrays.disparity * 1.1, arrays) > 0.03


def test_benchmark_sgbm_scores_its_pixels_and_its_holes(tmp_path: Path) -> None:
    script = _real_pairs_script()
    rng = np.random.default_rng(6)
    texture = cv2.resize(
        rng.integers(0, 256, (HEIGHT, WIDTH // 2 + 8, 3), dtype=np.uint8), (WIDTH + 16, HEIGHT)
    )
    shift = 6  # a fronto-parallel plane 6 px away: right[:, x - 6] = left[:, x]
    left, right = texture[:, :WIDTH], texture[:, shift : shift + WIDTH]
    gt = np.full((HEIGHT, WIDTH), float(shift), dtype=np.float32)
    valid = np.ones_like(gt, dtype=bool)
    arrays = StereoArrays(
        left=left,
        right=right,
        semantic=np.zeros_like(gt, np.uint8),
        disparity=gt,
        depth=gt,
        disparity_valid=valid,
        depth_valid=valid,
        fx=1.0,
        baseline=1.0,
        has_semantic=False,
        has_depth=True,
    )
    scores = script.score_sgbm(arrays, max_disparity=16)
    own, holes = scores["on_its_pixels"], scores["holes_counted"]
    assert own["epe_px"] < 0.5 and own["pixels"] < holes["pixels"] == HEIGHT * WIDTH
    # SGBM's left border (no match within the range) is a hole: predicted 0, an error of 6 px there.
    assert holes["epe_px"] > own["epe_px"] and scores["density"] == pytest.approx(
        own["pixels"] / holes["pixels"]
    )


def test_evaluation_depth_from_the_true_disparity_is_the_true_depth(middlebury: tuple[Path, dict]) -> None:
    """Scoring depth on Middlebury needs its principal-point offset: fx * B / d alone is off by doffs."""
    from mtl_perception.training.evaluation import add_depth_from_disparity

    root, _ = middlebury
    for eval_size in (None, (24, 40)):  # also after the resize `evaluate --eval-size` does
        sample = build_dataset("middlebury", root, "trainingQ", eval_size=eval_size)[0]
        batch = {k: v[None] for k, v in sample.items() if k in ("fx", "baseline", "doffs")}
        outputs = {"disparity": sample["disparity"][None]}
        add_depth_from_disparity(outputs, batch)
        known = sample["disparity"] > 0
        torch.testing.assert_close(outputs["depth"][0][known], sample["depth"][known], rtol=1e-5, atol=0)
        del batch["doffs"]  # the old rule: depth off by the offset
        add_depth_from_disparity(outputs, batch)
        assert not torch.allclose(outputs["depth"][0][known], sample["depth"][known], rtol=1e-2)
