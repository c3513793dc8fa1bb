"""Dataset loaders decode each on-disk layout right: images, disparity, depth, labels, flags."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import (
    HEIGHT,
    KITTI_BASELINE,
    KITTI_P2,
    WIDTH,
    make_cityscapes,
    make_kitti2015,
    make_synthetic,
    write_png,
)
from torch.utils.data import DataLoader

from mtl_perception.data import layout
from mtl_perception.data.datasets import available_splits, build_dataset
from mtl_perception.data.labels import CLASS_ID, IGNORE_INDEX
from mtl_perception.errors import UserError


def _image(tensor: torch.Tensor) -> np.ndarray:
    return np.rint(tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _expected_depth(disparity: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    return np.where(disparity > 0, fx * baseline / np.where(disparity > 0, disparity, 1), 0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, make_synthetic(root)


def test_synthetic_sample_matches_written_files(synthetic: tuple[Path, dict]) -> None:
    root, truth = synthetic
    dataset = build_dataset("synthetic", root, "train")
    assert len(dataset) == 2
    sample = dataset[1]
    gt = truth["train_0000/1"]
    assert sample["left"].dtype == torch.float32 and sample["left"].shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(_image(sample["left"]), gt["left"])
    np.testing.assert_array_equal(_image(sample["right"]), gt["right"])
    np.testing.assert_allclose(sample["disparity"].numpy(), gt["disparity_png"] / 256.0)
    np.testing.assert_allclose(sample["depth"].numpy(), gt["depth_png"] / 256.0)
    assert sample["semantic"].dtype == torch.int64
    np.testing.assert_array_equal(sample["semantic"].numpy(), gt["semantic"])
    assert sample["has_semantic"] and sample["has_depth"] and sample["has_steering"]
    assert sample["steering"].item() == pytest.approx(gt["steering"])
    assert sample["fx"].item() == pytest.approx(40.0) and sample["baseline"].item() == pytest.approx(0.3)
    assert (sample["sequence"], sample["frame"]) == ("train_0000", 1)


def test_synthetic_batches_with_default_collate(synthetic: tuple[Path, dict]) -> None:
    root, _ = synthetic
    batch = next(iter(DataLoader(build_dataset("synthetic", root, "train"), batch_size=2)))
    assert batch["left"].shape == (2, 3, HEIGHT, WIDTH)
    assert batch["semantic"].shape == (2, HEIGHT, WIDTH)
    assert batch["has_semantic"].dtype == torch.bool and batch["steering"].dtype == torch.float32
    assert batch["sequence"] == ["train_0000", "train_0000"]
    assert batch["frame"].tolist() == [0, 1]


def test_unknown_split_lists_available_ones(synthetic: tuple[Path, dict]) -> None:
    root, _ = synthetic
    with pytest.raises(UserError, match=r"available splits: train, val"):
        build_dataset("synthetic", root, "test")
    assert available_splits("synthetic", root) == ["train", "val"]


def test_split_without_sequences_is_not_available(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    manifest = json.loads(layout.manifest_path(tmp_path).read_text())
    manifest["splits"] |= {"val": [], "test": []}  # the generator lists every split
    layout.manifest_path(tmp_path).write_text(json.dumps(manifest))
    assert available_splits("synthetic", tmp_path) == ["train"]
    with pytest.raises(UserError, match=r"available splits: train$"):
        build_dataset("synthetic", tmp_path, "val")


def test_missing_steering_row_is_nan_not_faked(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 2})
    csv_path = layout.steering_path(tmp_path, "train", "train_0000")
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:2]) + "\n")  # header + frame 0
    sample = build_dataset("synthetic", tmp_path, "train")[1]
    assert math.isnan(sample["steering"].item()) and not sample["has_steering"]


def test_manifest_with_other_class_table_is_refused(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    manifest = json.loads(layout.manifest_path(tmp_path).read_text())
    manifest["classes"] = ["road", "car"]
    layout.manifest_path(tmp_path).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="differ from this package's table"):
        build_dataset("synthetic", tmp_path, "train")


def test_missing_right_image_names_the_file(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    right = layout.frame_path(tmp_path, "train", "train_0000", layout.RIGHT_DIR, 0)
    right.unlink()
    with pytest.raises(UserError, match=str(right)):
        build_dataset("synthetic", tmp_path, "train")[0]


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    disparity = layout.frame_path(tmp_path, "train", "train_0000", layout.DISPARITY_DIR, 0)
    disparity.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserError, match=rf"{disparity}: cannot be decoded"):
        build_dataset("synthetic", tmp_path, "train")[0]


def test_label_of_other_size_is_refused(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    semantic = layout.frame_path(tmp_path, "train", "train_0000", layout.SEMANTIC_DIR, 0)
    import cv2

    cv2.imwrite(str(semantic), np.zeros((HEIGHT, WIDTH // 2), dtype=np.uint8))
    with pytest.raises(UserError, match=rf"{semantic}: size 32x32 does not match"):
        build_dataset("synthetic", tmp_path, "train")[0]


def test_eval_size_resizes_and_scales_disparity(synthetic: tuple[Path, dict]) -> None:
    root, truth = synthetic
    sample = build_dataset("synthetic", root, "train", eval_size=(16, 128))[0]
    assert sample["left"].shape == (3, 16, 128) and sample["semantic"].shape == (16, 128)
    assert sample["fx"].item() == pytest.approx(80.0)
    disparity = truth["train_0000/0"]["disparity_png"] / 256.0
    # Every output value is a source disparity times the width scale 2 (or an untouched invalid 0).
    values = sample["disparity"].numpy()
    assert np.isin(np.round(values[values > 0] * 128), np.round(disparity[disparity > 0] * 256)).all()


def test_cityscapes_decoding_mapping_and_flags(tmp_path: Path) -> None:
    truth = make_cityscapes(tmp_path)
    assert available_splits("cityscapes", tmp_path) == ["train", "train_extra"]
    dataset = build_dataset("cityscapes", tmp_path, "train")
    assert [(r.sequence, r.frame) for r in dataset.records] == [("aachen_000000", 19), ("aachen_000001", 19)]
    sample = dataset[0]
    gt = truth["aachen_000000/19"]
    raw = gt["raw_disparity"].astype(np.float64)
    disparity = np.where(raw > 0, (raw - 1) / 256.0, 0.0)
    np.testing.assert_allclose(sample["disparity"].numpy(), disparity, rtol=1e-6)
    np.testing.assert_allclose(
        sample["depth"].numpy(), _expected_depth(disparity, 2262.52, 0.209313), rtol=1e-5
    )
    expected = np.full((HEIGHT, WIDTH), IGNORE_INDEX)
    expected[gt["label_ids"] == 7] = CLASS_ID["road"]
    expected[gt["label_ids"] == 26] = CLASS_ID["car"]
    np.testing.assert_array_equal(sample["semantic"].numpy(), expected)
    np.testing.assert_array_equal(_image(sample["right"]), gt["right"])
    assert sample["has_semantic"] and sample["has_depth"] and not sample["has_steering"]

    extra = build_dataset("cityscapes", tmp_path, "train_extra")[0]
    assert not extra["has_semantic"] and (extra["semantic"] == IGNORE_INDEX).all()
    assert extra["has_depth"] and extra["sequence"] == "bad-honnef_000000"


def test_cityscapes_missing_disparity_flags_no_depth(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    next((tmp_path / "disparity" / "train").rglob("aachen_000000_000019_disparity.png")).unlink()
    sample = build_dataset("cityscapes", tmp_path, "train")[0]
    assert not sample["has_depth"] and (sample["disparity"] == 0).all() and (sample["depth"] == 0).all()


def test_kitti_both_calibration_formats_and_semantics(tmp_path: Path) -> None:
    assert abs(KITTI_BASELINE - 0.532) < 0.01  # the fixture's real KITTI matrices give the real rig
    truth = make_kitti2015(tmp_path)
    assert available_splits("kitti2015", tmp_path) == ["training", "testing"]
    dataset = build_dataset("kitti2015", tmp_path, "training")
    assert [(r.sequence, r.frame) for r in dataset.records] == [("000000", 10), ("000001", 10)]
    for index, scene in enumerate(["000000", "000001"]):  # calib_cam_to_cam, then calib/ (P2/P3)
        sample = dataset[index]
        disparity = truth[f"training/{scene}"]["raw_disparity"] / 256.0
        assert sample["baseline"].item() == pytest.approx(KITTI_BASELINE, rel=1e-6)
        np.testing.assert_allclose(sample["disparity"].numpy(), disparity)
        np.testing.assert_allclose(
            sample["depth"].numpy(), _expected_depth(disparity, KITTI_P2[0], KITTI_BASELINE), rtol=1e-5
        )
    labelled, unlabelled = dataset[0], dataset[1]
    label_ids = truth["training/000000"]["label_ids"]
    assert labelled["has_semantic"] and not unlabelled["has_semantic"]
    np.testing.assert_array_equal(labelled["semantic"].numpy()[label_ids == 11], CLASS_ID["building"])
    np.testing.assert_array_equal(labelled["semantic"].numpy()[label_ids == 23], CLASS_ID["sky"])
    assert (labelled["semantic"].numpy()[label_ids == 4] == IGNORE_INDEX).all()  # "static": not in the table

    test_sample = build_dataset("kitti2015", tmp_path, "testing")[0]
    assert not test_sample["has_depth"] and not test_sample["has_semantic"]
    np.testing.assert_array_equal(_image(test_sample["left"]), truth["testing/000000"]["left"])


def test_kitti_missing_calibration_names_the_file(tmp_path: Path) -> None:
    make_kitti2015(tmp_path)
    calib = tmp_path / "training" / "calib" / "000001.txt"
    calib.unlink()
    with pytest.raises(UserError, match="calibration not found"):
        build_dataset("kitti2015", tmp_path, "training")[1]


def test_unknown_kind_and_root_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown dataset kind"):
        build_dataset("kitti", tmp_path, "training")
    with pytest.raises(UserError, match="dataset root not found"):
        build_dataset("cityscapes", tmp_path / "nowhere", "train")


def test_synthetic_far_and_unknown_pixels_read_back_as_labelled_and_unlabelled(tmp_path: Path) -> None:
    """Known answer of the v2 layout: FAR = infinitely far (valid, d = 0, z = +inf), 0 = unknown."""
    make_synthetic(tmp_path, frames={"train": 1})
    disparity_png = np.full((HEIGHT, WIDTH), 10 * 256, np.uint16)  # 10 px
    depth_png = np.full((HEIGHT, WIDTH), 3 * 256, np.uint16)  # 3 m
    disparity_png[0, :4] = depth_png[0, :4] = layout.FAR
    disparity_png[1, :4] = depth_png[1, :4] = layout.UNKNOWN
    disparity_png[2, 0] = depth_png[2, 0] = layout.FAR - 1  # the largest real value
    for kind, raw in [(layout.DISPARITY_DIR, disparity_png), (layout.DEPTH_DIR, depth_png)]:
        path = layout.frame_path(tmp_path, "train", layout.sequence_name("train", 0), kind, 0)
        write_png(path, raw)
    sample = build_dataset("synthetic", tmp_path, "train")[0]
    disparity, depth = sample["disparity"].numpy(), sample["depth"].numpy()
    disparity_valid, depth_valid = sample["disparity_valid"].numpy(), sample["depth_valid"].numpy()
    assert sample["disparity_valid"].dtype == torch.bool and sample["depth_valid"].dtype == torch.bool
    # Far: a real label.
    assert disparity_valid[0, :4].all() and depth_valid[0, :4].all()
    assert (disparity[0, :4] == 0).all() and np.isposinf(depth[0, :4]).all()
    # Unknown: no label.
    assert not disparity_valid[1, :4].any() and not depth_valid[1, :4].any()
    assert (disparity[1, :4] == 0).all() and (depth[1, :4] == 0).all()
    # Measured values, up to the clamp just below the sentinel.
    assert disparity[2, 0] == pytest.approx(65534 / 256) and depth[2, 0] == pytest.approx(65534 / 256)
    assert disparity_valid[3:].all() and (disparity[3:] == 10).all() and (depth[3:] == 3).all()


def test_layout_encoding_round_trip_and_clamp() -> None:
    depth = np.array([[2.5, np.inf, 0.0, 1000.0]], np.float32)
    valid = np.array([[True, True, False, True]])
    raw = layout.encode_png(depth, valid, layout.DEPTH_SCALE)
    np.testing.assert_array_equal(raw, [[640, layout.FAR, layout.UNKNOWN, layout.FAR - 1]])
    decoded, decoded_valid = layout.decode_depth(raw)
    np.testing.assert_array_equal(decoded_valid, valid)
    assert decoded[0, 0] == 2.5 and np.isposinf(decoded[0, 1]) and decoded[0, 2] == 0
    disparity = np.array([[0.0, 0.0, 3.0]], np.float32)
    raw = layout.encode_png(disparity, np.array([[True, False, True]]), layout.DISPARITY_SCALE)
    np.testing.assert_array_equal(raw, [[layout.FAR, layout.UNKNOWN, 768]])


def test_kitti_and_cityscapes_masks_follow_their_invalid_conventions(tmp_path: Path) -> None:
    make_kitti2015(tmp_path / "kitti")
    sample = build_dataset("kitti2015", tmp_path / "kitti", "training")[0]
    # KITTI has no far label: valid exactly where a disparity was measured.
    np.testing.assert_array_equal(sample["disparity_valid"].numpy(), sample["disparity"].numpy() > 0)
    np.testing.assert_array_equal(sample["depth_valid"].numpy(), sample["disparity_valid"].numpy())
    assert np.isfinite(sample["depth"].numpy()).all()

    make_cityscapes(tmp_path / "cs")
    path = next((tmp_path / "cs" / "disparity" / "train").rglob("aachen_000000_000019_disparity.png"))
    raw = np.full((HEIGHT, WIDTH), 1 + 5 * 256, np.uint16)  # 5 px
    raw[0, 0] = 0  # invalid
    raw[0, 1] = 1  # d = (1 - 1) / 256 = 0: measured infinitely far
    write_png(path, raw)
    sample = build_dataset("cityscapes", tmp_path / "cs", "train")[0]
    valid, depth = sample["disparity_valid"].numpy(), sample["depth"].numpy()
    assert not valid[0, 0] and depth[0, 0] == 0
    assert valid[0, 1] and sample["disparity"][0, 1] == 0 and np.isposinf(depth[0, 1])
    assert valid.sum() == HEIGHT * WIDTH - 1 and sample["depth_valid"].numpy().sum() == valid.sum()
