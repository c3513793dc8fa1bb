"""Streaming evaluation metrics for segmentation, disparity, depth and their uncertainties.

The one metrics module: ``evaluate``, training validation and bag replay all score through it.
It is numpy-only so that a robot install without torch (``pip install '.[ros]'``) can score a bag;
torch tensors are still accepted and converted (``.numpy()``) without importing torch here.

Pooling rule (also written into every ``compute()`` output under ``"pooling"``):

* accuracy metrics (mIoU, per-class IoU, pixel accuracy, EPE, D1-all, AbsRel, RMSE, δ<1.25) and
  the uncertainty scores ECE, top-label NLL/Brier, regression NLL, ±kσ coverage and AUROC
  **pool pixels over the whole split**: every valid pixel of every frame weighs the same;
* AUSE, sparsification curves and the σ-|error| Spearman correlation are **computed per image and
  averaged over images** (the protocol of Poggi et al. 2020), because pooling would need every
  pixel of the split in memory (they rank pixels).

Accumulators take numpy arrays or torch tensors (one frame HxW or a batch NxHxW) through
``update(...)``; ``compute()`` returns plain floats. ``MultiTaskMetrics.update_frame`` is the thin
entry for the runtime's output dicts (keys as in DESIGN.md: ``semantic``, ``semantic_confidence``,
``semantic_uncertainty``, ``disparity``, ``disparity_uncertainty``, ``depth``, ``depth_uncertainty``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from mtl_perception.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

ArrayLike = Any  # a numpy array, or anything with .numpy() such as a torch tensor
SPARSIFICATION_FRACTIONS = np.linspace(0.0, 0.95, 20)  # share of pixels removed, most uncertain first
ECE_BINS = 15
POOLING_NOTE = (
    "pixels pooled over the split; AUSE, sparsification curves and sigma-error Spearman averaged per image"
)
# Same names as networks.config (not imported from there: that package pulls in torch).
UNCERTAINTY_DISTRIBUTIONS = ("laplace", "gaussian")
COVERAGE_SIGMAS = (1, 2)  # ±kσ intervals whose coverage is reported
# σ is clamped into this range (units of the map): a zero σ then costs a huge but finite NLL and
# a NaN σ (no estimate) counts as the widest interval, instead of inf/NaN spoiling the split's means.
SIGMA_RANGE = (1e-6, 1e6)
# A float32 top-class probability cannot resolve 1 - p below ~1.2e-7 (2^-23); log is clamped there.
PROBABILITY_EPS = 1e-7
# Binned AUROC: log-spaced score bins 1e-8..1e8, 512 per decade (neighbouring edges 0.45 % apart).
AUROC_LOG10_RANGE = (-8, 8)
AUROC_BINS_PER_DECADE = 512
# Output name of the top-class (max softmax) probability: what ECE is defined on.
SEMANTIC_CONFIDENCE = "semantic_confidence"


def as_numpy(x: ArrayLike) -> np.ndarray:
    """``x`` as a numpy array; a torch tensor (any device) is detached and copied to the CPU."""
    if hasattr(x, "detach"):  # duck-typed so that torch is never imported here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _batched(x: ArrayLike) -> np.ndarray:
    """NxHxW array from an HxW frame, an NxHxW batch or an Nx1xHxW batch."""
    a = as_numpy(x)
    if a.ndim == 4:
        a = a[:, 0]
    return a[None] if a.ndim == 2 else a


def _per_image_float64(
    pred: ArrayLike, target: ArrayLike, uncertainty: ArrayLike | None, valid: ArrayLike | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(prediction, ground truth, uncertainty or None, validity mask or None) of each image of a
    batch, as float64 (the mask as bool)."""
    p = _batched(pred).astype(np.float64)
    t = _batched(target).astype(np.float64)
    u = _batched(uncertainty).astype(np.float64) if uncertainty is not None else [None] * len(p)
    v = _batched(valid).astype(bool) if valid is not None else [None] * len(p)
    yield from zip(p, t, u, v, strict=True)


class _Summed:
    """An accumulator whose state is sums, so two of them merge field by field.

    ``_SUMS`` names those fields: numbers and arrays are added, nested accumulators merged.
    """

    _SUMS: ClassVar[tuple[str, ...]] = ()

    def merge(self, other: _Summed) -> None:
        """Add ``other``'s frames, as if they had been passed to this object's ``update``."""
        for name in self._SUMS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, _Summed):
                mine.merge(theirs)
            else:
                setattr(self, name, mine + theirs)


def sparsification_curves(errors: np.ndarray, uncertainty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean error of the pixels kept after removing each ``SPARSIFICATION_FRACTIONS`` share.

    Returns (by uncertainty, oracle by true error); both start at the mean error of all pixels.
    The metric must be a per-pixel mean (EPE, AbsRel, 1 - accuracy) so that removal is exact.
    Ties keep pixel order (stable sort), so a constant uncertainty removes pixels in scan order.
    """
    errors = np.asarray(errors, np.float64).reshape(-1)
    uncertainty = np.asarray(uncertainty, np.float64).reshape(-1)
    n = errors.size
    kept_from = np.minimum((SPARSIFICATION_FRACTIONS * n).astype(np.int64), n - 1)

    def curve(order: np.ndarray) -> np.ndarray:
        # Sorted most-uncertain first, the kept pixels after removing k are the suffix [k:].
        suffix_sum = np.cumsum(errors[order][::-1])[::-1]
        return suffix_sum[kept_from] / (n - kept_from)

    by_uncertainty = curve(np.argsort(-uncertainty, kind="stable"))
    oracle = curve(np.argsort(-errors, kind="stable"))
    return by_uncertainty, oracle


def ause(by_uncertainty: np.ndarray, oracle: np.ndarray) -> float:
    """Area between the uncertainty and oracle sparsification curves over removed fraction [0, 1).

    Hand-written (no maintained library has it). Riemann sum with the curves' step; 0 for an
    uncertainty that ranks errors perfectly.
    """
    step = 1.0 / len(SPARSIFICATION_FRACTIONS)
    return float(np.sum(by_uncertainty - oracle) * step)


def nominal_coverage(k: float, distribution: str) -> float:
    """P(|x - mean| <= k * std) of the distribution: Gaussian erf(k/√2) (68.3 %, 95.4 %), Laplace
    1 - exp(-√2 k) (75.7 %, 94.1 %; std = √2 b for scale b)."""
    if distribution == "gaussian":
        return math.erf(k / math.sqrt(2.0))
    if distribution == "laplace":
        return 1.0 - math.exp(-math.sqrt(2.0) * k)
    raise ValueError(f"distribution must be one of {UNCERTAINTY_DISTRIBUTIONS}, got {distribution!r}")


def regression_nll(abs_error: np.ndarray, std: np.ndarray, distribution: str) -> np.ndarray:
    """Per-pixel -log p(truth) with every constant kept (comparable with published NLL), for a
    predicted standard deviation ``std``: Laplace with b = std/√2, -log p = log(2b) + |e|/b;
    Gaussian, -log p = log(std) + ½ log(2π) + e²/(2 std²)."""
    if distribution == "laplace":
        b = std / math.sqrt(2.0)
        return np.log(2.0 * b) + abs_error / b
    if distribution == "gaussian":
        return np.log(std) + 0.5 * math.log(2.0 * math.pi) + 0.5 * np.square(abs_error / std)
    raise ValueError(f"distribution must be one of {UNCERTAINTY_DISTRIBUTIONS}, got {distribution!r}")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x``, tied values sharing the mean of their ranks (as scipy's rankdata)."""
    order = np.argsort(x)  # ties get their mean rank, so the faster unstable sort is exact too
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when either side is constant.

    Hand-written because scipy is not a dependency of the robot install; the tests check it
    against ``scipy.stats.spearmanr``.
    """
    rx = _average_ranks(np.asarray(x, np.float64).reshape(-1))
    ry = _average_ranks(np.asarray(y, np.float64).reshape(-1))
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    return float(np.dot(rx, ry)) / denominator if denominator > 0 else float("nan")


class BinnedAUROC(_Summed):
    """AUROC of a score (higher = more likely positive), from per-bin counts of positives and negatives.

    AUROC = P(score of a random positive > score of a random negative) + ½ P(tie). The exact value
    needs every pixel of the split sorted (torchmetrics/sklearn hold all scores in memory); two
    histograms merge across frames and workers and cost 2 x 8192 numbers. Scores in one bin
    (edges 0.45 % apart on a log scale, 1e-8..1e8, outside clamped to the end bins, NaN = highest)
    count as ties, so the result is exact for scores that differ by more than a bin and off by at
    most half the share of positive-negative pairs sharing a bin otherwise (torchmetrics'
    ``BinaryAUROC(thresholds=...)`` bins the same way).
    """

    _SUMS = ("positives", "negatives")

    def __init__(self) -> None:
        low, high = AUROC_LOG10_RANGE
        n_bins = (high - low) * AUROC_BINS_PER_DECADE
        self.positives = np.zeros(n_bins)
        self.negatives = np.zeros(n_bins)

    def update(self, score: np.ndarray, positive: np.ndarray) -> None:
        """Add scores >= 0 (1-D) and whether each pixel is a positive (an error to be spotted)."""
        low, high = AUROC_LOG10_RANGE
        score = np.nan_to_num(np.asarray(score, np.float64).reshape(-1), nan=np.inf)
        log_score = np.log10(np.clip(score, 10.0**low, 10.0**high))
        n_bins = len(self.positives)
        index = np.clip(((log_score - low) * AUROC_BINS_PER_DECADE).astype(np.int64), 0, n_bins - 1)
        positive = np.asarray(positive, bool).reshape(-1)
        self.positives += np.bincount(index[positive], minlength=n_bins)
        self.negatives += np.bincount(index[~positive], minlength=n_bins)

    def compute(self) -> float:
        """NaN unless both classes occurred (AUROC is undefined without positives or negatives)."""
        n_positive, n_negative = self.positives.sum(), self.negatives.sum()
        if n_positive == 0 or n_negative == 0:
            return float("nan")
        negatives_below = np.cumsum(self.negatives) - self.negatives
        wins = (self.positives * (negatives_below + 0.5 * self.negatives)).sum()
        return float(wins / (n_positive * n_negative))


class RegressionUncertainty(_Summed):
    """How good a predicted standard deviation σ is, for the distribution the heads assume.

    * ``nll``: mean -log p(truth) under Laplace (b = σ/√2) or Gaussian (σ), constants kept; pooled.
    * ``coverage_1sigma`` / ``coverage_2sigma``: share of pixels with |error| <= kσ; pooled. To be
      read against ``nominal_coverage`` (Gaussian 68.3/95.4 %, Laplace 75.7/94.1 %).
    * ``spearman``: rank correlation of σ with |error| per image, averaged over images (images
      where either is constant are left out: the correlation is undefined there).
    * ``auroc``: AUROC of σ for spotting the task's outlier pixels (``BinnedAUROC``); pooled.
    * ``sigma_scale``: the factor s that minimises the split's NLL when every σ is replaced by s·σ
      (closed form: Laplace s = √2·mean(|e|/σ), Gaussian s = √mean((e/σ)²)); 1 for a σ that is
      NLL-calibrated on average, above 1 for an overconfident one. Fitted on a validation split it
      is post-hoc calibration by one scalar (the regression analogue of temperature scaling).
    """

    _SUMS = ("nll_sum", "covered", "pixels", "spearman_sum", "spearman_images", "auroc", "scale_sum")

    def __init__(self, distribution: str = "laplace") -> None:
        nominal_coverage(1.0, distribution)  # refuses an unknown distribution now, not at compute()
        self.distribution = distribution
        self.nll_sum = 0.0
        self.covered = np.zeros(len(COVERAGE_SIGMAS))
        self.pixels = 0
        self.spearman_sum = 0.0
        self.spearman_images = 0
        self.auroc = BinnedAUROC()
        self.scale_sum = 0.0  # sum of |e|/σ (Laplace) or (e/σ)² (Gaussian): sigma_scale's statistic

    def merge(self, other: _Summed) -> None:
        # First in its owners' _SUMS, so a refused merge happens before anything was added.
        if isinstance(other, RegressionUncertainty) and other.distribution != self.distribution:
            raise ValueError(f"cannot merge {other.distribution} NLL/coverage into {self.distribution}")
        super().merge(other)

    def update(self, abs_error: np.ndarray, std: np.ndarray, outlier: np.ndarray) -> None:
        """Add one image's |error|, predicted standard deviation and outlier flags (valid pixels, 1-D)."""
        if abs_error.size == 0:
            return
        std = np.clip(np.nan_to_num(std, nan=SIGMA_RANGE[1]), *SIGMA_RANGE)
        self.nll_sum += float(regression_nll(abs_error, std, self.distribution).sum())
        self.covered += [np.count_nonzero(abs_error <= k * std) for k in COVERAGE_SIGMAS]
        ratio = abs_error / std
        self.scale_sum += float(np.sum(ratio if self.distribution == "laplace" else np.square(ratio)))
        self.pixels += abs_error.size
        rho = spearman(std, abs_error)
        if math.isfinite(rho):
            self.spearman_sum += rho
            self.spearman_images += 1
        self.auroc.update(std, outlier)

    def compute(self) -> dict[str, float]:
        """{"nll", "coverage_<k>sigma"..., "spearman", "auroc"}; NaN when no pixel had a σ."""
        n = self.pixels
        out = {"nll": self.nll_sum / n if n else float("nan")}
        for k, covered in zip(COVERAGE_SIGMAS, self.covered, strict=True):
            out[f"coverage_{k}sigma"] = float(covered / n) if n else float("nan")
        out["spearman"] = self.spearman_sum / self.spearman_images if self.spearman_images else float("nan")
        out["auroc"] = self.auroc.compute()
        mean = self.scale_sum / n if n else float("nan")
        out["sigma_scale"] = math.sqrt(2.0) * mean if self.distribution == "laplace" else math.sqrt(mean)
        return out

    def nominal(self) -> dict[str, Any]:
        """The coverage a calibrated σ would get, under ``coverage_nominal_<k>sigma`` keys."""
        out: dict[str, Any] = {"uncertainty_distribution": self.distribution}
        out |= {f"coverage_nominal_{k}sigma": nominal_coverage(k, self.distribution) for k in COVERAGE_SIGMAS}
        return out


class TopLabelScores(_Summed):
    """NLL and Brier score of the top-label event "the predicted class is right", pixels pooled.

    The models export only the top-class probability p (``semantic_confidence``), not the
    probability of the true class, so the multiclass NLL and Brier score cannot be computed. With
    c = 1 if the predicted class is the label, else 0: NLL = -[c log p + (1 - c) log(1 - p)] and
    Brier = (p - c)² (the top-label scores of the calibration literature, on the same event as
    top-label ECE). Both are lower bounds of their multiclass versions (when wrong, the true class
    has at most 1 - p; when right, the other classes add squares to the Brier sum), so they are
    comparable between our models but not with published multiclass NLL/Brier.
    """

    _SUMS = ("nll_sum", "brier_sum", "pixels")

    def __init__(self) -> None:
        self.nll_sum = 0.0
        self.brier_sum = 0.0
        self.pixels = 0

    def update(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add top-class probabilities (1-D) and the 0/1 correctness of the same pixels."""
        p = np.clip(np.asarray(confidence, np.float64).reshape(-1), PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
        c = np.asarray(correct, np.float64).reshape(-1)
        self.nll_sum += float(-(c * np.log(p) + (1.0 - c) * np.log1p(-p)).sum())
        self.brier_sum += float(np.square(p - c).sum())
        self.pixels += p.size

    def compute(self) -> dict[str, float]:
        n = self.pixels
        return {
            "nll": self.nll_sum / n if n else float("nan"),
            "brier": self.brier_sum / n if n else float("nan"),
        }


class SparsificationAccumulator(_Summed):
    """Per-image sparsification curves and AUSE, averaged over the images seen."""

    _SUMS = ("curve_sum", "oracle_sum", "ause_sum", "images")

    def __init__(self) -> None:
        self.curve_sum = np.zeros(len(SPARSIFICATION_FRACTIONS))
        self.oracle_sum = np.zeros(len(SPARSIFICATION_FRACTIONS))
        self.ause_sum = 0.0
        self.images = 0

    def update(self, errors: np.ndarray, uncertainty: np.ndarray) -> None:
        """Add one image's per-pixel errors and uncertainties (valid pixels only, 1-D)."""
        if errors.size == 0:
            return
        curve, oracle = sparsification_curves(errors, uncertainty)
        self.curve_sum += curve
        self.oracle_sum += oracle
        self.ause_sum += ause(curve, oracle)
        self.images += 1

    def compute(self) -> dict[str, Any]:
        """{"ause", "fractions", "curve", "oracle"}; NaN/empty when no image had uncertainty."""
        if self.images == 0:
            return {"ause": float("nan"), "fractions": [], "curve": [], "oracle": []}
        return {
            "ause": self.ause_sum / self.images,
            "fractions": SPARSIFICATION_FRACTIONS.tolist(),
            "curve": (self.curve_sum / self.images).tolist(),
            "oracle": (self.oracle_sum / self.images).tolist(),
        }


class ExpectedCalibrationError(_Summed):
    """ECE of the top-class probability (Guo et al. 2017), equal-width bins, pixels pooled.

    ECE = sum over bins b of (n_b / N) * |accuracy_b - mean confidence_b|, where a pixel's
    confidence is its top-class (max softmax) probability, it is correct when the top class is
    the label, and bin b of ``n_bins`` (15 by default) holds confidences in (b/n, (b+1)/n]
    (0 joins the first bin). Streamed as per-bin sums; torchmetrics' ``MulticlassCalibrationError``
    computes the same but needs every class probability of every pixel, and torch.
    """

    _SUMS = ("count", "confidence_sum", "correct_sum")

    def __init__(self, n_bins: int = ECE_BINS) -> None:
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins)
        self.confidence_sum = np.zeros(n_bins)
        self.correct_sum = np.zeros(n_bins)

    def update(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add top-class probabilities in [0, 1] (1-D) and the 0/1 correctness of the same pixels."""
        confidence = np.clip(np.asarray(confidence, np.float64).reshape(-1), 0.0, 1.0)
        n_bins = len(self.count)
        # searchsorted on the inner edges: index b with edges[b] < c <= edges[b + 1].
        index = np.searchsorted(self.edges[1:-1], confidence, side="left")
        self.count += np.bincount(index, minlength=n_bins)
        self.confidence_sum += np.bincount(index, weights=confidence, minlength=n_bins)
        self.correct_sum += np.bincount(
            index, weights=np.asarray(correct, np.float64).reshape(-1), minlength=n_bins
        )

    def bins(self) -> dict[str, np.ndarray]:
        """The reliability diagram: bin edges, then per bin mean confidence, accuracy (NaN when
        empty) and pixel count."""
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(self.count > 0, self.confidence_sum / self.count, np.nan)
            accuracy = np.where(self.count > 0, self.correct_sum / self.count, np.nan)
        return {"edges": self.edges, "confidence": confidence, "accuracy": accuracy, "count": self.count}

    def compute(self) -> float:
        total = self.count.sum()
        if total == 0:
            return float("nan")
        return float(np.abs(self.correct_sum - self.confidence_sum).sum() / total)


class SegmentationMetrics(_Summed):
    """mIoU, per-class IoU and pixel accuracy (pixels pooled over the split); with ``confidence``
    the ECE and top-label NLL/Brier of the top-class probability; with an ``uncertainty`` the AUSE
    of the error (1 - correct) and the AUROC of the uncertainty for spotting wrong pixels.

    mIoU averages the classes that occur in the ground truth or the predictions of the split. The
    confusion matrix is one ``np.bincount`` per update (torchmetrics' would need torch).
    """

    _SUMS = ("confusion", "ece", "top_label", "auroc", "sparsification")

    def __init__(self, num_classes: int = NUM_CLASSES, class_names: tuple[str, ...] = CLASS_NAMES) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # [ground truth, prediction]
        self.ece = ExpectedCalibrationError()
        self.top_label = TopLabelScores()
        self.auroc = BinnedAUROC()
        self.sparsification = SparsificationAccumulator()

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        confidence: ArrayLike | None = None,
        uncertainty: ArrayLike | None = None,
    ) -> None:
        """Add predicted class ids and labels (HxW or NxHxW; 255 = ignore) of some frames.

        ``confidence``: the predicted class's probability (max softmax) per pixel, for ECE.
        ``uncertainty``: any per-pixel score >= 0, higher = less sure (e.g. normalised entropy), for
        AUSE and AUROC.
        """
        pred, target = _batched(pred).astype(np.int64), _batched(target).astype(np.int64)
        valid = target != IGNORE_INDEX
        labels, predicted = target[valid], pred[valid]
        for name, ids in (("label", labels), ("predicted class", predicted)):
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
                bad = ids[(ids < 0) | (ids >= self.num_classes)][0]
                raise ValueError(f"{name} id {bad} outside 0..{self.num_classes - 1} (255 = ignore)")
        cells = np.bincount(labels * self.num_classes + predicted, minlength=self.num_classes**2)
        self.confusion += cells.reshape(self.num_classes, self.num_classes)
        conf = _batched(confidence) if confidence is not None else [None] * len(pred)
        unc = _batched(uncertainty) if uncertainty is not None else [None] * len(pred)
        for p, t, ok, c, u in zip(pred, target, valid, conf, unc, strict=True):
            correct = (p[ok] == t[ok]).astype(np.float64)
            if c is not None:
                self.ece.update(c[ok], correct)
                self.top_label.update(c[ok], correct)
            if u is not None:
                self.sparsification.update(1.0 - correct, u[ok])
                self.auroc.update(u[ok], correct == 0.0)

    def compute(self) -> dict[str, Any]:
        # Without any update (a split with no semantic labels) the matrix is all zeros -> NaN metrics.
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        iou = np.where(present, tp / np.maximum(union, 1.0), np.nan)
        out: dict[str, Any] = {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / cm.sum()) if cm.sum() > 0 else float("nan"),
            "iou": {name: float(v) for name, v in zip(self.class_names, iou, strict=True)},
            "seg_ece": self.ece.compute(),
        }
        top_label = self.top_label.compute()
        out["seg_nll_toplabel"] = top_label["nll"]
        out["seg_brier_toplabel"] = top_label["brier"]
        out["seg_auroc"] = self.auroc.compute()
        sparsification = self.sparsification.compute()
        out["seg_ause"] = sparsification.pop("ause")
        out["seg_sparsification"] = sparsification
        return out


class DisparityMetrics(_Summed):
    """EPE and D1-all over valid ground truth, pixels pooled; with a predicted standard deviation
    the AUSE of EPE and ``RegressionUncertainty`` (its AUROC spots D1 outliers).

    Valid: the ``valid`` mask where given (DESIGN.md "Sample": "infinitely far" pixels are valid with
    gt 0, so a phantom 10 px obstacle in the sky is a 10 px error and a D1 outlier), else gt > 0.
    D1-all (KITTI 2015): share of pixels whose error is > 3 px **and** > 5 % of the ground truth.
    """

    _SUMS = ("uncertainty", "abs_error_sum", "outliers", "pixels", "sparsification")

    def __init__(self, distribution: str = "laplace") -> None:
        self.abs_error_sum = 0.0
        self.outliers = 0
        self.pixels = 0
        self.sparsification = SparsificationAccumulator()
        self.uncertainty = RegressionUncertainty(distribution)

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        uncertainty: ArrayLike | None = None,
        valid: ArrayLike | None = None,
    ) -> None:
        """Add predicted and ground-truth disparity (pixels; HxW or NxHxW) with the ground truth's
        validity mask (True = labelled, far with gt 0 included); without a mask gt 0 = invalid.
        ``uncertainty``: the predicted standard deviation (pixels), as ``disparity_uncertainty``."""
        for p, t, u, v in _per_image_float64(pred, target, uncertainty, valid):
            keep = np.isfinite(t) & ((t > 0) if v is None else (v & (t >= 0)))
            error = np.abs(p[keep] - t[keep])
            error = np.where(np.isfinite(error), error, 1e6)  # a NaN/inf prediction is far off
            outlier = (error > 3.0) & (error > 0.05 * t[keep])
            self.abs_error_sum += float(error.sum())
            self.outliers += int(outlier.sum())
            self.pixels += int(keep.sum())
            if u is not None:
                self.sparsification.update(error, u[keep])
                self.uncertainty.update(error, u[keep], outlier)

    def compute(self) -> dict[str, Any]:
        n = self.pixels
        sparsification = self.sparsification.compute()
        out = {
            "epe": self.abs_error_sum / n if n else float("nan"),
            "d1_all": self.outliers / n if n else float("nan"),
            "disparity_ause": sparsification.pop("ause"),
            "disparity_sparsification": sparsification,
        }
        return out | _uncertainty_keys("disparity", "auroc_d1", self.uncertainty)


class DepthMetrics(_Summed):
    """AbsRel, RMSE (m) and δ<1.25 over gt in (0, max_depth], pixels pooled; with a predicted
    standard deviation the AUSE of AbsRel and ``RegressionUncertainty`` on |depth error| in meters
    (its AUROC spots the pixels that fail δ < 1.25).

    Predictions are clipped to (0, max_depth] before scoring. Only finite labelled depth counts:
    "infinitely far" (+inf) pixels have no finite error (they are scored by disparity D1/EPE).

    Scale, for mono depth, whose metric scale is a learnt prior: ``depth_scale`` is the median over
    frames of each frame's median pred/gt (1 = unbiased), and ``abs_rel_median_scaled`` the AbsRel
    after each frame's prediction is divided by that median (Monodepth2's median scaling), i.e. the
    error that is left once the scale is right.
    """

    _SUMS = (
        "uncertainty",
        "abs_rel_sum",
        "abs_rel_scaled_sum",
        "squared_sum",
        "delta1",
        "pixels",
        "frame_scales",
        "sparsification",
    )

    def __init__(self, max_depth: float = 80.0, distribution: str = "laplace") -> None:
        self.max_depth = max_depth
        self.abs_rel_sum = 0.0
        self.abs_rel_scaled_sum = 0.0
        self.squared_sum = 0.0
        self.delta1 = 0
        self.pixels = 0
        self.frame_scales: list[float] = []  # a list merges by concatenation
        self.sparsification = SparsificationAccumulator()
        self.uncertainty = RegressionUncertainty(distribution)

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        uncertainty: ArrayLike | None = None,
        valid: ArrayLike | None = None,
    ) -> None:
        """Add predicted and ground-truth depth (meters; HxW or NxHxW; gt 0 = unknown, +inf = far,
        both skipped) and optionally the ground truth's validity mask."""
        for p, t, u, v in _per_image_float64(pred, target, uncertainty, valid):
            keep = (t > 0) & (t <= self.max_depth)
            if v is not None:
                keep &= v
            # Predictions are capped to (0, max_depth] as in the KITTI/Eigen protocol (a tiny
            # disparity would otherwise dominate RMSE); NaN counts as far off, not skipped.
            d = np.clip(np.nan_to_num(p[keep], nan=1e-3, posinf=self.max_depth), 1e-3, self.max_depth)
            g = t[keep]
            abs_error = np.abs(d - g)
            abs_rel = abs_error / g
            within = np.maximum(d / g, g / d) < 1.25
            self.abs_rel_sum += float(abs_rel.sum())
            if g.size:
                scale = float(np.median(d / g))
                self.frame_scales.append(scale)
                self.abs_rel_scaled_sum += float((np.abs(d / scale - g) / g).sum())
            self.squared_sum += float(np.square(d - g).sum())
            self.delta1 += int(within.sum())
            self.pixels += int(keep.sum())
            if u is not None:
                self.sparsification.update(abs_rel, u[keep])
                self.uncertainty.update(abs_error, u[keep], ~within)

    def compute(self) -> dict[str, Any]:
        n = self.pixels
        sparsification = self.sparsification.compute()
        out = {
            "abs_rel": self.abs_rel_sum / n if n else float("nan"),
            "abs_rel_median_scaled": self.abs_rel_scaled_sum / n if n else float("nan"),
            "depth_scale": float(np.median(self.frame_scales)) if self.frame_scales else float("nan"),
            "rmse": (self.squared_sum / n) ** 0.5 if n else float("nan"),
            "delta1": self.delta1 / n if n else float("nan"),
            "depth_ause": sparsification.pop("ause"),
            "depth_sparsification": sparsification,
        }
        return out | _uncertainty_keys("depth", "auroc_delta1", self.uncertainty)


def _uncertainty_keys(task: str, auroc_name: str, uncertainty: RegressionUncertainty) -> dict[str, Any]:
    """``RegressionUncertainty`` results named ``<task>_<metric>``, the AUROC as ``<task>_<auroc_name>``
    (what it spots), plus the nominal coverage and distribution once a σ was scored."""
    values = uncertainty.compute()
    values[auroc_name] = values.pop("auroc")
    out: dict[str, Any] = {f"{task}_{key}": value for key, value in values.items()}
    return out | (uncertainty.nominal() if uncertainty.pixels else {})


class MultiTaskMetrics:
    """All metrics of one split; ``compute()`` adds ``score`` (mIoU - D1-all, or mIoU - AbsRel).

    Frames flagged without a label (``has_semantic`` / ``has_depth`` False) are skipped per task.
    ``distribution``: what the uncertainty heads assume (the model config's
    ``uncertainty_distribution``); it sets the regression NLL and the nominal ±kσ coverage.
    """

    def __init__(self, stereo: bool, max_depth: float = 80.0, distribution: str = "laplace") -> None:
        self.stereo = stereo
        self.segmentation = SegmentationMetrics()
        self.disparity = DisparityMetrics(distribution)
        self.depth = DepthMetrics(max_depth, distribution)

    def update_frame(self, outputs: dict[str, ArrayLike], sample: dict[str, Any]) -> None:
        """Add one frame (or batch) of predictions named as the exported model's outputs.

        ``sample`` holds ``semantic``, ``disparity``, ``depth`` and optionally ``has_semantic`` /
        ``has_depth`` and the ``disparity_valid`` / ``depth_valid`` masks (without them gt 0 is
        unknown, as in a bag); numpy arrays and torch tensors are both accepted. ECE needs the
        ``semantic_confidence`` output (top-class probability); without it ``seg_ece`` is NaN.
        """
        keep_semantic = _flags(sample.get("has_semantic", True))
        keep_depth = _flags(sample.get("has_depth", True))
        if "semantic" in outputs and keep_semantic.any():
            self.segmentation.update(
                *_select(
                    keep_semantic,
                    outputs["semantic"],
                    sample["semantic"],
                    outputs.get(SEMANTIC_CONFIDENCE),
                    outputs.get("semantic_uncertainty"),
                )
            )
        if not keep_depth.any():
            return
        if "disparity" in outputs:
            self.disparity.update(
                *_select(
                    keep_depth,
                    outputs["disparity"],
                    sample["disparity"],
                    outputs.get("disparity_uncertainty"),
                    sample.get("disparity_valid"),
                )
            )
        if "depth" in outputs:
            self.depth.update(
                *_select(
                    keep_depth,
                    outputs["depth"],
                    sample["depth"],
                    outputs.get("depth_uncertainty"),
                    sample.get("depth_valid"),
                )
            )

    def merge(self, other: MultiTaskMetrics) -> None:
        """Add ``other``'s frames, as if they had been passed to this object's ``update_frame``."""
        if other.disparity.uncertainty.distribution != self.disparity.uncertainty.distribution:
            raise ValueError("cannot merge metrics of different uncertainty distributions")
        self.segmentation.merge(other.segmentation)
        self.disparity.merge(other.disparity)
        self.depth.merge(other.depth)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pooling": POOLING_NOTE, **self.segmentation.compute()}
        if self.disparity.pixels:
            out.update(self.disparity.compute())
        if self.depth.pixels:
            out.update(self.depth.compute())
        penalty = out.get("d1_all" if self.stereo else "abs_rel", float("nan"))
        out["score"] = out["miou"] - penalty
        return out


def _flags(value: Any) -> np.ndarray:
    return as_numpy(value).astype(bool).reshape(-1)


def _select(keep: np.ndarray, *arrays: ArrayLike | None) -> list[np.ndarray | None]:
    """The frames of each (batched) array whose flag is set (one flag applies to every frame)."""
    out: list[np.ndarray | None] = []
    for a in arrays:
        batch = None if a is None else _batched(a)
        out.append(None if batch is None else batch[np.broadcast_to(keep, (len(batch),))])
    return out


# The scalar metrics every evaluation reports (when measured), in print order: accuracy, then
# the uncertainty measures task by task, the nominal coverage last (read the coverages against it).
SCALAR_METRICS = (
    "miou",
    "pixel_accuracy",
    "epe",
    "d1_all",
    "abs_rel",
    "rmse",
    "delta1",
    "abs_rel_median_scaled",
    "depth_scale",
    "seg_ece",
    "seg_nll_toplabel",
    "seg_brier_toplabel",
    "seg_auroc",
    "seg_ause",
    "disparity_ause",
    "disparity_nll",
    "disparity_coverage_1sigma",
    "disparity_coverage_2sigma",
    "disparity_sigma_scale",
    "disparity_spearman",
    "disparity_auroc_d1",
    "depth_ause",
    "depth_nll",
    "depth_coverage_1sigma",
    "depth_coverage_2sigma",
    "depth_sigma_scale",
    "depth_spearman",
    "depth_auroc_delta1",
    "coverage_nominal_1sigma",
    "coverage_nominal_2sigma",
)
