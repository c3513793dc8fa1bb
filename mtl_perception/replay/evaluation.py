"""Replay evaluation: accuracy against the bag's ground truth, timing, drops and report panels.

Accuracy uses ``mtl_perception.metrics`` (pixels pooled over the bag; AUSE averaged per image). Per-frame
timelines use a fresh ``MultiTaskMetrics`` per frame, without uncertainty, so they are the same
definitions evaluated on one frame.

Steering error is predicted minus true angle in degrees, over the frames that have a steering truth and
a prediction: frames whose window did not yet hold T consecutive frames (the start, after a gap, a
drop or a loop) give none, and are counted apart instead of being scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from mtl_perception.metrics import MultiTaskMetrics
from mtl_perception.replay import visuals
from mtl_perception.replay.bag_source import ReplayFrame

PREDICTION_KEYS = (
    "semantic",
    "semantic_confidence",
    "semantic_uncertainty",
    "disparity",
    "disparity_uncertainty",
    "depth",
    "depth_uncertainty",
    "steering",
)
LATENCY_PERCENTILES = (50, 90, 95, 99)
TIMELINE_METRICS = ("miou", "d1_all", "epe", "abs_rel")
Prediction = dict[str, Any]  # PREDICTION_KEYS -> HxW arrays at the input resolution / float steering


def prediction_from_result(result: Any) -> Prediction:
    """The outputs of a runtime ``PipelineResult`` as a Prediction (absent outputs left out)."""
    values = {key: getattr(result, key, None) for key in PREDICTION_KEYS}
    return {key: value for key, value in values.items() if value is not None}


@dataclass
class FrameRecord:
    """What happened to one input frame: its latency (None when dropped) and its own metrics."""

    index: int
    stamp: int
    latency_ms: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def dropped(self) -> bool:
        return self.latency_ms is None


class ReplayEvaluator:
    """Streams (frame, prediction) pairs; ``summary()`` gives the metrics.json content.

    ``frame_count`` (frames in the bag) places ``panel_count`` report panels evenly over the bag.
    """

    def __init__(
        self,
        stereo: bool,
        frame_count: int,
        panel_count: int = 6,
        max_depth: float = 80.0,
        distribution: str = "laplace",
        steering_graph: bool = False,
    ) -> None:
        self.stereo = stereo
        self.steering_graph = steering_graph  # the model runs a steering graph: report its error
        self.max_depth = max_depth
        self.distribution = distribution  # the model's uncertainty heads (ModelInfo)
        self.metrics = MultiTaskMetrics(stereo, max_depth=max_depth, distribution=distribution)
        self.records: list[FrameRecord] = []
        self.panels: list[dict[str, Any]] = []
        self._panel_targets = sorted(
            {int(i) for i in np.linspace(0, max(frame_count - 1, 0), min(panel_count, frame_count))}
        )
        self._steering_errors: list[float] = []  # degrees, scored frames
        self._steering_incomplete = 0  # processed, with a truth, but the window was not full
        self._ground_truth_frames = 0

    def add(self, frame: ReplayFrame, prediction: Prediction | None, latency_ms: float | None) -> None:
        """Record one frame; ``prediction`` None means the frame was dropped (no output)."""
        record = FrameRecord(frame.index, frame.stamp, latency_ms)
        self.records.append(record)
        if frame.has_ground_truth:
            self._ground_truth_frames += 1
        if prediction is None:
            return
        sample = self._sample(frame)
        if sample:
            outputs = {k: v for k, v in prediction.items() if k != "steering"}
            _check_sizes(frame, outputs, sample)
            # Each frame is scored once: its own metrics give the timeline, then join the pooled ones.
            frame_metrics = MultiTaskMetrics(
                self.stereo, max_depth=self.max_depth, distribution=self.distribution
            )
            frame_metrics.update_frame(outputs, sample)
            record.metrics = _timeline_metrics(frame_metrics)
            self.metrics.merge(frame_metrics)
        if frame.steering is not None:
            if prediction.get("steering") is not None:
                error = math.degrees(float(prediction["steering"]) - frame.steering)
                self._steering_errors.append(error)
                record.metrics["steering_error_deg"] = error
            elif self.steering_graph:
                self._steering_incomplete += 1
        if self._panel_targets and frame.index >= self._panel_targets[0]:
            self._panel_targets.pop(0)
            self.panels.append(_panel(frame, prediction))

    def _sample(self, frame: ReplayFrame) -> dict[str, Any]:
        """The frame's ground truth in the metrics' sample layout; {} when it has none."""
        if frame.semantic is None and frame.disparity is None and frame.depth is None:
            return {}
        shape = frame.left.shape[:2]
        has_depth = frame.disparity is not None or frame.depth is not None
        return {
            "semantic": frame.semantic if frame.semantic is not None else np.full(shape, 255, np.uint8),
            "disparity": frame.disparity if frame.disparity is not None else np.zeros(shape, np.float32),
            "depth": frame.depth if frame.depth is not None else np.zeros(shape, np.float32),
            "has_semantic": frame.semantic is not None,
            "has_depth": has_depth,
        }

    def summary(self) -> dict[str, Any]:
        """Accuracy, calibration, steering, timing and per-frame timelines (JSON-ready)."""
        processed = [r for r in self.records if not r.dropped]
        latencies = np.array([r.latency_ms for r in processed], dtype=np.float64)
        out: dict[str, Any] = {
            "frames": {
                "replayed": len(self.records),
                "processed": len(processed),
                "dropped": len(self.records) - len(processed),
                "drop_rate": (len(self.records) - len(processed)) / len(self.records)
                if self.records
                else 0.0,
                "with_ground_truth": self._ground_truth_frames,
            },
            "latency_ms": _percentiles(latencies),
        }
        if self._ground_truth_frames and processed:
            accuracy = self.metrics.compute()
            out["accuracy"] = {k: v for k, v in accuracy.items() if not k.endswith("sparsification")}
            out["sparsification"] = {k: v for k, v in accuracy.items() if k.endswith("sparsification")}
            out["calibration"] = reliability_diagram(self.metrics)
        if self._steering_errors or self._steering_incomplete:
            out["steering"] = steering_summary(self._steering_errors, self._steering_incomplete)
        out["per_frame"] = [
            {"index": r.index, "stamp": r.stamp, "latency_ms": r.latency_ms, **r.metrics}
            for r in self.records
        ]
        return out


def steering_summary(errors_deg: list[float], incomplete: int) -> dict[str, float | int | None]:
    """MSE (deg^2), RMSE and MAE (deg) of the scored frames' errors; null when none was scored."""
    errors = np.asarray(errors_deg, dtype=np.float64)
    mse = float(np.mean(errors**2)) if errors.size else None
    return {
        "frames_scored": int(errors.size),
        "frames_incomplete_window": incomplete,
        "mse_deg2": mse,
        "rmse_deg": math.sqrt(mse) if mse is not None else None,
        "mae_deg": float(np.mean(np.abs(errors))) if errors.size else None,
    }


def reliability_diagram(metrics: MultiTaskMetrics) -> dict[str, list[float | None]]:
    """Per bin of top-class probability: mean confidence, accuracy and pixel count (seg ECE's bins)."""
    bins = metrics.segmentation.ece.bins()
    return {
        "bin_edges": bins["edges"].tolist(),
        "confidence": _nan_to_none(bins["confidence"]),
        "accuracy": _nan_to_none(bins["accuracy"]),
        "pixels": bins["count"].tolist(),
    }


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: empty bins become null."""
    return [None if math.isnan(v) else float(v) for v in values]


def _percentiles(latencies: np.ndarray) -> dict[str, float | None]:
    if latencies.size == 0:
        return {**{f"p{p}": None for p in LATENCY_PERCENTILES}, "mean": None, "max": None}
    stats: dict[str, float | None] = {
        f"p{p}": float(np.percentile(latencies, p)) for p in LATENCY_PERCENTILES
    }
    stats["mean"] = float(latencies.mean())
    stats["max"] = float(latencies.max())
    return stats


def _timeline_metrics(frame_metrics: MultiTaskMetrics) -> dict[str, float]:
    """The timeline metrics of one frame (same definitions as the pooled ones)."""
    values = frame_metrics.compute()
    return {k: float(values[k]) for k in TIMELINE_METRICS if k in values and math.isfinite(values[k])}


def _check_sizes(frame: ReplayFrame, outputs: Prediction, sample: dict[str, Any]) -> None:
    for key in ("semantic", "disparity", "depth"):
        if key in outputs and outputs[key].shape != sample[key].shape:
            raise ValueError(
                f"frame {frame.index}: predicted {key} is {outputs[key].shape} but the ground truth is "
                f"{sample[key].shape}; replay needs outputs at the input resolution"
            )


def _panel(frame: ReplayFrame, prediction: Prediction) -> dict[str, Any]:
    """Input, ground truth, prediction and uncertainty images of one frame (base64 PNG)."""
    images = {"input": visuals.png_base64(visuals.input_bgr(frame.left, frame.encoding))}
    if frame.semantic is not None:
        images["semantic (truth)"] = visuals.png_base64(visuals.classes_bgr(frame.semantic))
    images["semantic"] = visuals.png_base64(visuals.classes_bgr(prediction["semantic"]))
    if "semantic_uncertainty" in prediction:
        images["semantic uncertainty"] = visuals.png_base64(
            visuals.heatmap_bgr(prediction["semantic_uncertainty"], 0.0, 1.0)
        )
    for key in ("disparity", "depth"):
        if key not in prediction:
            continue
        truth = getattr(frame, key)
        low, high = visuals.valid_range(truth, prediction[key])
        if truth is not None:
            images[f"{key} (truth)"] = visuals.png_base64(
                visuals.heatmap_bgr(np.where(truth > 0, truth, np.nan), low, high)
            )
        images[key] = visuals.png_base64(visuals.heatmap_bgr(prediction[key], low, high))
        uncertainty = prediction.get(f"{key}_uncertainty")
        if uncertainty is not None:
            images[f"{key} uncertainty"] = visuals.png_base64(
                visuals.heatmap_bgr(uncertainty, *visuals.valid_range(uncertainty), cv2.COLORMAP_MAGMA)
            )
    return {"index": frame.index, "stamp": frame.stamp, "images": images}
