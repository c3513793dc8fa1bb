"""Metrics against hand-computed values: pooled mIoU, D1 with its 5 % rule, EPE, depth, ECE, AUSE."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mtl_perception.metrics import (
    DepthMetrics,
    DisparityMetrics,
    ExpectedCalibrationError,
    MultiTaskMetrics,
    SegmentationMetrics,
    ause,
    sparsification_curves,
)


def test_miou_pools_pixels_over_frames() -> None:
    metrics = SegmentationMetrics(num_classes=3, class_names=("a", "b", "c"))
    # Frame 1: class 0 all right (4 px). Frame 2: class 1 has 1 of 2 right, 1 px predicted as 0; 255 ignored.
    metrics.update(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))
    metrics.update(np.array([[1, 0], [2, 2]]), np.array([[1, 1], [255, 255]]))
    out = metrics.compute()
    # Pooled: class 0 tp=4, fp=1 -> 4/5; class 1 tp=1, fn=1 -> 1/2; class 2 never in GT or pred
    # (ignored pixels do not count as predictions) -> NaN, not averaged.
    assert out["iou"]["a"] == pytest.approx(0.8)
    assert out["iou"]["b"] == pytest.approx(0.5)
    assert np.isnan(out["iou"]["c"])
    assert out["miou"] == pytest.approx(0.65)
    assert out["pixel_accuracy"] == pytest.approx(5 / 6)


def test_d1_needs_both_3px_and_5_percent() -> None:
    gt = np.array([[10.0, 100.0, 100.0, 50.0, 0.0]])
    pred = np.array([[14.0, 104.0, 106.0, 50.5, 80.0]])
    # 10 px off by 4: > 3 and > 0.5 -> outlier. 100 off by 4: > 3 but < 5 -> inlier. 100 off by 6 -> outlier.
    # 50 off by 0.5 -> inlier. gt 0 is invalid and ignored.
    metrics = DisparityMetrics()
    metrics.update(pred, gt)
    out = metrics.compute()
    assert out["d1_all"] == pytest.approx(2 / 4)
    assert out["epe"] == pytest.approx((4 + 4 + 6 + 0.5) / 4)


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    metrics = DisparityMetrics()
    metrics.update(torch.tensor([[[14.0, 50.0]]]), torch.tensor([[[10.0, 50.0]]]))  # Nx1xW batch
    assert metrics.compute()["epe"] == pytest.approx(2.0)


def test_nan_disparity_prediction_is_an_error_not_a_skip() -> None:
    metrics = DisparityMetrics()
    metrics.update(np.array([[np.nan, 10.0]]), np.array([[10.0, 10.0]]))
    out = metrics.compute()
    assert out["d1_all"] == pytest.approx(0.5)  # the NaN pixel counts, as an outlier


def test_disparity_pools_pixels_not_images() -> None:
    metrics = DisparityMetrics()
    metrics.update(np.array([[2.0]]), np.array([[1.0]]))  # one pixel, error 1
    metrics.update(np.full((1, 3), 1.0), np.full((1, 3), 1.0))  # three pixels, error 0
    assert metrics.compute()["epe"] == pytest.approx(1 / 4)  # per-image mean would be 0.5


def test_depth_metrics_by_hand() -> None:
    gt = np.array([[10.0, 20.0, 0.0, 100.0]])  # 0 invalid, 100 beyond max_depth 80
    pred = np.array([[11.0, 30.0, 5.0, 100.0]])
    metrics = DepthMetrics(max_depth=80.0)
    metrics.update(pred, gt)
    out = metrics.compute()
    assert out["abs_rel"] == pytest.approx((0.1 + 0.5) / 2)
    assert out["rmse"] == pytest.approx(np.sqrt((1 + 100) / 2))
    assert out["delta1"] == pytest.approx(0.5)


def test_depth_scale_is_the_median_frame_bias_and_median_scaling_removes_it() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.0, 60.0, (3, 8, 8))
    metrics = DepthMetrics()
    # Frames 10 % near, 10 % near and 20 % far: the median frame's bias is 0.9.
    metrics.update(gt * np.array([0.9, 0.9, 1.2])[:, None, None], gt)
    out = metrics.compute()
    assert out["depth_scale"] == pytest.approx(0.9)
    assert out["abs_rel"] == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert out["abs_rel_median_scaled"] == pytest.approx(0.0, abs=1e-12)  # the shape is exact
    # Noise that median scaling cannot remove stays: an unbiased but noisy prediction keeps its AbsRel.
    noisy = DepthMetrics()
    noisy.update(gt * np.where(rng.random(gt.shape) < 0.5, 0.8, 1.25), gt)
    assert noisy.compute()["abs_rel_median_scaled"] > 0.15


def test_ece_by_hand_with_15_equal_bins() -> None:
    ece = ExpectedCalibrationError()
    # Bin 14 = (14/15, 1]: confidence 0.95 twice, one right -> |0.5 - 0.95| = 0.45 over 2 pixels.
    # Bin 9 = (0.6, 2/3]: confidence 0.65 four times, three right -> |0.75 - 0.65| = 0.1 over 4 pixels.
    ece.update(np.array([0.95, 0.95]), np.array([1, 0]))  # streamed in two parts
    ece.update(np.array([0.65, 0.65, 0.65, 0.65]), np.array([1, 1, 1, 0]))
    assert ece.compute() == pytest.approx((2 * 0.45 + 4 * 0.1) / 6)
    bins = ece.bins()
    assert len(bins["count"]) == 15 and bins["edges"][1] == pytest.approx(1 / 15)
    assert bins["count"][14] == 2 and bins["count"][9] == 4 and bins["count"].sum() == 6
    assert bins["accuracy"][9] == pytest.approx(0.75) and np.isnan(bins["accuracy"][0])


def test_ece_bins_are_closed_on_the_right() -> None:
    ece = ExpectedCalibrationError()
    ece.update(np.array([0.0, 0.2, 0.2 + 1e-9, 1.0]), np.ones(4))
    # 0 joins the first bin, 0.2 = 3/15 closes bin 2 = (2/15, 3/15], just above it opens bin 3.
    assert np.flatnonzero(ece.bins()["count"]).tolist() == [0, 2, 3, 14]


def test_seg_ece_is_of_the_top_class_probability_not_of_entropy() -> None:
    # Two classes, four pixels; softmax probabilities of class 1 and the labels.
    p1 = np.array([[0.9, 0.8, 0.3, 0.4]])
    labels = np.array([[1, 1, 1, 0]])
    pred = (p1 > 0.5).astype(np.int64)
    top = np.maximum(p1, 1.0 - p1)  # 0.9, 0.8, 0.7, 0.6
    entropy = -(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1)) / np.log(2)
    metrics = SegmentationMetrics(num_classes=2, class_names=("a", "b"))
    metrics.update(pred, labels, confidence=top, uncertainty=entropy)
    # Correct: yes, yes, no (predicted 0, label 1), yes. Each pixel is alone in its bin:
    # |1 - 0.9| + |1 - 0.8| + |0 - 0.7| + |1 - 0.6| = 1.4 over 4 pixels.
    assert metrics.compute()["seg_ece"] == pytest.approx(1.4 / 4)
    entropy_only = SegmentationMetrics(num_classes=2, class_names=("a", "b"))
    entropy_only.update(pred, labels, uncertainty=entropy)
    out = entropy_only.compute()
    assert np.isnan(out["seg_ece"])  # no top-class probability, no ECE
    assert np.isfinite(out["seg_ause"])


def test_seg_ece_agrees_with_torchmetrics_multiclass() -> None:
    torch = pytest.importorskip("torch")
    classification = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 3, 8, 9))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 3, (2, 8, 9))
    metrics = SegmentationMetrics(num_classes=3, class_names=("a", "b", "c"))
    metrics.update(probs.argmax(1), labels, confidence=probs.max(1))
    reference = classification.MulticlassCalibrationError(num_classes=3, n_bins=15, norm="l1")(
        torch.from_numpy(probs), torch.from_numpy(labels)
    )
    assert metrics.compute()["seg_ece"] == pytest.approx(float(reference), abs=1e-6)


def test_class_ids_outside_the_table_are_refused() -> None:
    metrics = SegmentationMetrics(num_classes=3, class_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="label id 7"):
        metrics.update(np.zeros((1, 2), np.int64), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="predicted class id 3"):
        metrics.update(np.array([[3, 0]]), np.array([[0, 255]]))


def test_metrics_module_imports_no_torch() -> None:
    code = "import sys, mtl_perception.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_ause_of_perfect_ranking_is_zero_and_of_reversed_ranking_positive() -> None:
    errors = np.random.default_rng(0).random(1000)
    curve, oracle = sparsification_curves(errors, errors * 7.0)  # any monotone map ranks perfectly
    assert ause(curve, oracle) == pytest.approx(0.0, abs=1e-12)
    assert curve[0] == pytest.approx(errors.mean())
    assert np.all(np.diff(oracle) <= 1e-12)  # oracle removal never increases the mean error
    reversed_curve, _ = sparsification_curves(errors, -errors)
    assert ause(reversed_curve, oracle) > 0.2


def test_multitask_update_frame_from_numpy_skips_unlabelled_frames() -> None:
    metrics = MultiTaskMetrics(stereo=True)
    height, width = 4, 5
    gt_disparity = np.full((height, width), 10.0, np.float32)
    outputs = {
        "semantic": np.zeros((height, width), np.int32),
        "semantic_confidence": np.full((height, width), 0.9, np.float32),
        "semantic_uncertainty": np.full((height, width), 0.1, np.float32),
        "disparity": gt_disparity + 1.0,
        "disparity_uncertainty": np.ones((height, width), np.float32),
    }
    metrics.update_frame(
        outputs,
        {
            "semantic": np.zeros((height, width), np.int64),
            "disparity": gt_disparity,
            "depth": np.zeros((height, width)),
            "has_semantic": True,
            "has_depth": True,
        },
    )
    # An unlabelled frame with terrible predictions must change nothing.
    bad = dict(outputs, semantic=np.ones((height, width), np.int32), disparity=gt_disparity + 50.0)
    metrics.update_frame(
        bad,
        {
            "semantic": np.zeros((height, width), np.int64),
            "disparity": gt_disparity,
            "depth": np.zeros((height, width)),
            "has_semantic": False,
            "has_depth": False,
        },
    )
    out = metrics.compute()
    assert out["miou"] == pytest.approx(1.0)
    assert out["epe"] == pytest.approx(1.0)
    assert out["d1_all"] == pytest.approx(0.0)
    assert out["seg_ece"] == pytest.approx(0.1)  # confidence 0.9, accuracy 1
    assert out["score"] == pytest.approx(1.0)
    assert "pooled" in out["pooling"]


def _random_frame(rng: np.random.Generator, height: int = 6, width: int = 7) -> tuple[dict, dict]:
    truth = rng.uniform(1.0, 40.0, (height, width)).astype(np.float32)
    truth[0, 0] = 0.0  # an invalid pixel
    labels = rng.integers(0, 4, (height, width))
    labels[1, 1] = 255
    outputs = {
        "semantic": rng.integers(0, 4, (height, width)).astype(np.int32),
        "semantic_confidence": rng.uniform(0.25, 1, (height, width)).astype(np.float32),
        "semantic_uncertainty": rng.uniform(0, 1, (height, width)).astype(np.float32),
        "disparity": truth + rng.normal(0, 4, truth.shape).astype(np.float32),
        "disparity_uncertainty": rng.uniform(0.1, 3, truth.shape).astype(np.float32),
        "depth": 500.0 / np.maximum(truth, 1.0),
        "depth_uncertainty": rng.uniform(0.1, 3, truth.shape).astype(np.float32),
    }
    sample = {"semantic": labels, "disparity": truth, "depth": 400.0 / np.maximum(truth, 1.0)}
    return outputs, sample


def test_merging_per_frame_metrics_equals_updating_one_object() -> None:
    rng = np.random.default_rng(3)
    frames = [_random_frame(rng) for _ in range(3)]
    together, merged = MultiTaskMetrics(stereo=True), MultiTaskMetrics(stereo=True)
    for outputs, sample in frames:
        together.update_frame(outputs, sample)
        single = MultiTaskMetrics(stereo=True)
        single.update_frame(outputs, sample)
        merged.merge(single)
    expected, actual = together.compute(), merged.compute()
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        if isinstance(value, dict):  # per-class IoU, sparsification curves
            for name, inner in value.items():
                assert actual[key][name] == pytest.approx(inner, nan_ok=True), (key, name)
        elif isinstance(value, float):
            assert actual[key] == pytest.approx(value, nan_ok=True), key
        else:
            assert actual[key] == value, key
    assert expected["seg_ause"] > 0 and expected["depth_ause"] > 0  # the frames exercise every part
    assert expected["seg_ece"] > 0


def test_far_pixels_score_in_disparity_and_not_in_depth() -> None:
    """Known answer: "infinitely far" (valid, gt 0 px / +inf m) is a disparity label; unknown is not."""
    gt = np.array([[5.0, 0.0, 0.0]])
    valid = np.array([[True, True, False]])  # measured, far, unknown
    metrics = DisparityMetrics()
    metrics.update(np.array([[5.0, 10.0, 40.0]]), gt, valid=valid)  # phantom 10 px in the sky
    out = metrics.compute()
    assert metrics.pixels == 2 and out["epe"] == pytest.approx(5.0) and out["d1_all"] == pytest.approx(0.5)
    right = DisparityMetrics()
    right.update(np.array([[5.0, 0.0, 40.0]]), gt, valid=valid)
    assert right.compute()["epe"] == 0.0 and right.compute()["d1_all"] == 0.0
    legacy = DisparityMetrics()  # without a mask gt 0 stays "unknown"
    legacy.update(np.array([[5.0, 10.0, 40.0]]), gt)
    assert legacy.pixels == 1

    depth = DepthMetrics()
    depth.update(np.array([[4.0, 3.0, 1.0]]), np.array([[4.0, np.inf, 0.0]]), valid=valid)
    assert depth.pixels == 1 and depth.compute()["abs_rel"] == 0.0

    frame = MultiTaskMetrics(stereo=True)
    frame.update_frame(
        {"disparity": np.array([[5.0, 10.0, 40.0]])},
        {"semantic": np.zeros((1, 3)), "disparity": gt, "depth": gt, "disparity_valid": valid},
    )
    assert frame.disparity.pixels == 2 and frame.compute()["epe"] == pytest.approx(5.0)
