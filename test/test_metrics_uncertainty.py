"""Known answers for the uncertainty measures: NLL, Brier, AUROC, ±kσ coverage, Spearman.

Synthetic predictors whose answer is known: errors drawn from the distribution the σ claims
(calibrated: coverage = nominal, ECE ≈ 0), σ equal to the error (AUROC = 1, Spearman = 1), σ
unrelated to it (0.5 / 0), σ seven times too small (coverage far below nominal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtl_perception.metrics import (
    SCALAR_METRICS,
    BinnedAUROC,
    DepthMetrics,
    DisparityMetrics,
    MultiTaskMetrics,
    RegressionUncertainty,
    SegmentationMetrics,
    nominal_coverage,
    regression_nll,
    spearman,
)

SIGMA_CLAIMED = 7.0  # the real stereo nets understate their error about 7x (issue 12)


def _sample_errors(rng: np.random.Generator, std: np.ndarray, distribution: str) -> np.ndarray:
    """Signed errors with standard deviation ``std`` from the named distribution."""
    if distribution == "laplace":
        return rng.laplace(0.0, std / math.sqrt(2.0))
    return rng.normal(0.0, std)


def _disparity_case(
    rng: np.random.Generator, distribution: str, images: int = 4, size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, truth, true standard deviation), NxHxW; truth < 60 px so D1 = error > 3 px."""
    truth = rng.uniform(1.0, 50.0, (images, size, size))
    std = rng.uniform(0.2, 3.0, truth.shape)
    return truth + _sample_errors(rng, std, distribution), truth, std


def test_nominal_coverage_is_the_published_one() -> None:
    assert nominal_coverage(1, "gaussian") == pytest.approx(0.6827, abs=1e-4)
    assert nominal_coverage(2, "gaussian") == pytest.approx(0.9545, abs=1e-4)
    assert nominal_coverage(1, "laplace") == pytest.approx(0.7569, abs=1e-4)
    assert nominal_coverage(2, "laplace") == pytest.approx(0.9409, abs=1e-4)
    with pytest.raises(ValueError, match="distribution"):
        nominal_coverage(1, "cauchy")


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_calibrated_sigma_gets_nominal_coverage_and_the_entropy_as_nll(distribution: str) -> None:
    rng = np.random.default_rng(0)
    pred, truth, std = _disparity_case(rng, distribution)
    metrics = DisparityMetrics(distribution)
    metrics.update(pred, truth, uncertainty=std)
    out = metrics.compute()
    # 262k pixels: the coverage estimate's standard error is < 0.001.
    assert out["disparity_coverage_1sigma"] == pytest.approx(nominal_coverage(1, distribution), abs=0.005)
    assert out["disparity_coverage_2sigma"] == pytest.approx(nominal_coverage(2, distribution), abs=0.005)
    assert out["coverage_nominal_1sigma"] == nominal_coverage(1, distribution)
    assert out["uncertainty_distribution"] == distribution
    # Expected NLL of a calibrated σ is the distribution's differential entropy.
    if distribution == "laplace":
        entropy = np.log(2.0 * std / math.sqrt(2.0)) + 1.0
    else:
        entropy = 0.5 * np.log(2.0 * math.pi * math.e * std**2)
    assert out["disparity_nll"] == pytest.approx(entropy.mean(), abs=0.01)


def test_overconfident_and_underconfident_sigma_are_caught() -> None:
    rng = np.random.default_rng(1)
    pred, truth, std = _disparity_case(rng, "laplace")
    scores = {}
    for name, claimed in (("right", std), ("small", std / SIGMA_CLAIMED), ("large", std * SIGMA_CLAIMED)):
        metrics = DisparityMetrics("laplace")
        metrics.update(pred, truth, uncertainty=claimed)
        scores[name] = metrics.compute()
    # σ/7: P(|x| <= 2σ/7) = 1 - exp(-2√2/7) = 0.33, far from the nominal 0.94.
    assert scores["small"]["disparity_coverage_2sigma"] == pytest.approx(0.332, abs=0.01)
    assert scores["small"]["disparity_coverage_1sigma"] < 0.25
    assert scores["large"]["disparity_coverage_1sigma"] > 0.99
    # NLL is a proper score: both wrong σ cost more than the right one.
    assert scores["right"]["disparity_nll"] < scores["small"]["disparity_nll"] - 1.0
    assert scores["right"]["disparity_nll"] < scores["large"]["disparity_nll"] - 0.5


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_sigma_scale_is_the_factor_that_minimises_the_nll(distribution: str) -> None:
    """σ claimed 7x too small: the fitted scale is 7 (to the estimate's noise), it is where the NLL
    over a grid of factors is lowest, and σ multiplied by it gets the nominal coverage back."""
    rng = np.random.default_rng(3)
    pred, truth, std = _disparity_case(rng, distribution)
    claimed = std / SIGMA_CLAIMED
    metrics = DisparityMetrics(distribution)
    metrics.update(pred, truth, uncertainty=claimed)
    scale = metrics.compute()["disparity_sigma_scale"]
    assert scale == pytest.approx(SIGMA_CLAIMED, rel=0.01)
    error = np.abs(pred - truth)
    factors = scale * np.linspace(0.9, 1.1, 21)
    nll = [regression_nll(error, f * claimed, distribution).mean() for f in factors]
    assert int(np.argmin(nll)) == 10  # the closed form is the grid's minimum
    rescaled = DisparityMetrics(distribution)
    rescaled.update(pred, truth, uncertainty=scale * claimed)
    out = rescaled.compute()
    assert out["disparity_sigma_scale"] == pytest.approx(1.0, abs=1e-9)
    assert out["disparity_coverage_2sigma"] == pytest.approx(nominal_coverage(2, distribution), abs=0.005)


def test_gaussian_errors_read_as_laplace_miss_the_nominal_coverage() -> None:
    """The nominal value must follow the assumed distribution: Gaussian errors under a Laplace
    reading cover 68.3 % at ±1σ, 7 points short of Laplace's 75.7 %."""
    rng = np.random.default_rng(2)
    pred, truth, std = _disparity_case(rng, "gaussian")
    metrics = DisparityMetrics("laplace")
    metrics.update(pred, truth, uncertainty=std)
    out = metrics.compute()
    assert out["coverage_nominal_1sigma"] - out["disparity_coverage_1sigma"] > 0.06


def test_regression_nll_is_minus_the_log_density() -> None:
    stats = pytest.importorskip("scipy.stats")
    error = np.array([0.0, 0.5, 2.0, 10.0])
    std = np.array([1.0, 0.3, 2.0, 4.0])
    laplace = -stats.laplace.logpdf(error, scale=std / math.sqrt(2.0))
    gaussian = -stats.norm.logpdf(error, scale=std)
    assert regression_nll(error, std, "laplace") == pytest.approx(laplace, rel=1e-12)
    assert regression_nll(error, std, "gaussian") == pytest.approx(gaussian, rel=1e-12)


def test_zero_or_nan_sigma_keeps_the_split_finite() -> None:
    metrics = RegressionUncertainty("laplace")
    metrics.update(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, np.nan]), np.array([False, False, False]))
    out = metrics.compute()
    assert math.isfinite(out["nll"]) and out["nll"] > 1e5  # a confident miss costs, but stays finite
    assert out["coverage_1sigma"] == pytest.approx(2 / 3)  # exact hit (0 <= 0) and NaN σ (no estimate)


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 500).astype(float)  # many ties
    y = x + rng.integers(0, 3, 500)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_spearman_of_sigma_with_error() -> None:
    rng = np.random.default_rng(4)
    pred, truth, _ = _disparity_case(rng, "laplace", images=3, size=64)
    error = np.abs(pred - truth)
    for claimed, expected, tolerance in (
        (error * 2.0, 1.0, 1e-12),  # any increasing map of the error ranks it perfectly
        (1.0 / error, -1.0, 1e-12),
        (rng.uniform(0.1, 3.0, error.shape), 0.0, 0.03),
    ):
        metrics = DisparityMetrics()
        metrics.update(pred, truth, uncertainty=claimed)
        assert metrics.compute()["disparity_spearman"] == pytest.approx(expected, abs=tolerance)


def test_spearman_is_averaged_per_image_not_pooled() -> None:
    errors = np.arange(1.0, 101.0)
    metrics = RegressionUncertainty()
    no_outliers = np.zeros(100, bool)
    metrics.update(errors, errors, no_outliers)  # rho = +1
    metrics.update(errors + 1000.0, 5000.0 - errors, no_outliers)  # rho = -1, all σ and errors larger
    assert metrics.compute()["spearman"] == pytest.approx(0.0, abs=1e-12)
    pooled = spearman(np.r_[errors, 5000.0 - errors], np.r_[errors, errors + 1000.0])
    assert pooled > 0.5  # what pooling would have said


def test_disparity_auroc_spots_d1_outliers() -> None:
    rng = np.random.default_rng(5)
    pred, truth, _ = _disparity_case(rng, "laplace", images=2, size=128)
    pred = truth + rng.normal(0.0, 3.0, truth.shape)  # ~30 % D1 outliers (|e| > 3 px, truth < 60)
    error = np.abs(pred - truth)
    # Perfect ranking is 1 up to the pairs straddling 3 px inside one 0.45 % score bin (ties, ½).
    for claimed, expected, tolerance in (
        (error, 1.0, 1e-4),
        (1.0 / error, 0.0, 1e-4),
        (rng.uniform(0.1, 3.0, error.shape), 0.5, 0.01),
    ):
        metrics = DisparityMetrics()
        metrics.update(pred, truth, uncertainty=claimed)
        assert metrics.compute()["disparity_auroc_d1"] == pytest.approx(expected, abs=tolerance)


def test_depth_auroc_spots_delta_failures_and_coverage_is_nominal() -> None:
    rng = np.random.default_rng(6)
    truth = rng.uniform(5.0, 50.0, (2, 128, 128))
    std = 0.05 * truth
    pred = truth + _sample_errors(rng, std, "gaussian")
    metrics = DepthMetrics(distribution="gaussian")
    metrics.update(pred, truth, uncertainty=std)
    out = metrics.compute()
    assert out["depth_coverage_1sigma"] == pytest.approx(0.6827, abs=0.01)
    assert out["depth_coverage_2sigma"] == pytest.approx(0.9545, abs=0.01)
    # δ < 1.25 fails exactly when |log(pred / truth)| >= log 1.25: that score ranks failures perfectly.
    wide = truth * np.exp(rng.uniform(-0.4, 0.4, truth.shape))
    ranked = DepthMetrics()
    ranked.update(wide, truth, uncertainty=np.abs(np.log(wide / truth)))
    assert ranked.compute()["depth_auroc_delta1"] == pytest.approx(1.0, abs=1e-4)  # bin ties only


def test_binned_auroc_matches_the_exact_mann_whitney_value() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    positives, negatives = rng.lognormal(0.3, 1.0, 20_000), rng.lognormal(0.0, 1.0, 30_000)
    exact = stats.mannwhitneyu(positives, negatives).statistic / (positives.size * negatives.size)
    auroc = BinnedAUROC()
    auroc.update(np.r_[positives, negatives], np.r_[np.ones(20_000, bool), np.zeros(30_000, bool)])
    assert auroc.compute() == pytest.approx(exact, abs=1e-3)
    # Tied scores count half, as in the exact statistic.
    tied = BinnedAUROC()
    tied.update(np.array([1.0, 1.0, 2.0, 1.0]), np.array([True, False, True, False]))
    assert tied.compute() == pytest.approx((0.5 + 0.5 + 1.0 + 1.0) / 4)
    only_negatives = BinnedAUROC()
    only_negatives.update(np.array([1.0, 2.0]), np.array([False, False]))
    assert math.isnan(only_negatives.compute())


def test_top_label_nll_brier_and_auroc_by_hand() -> None:
    # The four pixels of test_metrics' ECE example: top-class probability 0.9, 0.8, 0.7, 0.6;
    # correct, correct, wrong, correct.
    p1 = np.array([[0.9, 0.8, 0.3, 0.4]])
    labels = np.array([[1, 1, 1, 0]])
    pred = (p1 > 0.5).astype(np.int64)
    top = np.maximum(p1, 1.0 - p1)
    entropy = -(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1)) / np.log(2)
    metrics = SegmentationMetrics(num_classes=2, class_names=("a", "b"))
    metrics.update(pred, labels, confidence=top, uncertainty=entropy)
    out = metrics.compute()
    assert out["seg_brier_toplabel"] == pytest.approx((0.1**2 + 0.2**2 + 0.7**2 + 0.4**2) / 4)
    nll = -(np.log(0.9) + np.log(0.8) + np.log(0.3) + np.log(0.6)) / 4  # the wrong pixel: -log(1 - 0.7)
    assert out["seg_nll_toplabel"] == pytest.approx(nll)
    # Entropy order: 0.9 < 0.8 < 0.7 (the wrong pixel) < 0.6: it outranks 2 of the 3 right pixels.
    assert out["seg_auroc"] == pytest.approx(2 / 3)


def test_top_label_scores_are_lower_bounds_of_the_multiclass_ones() -> None:
    rng = np.random.default_rng(8)
    logits = rng.normal(0.0, 2.0, (5, 64, 64))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    labels = rng.integers(0, 5, (64, 64))
    metrics = SegmentationMetrics(num_classes=5, class_names=tuple("abcde"))
    metrics.update(probs.argmax(0), labels, confidence=probs.max(0))
    out = metrics.compute()
    true_class = np.take_along_axis(probs, labels[None], 0)[0]
    multiclass_nll = -np.log(true_class).mean()
    one_hot = np.eye(5)[labels].transpose(2, 0, 1)
    multiclass_brier = np.square(probs - one_hot).sum(0).mean()
    assert 0 < out["seg_nll_toplabel"] <= multiclass_nll
    assert 0 < out["seg_brier_toplabel"] <= multiclass_brier


@pytest.mark.parametrize(("power", "calibrated"), [(1.0, True), (4.0, False)])
def test_calibrated_segmenter_gets_ece_near_zero_and_expected_brier(power: float, calibrated: bool) -> None:
    """Right with probability confidence**power: power 1 is calibrated, 4 overconfident."""
    rng = np.random.default_rng(9)
    confidence = rng.uniform(0.5, 1.0, (4, 128, 128))
    correct = rng.random(confidence.shape) < confidence**power
    metrics = SegmentationMetrics(num_classes=2, class_names=("a", "b"))
    metrics.update(np.zeros(confidence.shape, np.int64), np.where(correct, 0, 1), confidence=confidence)
    out = metrics.compute()
    if calibrated:
        assert out["seg_ece"] < 0.005
        # E[(p - c)²] = E[p(1 - p)] for c ~ Bernoulli(p).
        assert out["seg_brier_toplabel"] == pytest.approx((confidence * (1 - confidence)).mean(), abs=0.003)
    else:
        assert out["seg_ece"] > 0.1


def test_seg_auroc_of_an_error_oracle_and_of_noise() -> None:
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 3, (2, 64, 64))
    pred = np.where(rng.random(labels.shape) < 0.8, labels, (labels + 1) % 3)
    for uncertainty, expected, tolerance in (
        ((pred != labels).astype(float), 1.0, 1e-12),
        (rng.random(labels.shape), 0.5, 0.03),
    ):
        metrics = SegmentationMetrics(num_classes=3, class_names=("a", "b", "c"))
        metrics.update(pred, labels, uncertainty=uncertainty)
        assert metrics.compute()["seg_auroc"] == pytest.approx(expected, abs=tolerance)


def test_multitask_reports_every_uncertainty_measure_under_its_name() -> None:
    rng = np.random.default_rng(11)
    size = (32, 48)
    truth = rng.uniform(1.0, 40.0, size)
    sigma = rng.uniform(0.2, 2.0, size)
    outputs = {
        "semantic": rng.integers(0, 3, size),
        "semantic_confidence": rng.uniform(0.4, 1.0, size),
        "semantic_uncertainty": rng.uniform(0.0, 1.0, size),
        "disparity": truth + rng.normal(0.0, 3.0, size),
        "disparity_uncertainty": sigma,
        "depth": 400.0 / (truth + rng.normal(0.0, 3.0, size)).clip(0.5),
        "depth_uncertainty": sigma,
    }
    sample = {"semantic": rng.integers(0, 3, size), "disparity": truth, "depth": 400.0 / truth}
    metrics = MultiTaskMetrics(stereo=True, distribution="gaussian")
    metrics.update_frame(outputs, sample)
    out = metrics.compute()
    missing = [key for key in SCALAR_METRICS if not math.isfinite(out.get(key, float("nan")))]
    assert missing == []
    assert out["coverage_nominal_2sigma"] == pytest.approx(0.9545, abs=1e-4)
    assert out["uncertainty_distribution"] == "gaussian"

    no_sigma = MultiTaskMetrics(stereo=True)
    no_sigma.update_frame({"disparity": outputs["disparity"]}, sample)
    plain = no_sigma.compute()
    assert math.isnan(plain["disparity_nll"]) and "coverage_nominal_1sigma" not in plain

    with pytest.raises(ValueError, match="merge"):
        metrics.merge(MultiTaskMetrics(stereo=True, distribution="laplace"))


def test_evaluate_table_prints_the_uncertainty_rows() -> None:
    pytest.importorskip("torch")
    from mtl_perception.training.evaluation import format_metrics

    metrics = DisparityMetrics()
    rng = np.random.default_rng(12)
    truth = rng.uniform(1.0, 40.0, (16, 16))
    sigma = rng.uniform(0.5, 3.0, truth.shape)
    metrics.update(truth + rng.normal(0.0, 2.0, truth.shape), truth, uncertainty=sigma)
    table = format_metrics({"miou": 0.5, **metrics.compute()})
    for key in (
        "disparity_nll",
        "disparity_coverage_2sigma",
        "disparity_spearman",
        "coverage_nominal_2sigma",
    ):
        assert f"| {key} |" in table
