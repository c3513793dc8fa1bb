"""Streaming evaluation metrics for segmentation, disparity, depth and their uncertainties.

Pooling rule (also written into every ``compute()`` output under ``"pooling"``):

* accuracy metrics (mIoU, per-class IoU, pixel accuracy, ECE, EPE, D1-all, AbsRel, RMSE, δ<1.25)
  **pool pixels over the whole split**: every valid pixel of every frame weighs the same;
* AUSE and sparsification curves are **computed per image and averaged over images** (the usual
  protocol, Poggi et al. 2020), because pooling would need every pixel of the split in memory.

Accumulators take torch tensors or numpy arrays (one frame HxW or a batch NxHxW) through
``update(...)``; ``compute()`` returns plain floats. ``MultiTaskMetrics.update_frame`` is the thin
entry for the runtime's numpy output dicts (keys as in DESIGN.md: ``semantic``,
``semantic_uncertainty``, ``disparity``, ``disparity_uncertainty``, ``depth``, ``depth_uncertainty``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from mtl_perception.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

ArrayLike = Tensor | np.ndarray
SPARSIFICATION_FRACTIONS = np.linspace(0.0, 0.95, 20)  # share of pixels removed, most uncertain first
POOLING_NOTE = "pixels pooled over the split; AUSE and sparsification curves averaged per image"


def _tensor(x: ArrayLike) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _batched(x: ArrayLike) -> Tensor:
    """NxHxW tensor from an HxW frame, an NxHxW batch or an Nx1xHxW batch."""
    t = _tensor(x)
    if t.dim() == 4:
        t = t[:, 0]
    return t.unsqueeze(0) if t.dim() == 2 else t


def _per_image_float64(
    pred: ArrayLike, target: ArrayLike, uncertainty: ArrayLike | None
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """(prediction, ground truth, uncertainty or None) of each image of a batch, as float64."""
    pred, target = _batched(pred).double(), _batched(target).double()
    unc = _batched(uncertainty).double() if uncertainty is not None else [None] * len(pred)
    yield from zip(pred, target, unc, strict=True)


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


def sparsification_curves(errors: Tensor, uncertainty: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean error of the pixels kept after removing each ``SPARSIFICATION_FRACTIONS`` share.

    Returns (by uncertainty, oracle by true error); both start at the mean error of all pixels.
    The metric must be a per-pixel mean (EPE, AbsRel, 1 - accuracy) so that removal is exact.
    """
    n = errors.numel()
    errors = errors.double()

    def curve(order: Tensor) -> np.ndarray:
        # Sorted most-uncertain first, the kept pixels after removing k are the suffix [k:].
        suffix_sum = errors[order].flip(0).cumsum(0).flip(0)
        kept_from = torch.as_tensor((SPARSIFICATION_FRACTIONS * n).astype(np.int64)).clamp_max(n - 1)
        return (suffix_sum[kept_from] / (n - kept_from).double()).numpy()

    by_uncertainty = curve(torch.argsort(uncertainty.double(), descending=True, stable=True))
    oracle = curve(torch.argsort(errors, descending=True, stable=True))
    return by_uncertainty, oracle


def ause(by_uncertainty: np.ndarray, oracle: np.ndarray) -> float:
    """Area between the uncertainty and oracle sparsification curves over removed fraction [0, 1).

    Hand-written (no maintained library has it). Riemann sum with the curves' step; 0 for an
    uncertainty that ranks errors perfectly.
    """
    step = 1.0 / len(SPARSIFICATION_FRACTIONS)
    return float(np.sum(by_uncertainty - oracle) * step)


class SparsificationAccumulator(_Summed):
    """Per-image sparsification curves and AUSE, averaged over the images seen."""

    _SUMS = ("curve_sum", "oracle_sum", "ause_sum", "images")

    def __init__(self) -> None:
        self.curve_sum = np.zeros(len(SPARSIFICATION_FRACTIONS))
        self.oracle_sum = np.zeros(len(SPARSIFICATION_FRACTIONS))
        self.ause_sum = 0.0
        self.images = 0

    def update(self, errors: Tensor, uncertainty: Tensor) -> None:
        """Add one image's per-pixel errors and uncertainties (valid pixels only, 1-D)."""
        if errors.numel() == 0:
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
    """Top-label ECE with equal-width confidence bins, streamed (pixels pooled).

    Same binning as torchmetrics' ``BinaryCalibrationError(norm="l1")`` fed (confidence,
    correct); written as running per-bin sums because torchmetrics keeps every pixel in memory
    and its multiclass form needs all class probabilities, which exported models do not output.
    """

    _SUMS = ("count", "confidence_sum", "correct_sum")

    def __init__(self, n_bins: int = 15) -> None:
        self.boundaries = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
        self.count = torch.zeros(n_bins + 1, dtype=torch.float64)
        self.confidence_sum = torch.zeros(n_bins + 1, dtype=torch.float64)
        self.correct_sum = torch.zeros(n_bins + 1, dtype=torch.float64)

    def update(self, confidence: Tensor, correct: Tensor) -> None:
        """Add 1-D confidences in [0, 1] and 0/1 correctness of the same pixels."""
        confidence = confidence.double().clamp(0.0, 1.0)
        index = torch.bucketize(confidence, self.boundaries, right=True) - 1
        self.count.scatter_add_(0, index, torch.ones_like(confidence))
        self.confidence_sum.scatter_add_(0, index, confidence)
        self.correct_sum.scatter_add_(0, index, correct.double())

    def compute(self) -> float:
        total = self.count.sum()
        if total == 0:
            return float("nan")
        return float((self.correct_sum - self.confidence_sum).abs().sum() / total)


class SegmentationMetrics:
    """mIoU, per-class IoU and pixel accuracy (torchmetrics confusion matrix, pixels pooled over
    the split), plus ECE and error AUSE when an uncertainty in [0, 1] (1 - confidence) is given.

    mIoU averages the classes that occur in the ground truth or the predictions of the split.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, class_names: tuple[str, ...] = CLASS_NAMES) -> None:
        self.class_names = class_names
        # sync_on_compute off: one process evaluates (rank 0 under DDP); a sync would wait forever.
        # validate_args off: its torch.unique over every pixel cost more than the update itself, and
        # the inputs are class-id maps this module builds.
        self.confusion = MulticlassConfusionMatrix(
            num_classes, ignore_index=IGNORE_INDEX, sync_on_compute=False, validate_args=False
        )
        self.ece = ExpectedCalibrationError()
        self.sparsification = SparsificationAccumulator()

    def update(self, pred: ArrayLike, target: ArrayLike, uncertainty: ArrayLike | None = None) -> None:
        """Add predicted class ids and labels (HxW or NxHxW; 255 = ignore) of some frames."""
        pred, target = _batched(pred).long(), _batched(target).long()
        self.confusion.update(pred, target)
        if uncertainty is None:
            return
        for p, t, u in zip(pred, target, _batched(uncertainty).float(), strict=True):
            valid = t != IGNORE_INDEX
            correct = (p[valid] == t[valid]).double()
            self.ece.update(1.0 - u[valid], correct)
            self.sparsification.update(1.0 - correct, u[valid])

    def merge(self, other: SegmentationMetrics) -> None:
        self.confusion.merge_state(other.confusion)
        self.ece.merge(other.ece)
        self.sparsification.merge(other.sparsification)

    def compute(self) -> dict[str, Any]:
        # Without any update (a split with no semantic labels) the matrix is all zeros -> NaN metrics.
        cm = (self.confusion.compute() if self.confusion.update_called else self.confusion.confmat).double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        present = union > 0
        out: dict[str, Any] = {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / cm.sum()) if cm.sum() > 0 else float("nan"),
            "iou": {name: float(v) for name, v in zip(self.class_names, iou, strict=True)},
            "seg_ece": self.ece.compute(),
        }
        sparsification = self.sparsification.compute()
        out["seg_ause"] = sparsification.pop("ause")
        out["seg_sparsification"] = sparsification
        return out


class DisparityMetrics(_Summed):
    """EPE and D1-all over valid ground truth (gt > 0), pixels pooled; AUSE of EPE if uncertain.

    D1-all (KITTI 2015): share of pixels whose error is > 3 px **and** > 5 % of the ground truth.
    """

    _SUMS = ("abs_error_sum", "outliers", "pixels", "sparsification")

    def __init__(self) -> None:
        self.abs_error_sum = 0.0
        self.outliers = 0
        self.pixels = 0
        self.sparsification = SparsificationAccumulator()

    def update(self, pred: ArrayLike, target: ArrayLike, uncertainty: ArrayLike | None = None) -> None:
        """Add predicted and ground-truth disparity (pixels; HxW or NxHxW; gt 0 = invalid)."""
        for p, t, u in _per_image_float64(pred, target, uncertainty):
            valid = (t > 0) & torch.isfinite(t)
            error = (p[valid] - t[valid]).abs()
            error = torch.where(torch.isfinite(error), error, torch.full_like(error, 1e6))
            self.abs_error_sum += float(error.sum())
            self.outliers += int(((error > 3.0) & (error > 0.05 * t[valid])).sum())
            self.pixels += int(valid.sum())
            if u is not None:
                self.sparsification.update(error, u[valid])

    def compute(self) -> dict[str, Any]:
        n = self.pixels
        sparsification = self.sparsification.compute()
        return {
            "epe": self.abs_error_sum / n if n else float("nan"),
            "d1_all": self.outliers / n if n else float("nan"),
            "disparity_ause": sparsification.pop("ause"),
            "disparity_sparsification": sparsification,
        }


class DepthMetrics(_Summed):
    """AbsRel, RMSE (m) and δ<1.25 over gt in (0, max_depth], pixels pooled; AUSE of AbsRel.

    Predictions are clipped to (0, max_depth] before scoring.
    """

    _SUMS = ("abs_rel_sum", "squared_sum", "delta1", "pixels", "sparsification")

    def __init__(self, max_depth: float = 80.0) -> None:
        self.max_depth = max_depth
        self.abs_rel_sum = 0.0
        self.squared_sum = 0.0
        self.delta1 = 0
        self.pixels = 0
        self.sparsification = SparsificationAccumulator()

    def update(self, pred: ArrayLike, target: ArrayLike, uncertainty: ArrayLike | None = None) -> None:
        """Add predicted and ground-truth depth (meters; HxW or NxHxW; gt 0 = invalid)."""
        for p, t, u in _per_image_float64(pred, target, uncertainty):
            valid = (t > 0) & (t <= self.max_depth)
            # Predictions are capped to (0, max_depth] as in the KITTI/Eigen protocol (a tiny
            # disparity would otherwise dominate RMSE); NaN counts as far off, not skipped.
            d = torch.nan_to_num(p[valid], nan=1e-3, posinf=self.max_depth).clamp(1e-3, self.max_depth)
            g = t[valid]
            abs_rel = (d - g).abs() / g
            self.abs_rel_sum += float(abs_rel.sum())
            self.squared_sum += float((d - g).square().sum())
            self.delta1 += int((torch.maximum(d / g, g / d) < 1.25).sum())
            self.pixels += int(valid.sum())
            if u is not None:
                self.sparsification.update(abs_rel, u[valid])

    def compute(self) -> dict[str, Any]:
        n = self.pixels
        sparsification = self.sparsification.compute()
        return {
            "abs_rel": self.abs_rel_sum / n if n else float("nan"),
            "rmse": (self.squared_sum / n) ** 0.5 if n else float("nan"),
            "delta1": self.delta1 / n if n else float("nan"),
            "depth_ause": sparsification.pop("ause"),
            "depth_sparsification": sparsification,
        }


class MultiTaskMetrics:
    """All metrics of one split; ``compute()`` adds ``score`` (mIoU - D1-all, or mIoU - AbsRel).

    Frames flagged without a label (``has_semantic`` / ``has_depth`` False) are skipped per task.
    """

    def __init__(self, stereo: bool, max_depth: float = 80.0) -> None:
        self.stereo = stereo
        self.segmentation = SegmentationMetrics()
        self.disparity = DisparityMetrics()
        self.depth = DepthMetrics(max_depth)

    def update_frame(self, outputs: dict[str, ArrayLike], sample: dict[str, Any]) -> None:
        """Add one frame (or batch) of predictions named as the exported model's outputs.

        ``sample`` holds ``semantic``, ``disparity``, ``depth`` and optionally ``has_semantic`` /
        ``has_depth``; numpy arrays and torch tensors are both accepted.
        """
        keep_semantic = _flags(sample.get("has_semantic", True))
        keep_depth = _flags(sample.get("has_depth", True))
        if "semantic" in outputs and keep_semantic.any():
            self.segmentation.update(
                *_select(
                    keep_semantic,
                    outputs["semantic"],
                    sample["semantic"],
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
                )
            )
        if "depth" in outputs:
            self.depth.update(
                *_select(keep_depth, outputs["depth"], sample["depth"], outputs.get("depth_uncertainty"))
            )

    def merge(self, other: MultiTaskMetrics) -> None:
        """Add ``other``'s frames, as if they had been passed to this object's ``update_frame``."""
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


def _flags(value: Any) -> Tensor:
    return torch.as_tensor(np.asarray(value.cpu() if isinstance(value, Tensor) else value), dtype=torch.bool)


def _select(keep: Tensor, *arrays: ArrayLike | None) -> list[Tensor | None]:
    """The frames of each (batched) array whose flag is set."""
    keep = keep.reshape(-1)
    return [None if a is None else _batched(a)[keep] for a in arrays]


# The scalar accuracy metrics every evaluation reports (when measured), in print order.
SCALAR_METRICS = (
    "miou",
    "pixel_accuracy",
    "epe",
    "d1_all",
    "abs_rel",
    "rmse",
    "delta1",
    "seg_ece",
    "seg_ause",
    "disparity_ause",
    "depth_ause",
)
