"""Known-answer stereo probes: tests that only a matcher which follows the right view can pass.

A network can learn to guess disparity from the left image alone where a scene allows it (a flat road
seen from a fixed rig). These probes take that guess away (DESIGN.md, "Evaluation that cannot be
fooled"); each works on any ``DisparityFn`` (a model through the runtime pipeline, or SGBM):

* ``right_view``: the right image replaced by black, by noise and by a copy of the left must move the
  disparity by at least a quarter of the scene's disparity range on average (a monocular guess does
  not move at all);
* ``shift``: right = left shifted by a known d on natural-looking texture, for d across the range:
  the median prediction must be within 1 px of d;
* ``random_dots``: random-dot stereograms of layered planes (no monocular cue at all): D1 (KITTI's
  > 3 px and > 5 %) on the pixels visible in both views must be <= 5 %.

All images are made here, deterministically from a seed: nothing is downloaded, and no probe image
is ever training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mtl_perception.data.frames import value_noise
from mtl_perception.metrics import DisparityMetrics

# (left, right) HxWx3 uint8 RGB -> HxW float32 disparity in pixels of the left view (NaN = none).
DisparityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

MIN_RIGHT_VIEW_CHANGE = 0.25  # of the scene's disparity range (p95 - p5 of the true-pair prediction)
MAX_SHIFT_ERROR_PX = 1.0
MAX_RANDOM_DOT_D1 = 0.05
SHIFT_COUNT = 6
DOT_PX = 2  # random-dot size: fine enough to hide every shape, coarse enough for 1/4-res features


@dataclass
class ProbeReport:
    """Figures of each probe and whether it passed; ``passed`` is all of them."""

    right_view: dict[str, float] = field(default_factory=dict)  # replacement -> mean |change| / range
    shift: dict[int, float] = field(default_factory=dict)  # true d -> median prediction
    random_dots_d1: float = float("nan")
    random_dots_density: float = float("nan")  # share of scored pixels with a disparity (not NaN)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "right_view_change_of_range": self.right_view,
            "shift_median_prediction_px": {str(d): v for d, v in self.shift.items()},
            "random_dots_d1": self.random_dots_d1,
            "random_dots_density": self.random_dots_density,
            "failures": self.failures,
        }

    def summary(self) -> str:
        lines = [f"stereo probes: {'PASS' if self.passed else 'FAIL'}"]
        changes = ", ".join(f"{name} {value:.2f}" for name, value in self.right_view.items())
        lines.append(
            f"  right view replaced (mean change / range, need >= {MIN_RIGHT_VIEW_CHANGE}): {changes}"
        )
        shifts = ", ".join(f"{d}->{value:.1f}" for d, value in self.shift.items())
        lines.append(f"  shifted texture (true -> median px, need within {MAX_SHIFT_ERROR_PX}): {shifts}")
        lines.append(
            f"  random-dot D1 (holes count as errors; need <= {MAX_RANDOM_DOT_D1:.0%}): "
            f"{self.random_dots_d1:.1%}, {self.random_dots_density:.0%} dense"
        )
        lines += [f"  failed: {failure}" for failure in self.failures]
        return "\n".join(lines)


def run_probes(
    disparity_of: DisparityFn,
    size: tuple[int, int],
    max_disparity: float,
    scene: tuple[np.ndarray, np.ndarray],
    seed: int = 0,
) -> ProbeReport:
    """All three probes at image ``size`` (H, W) for a matcher whose range is ``max_disparity`` px.

    ``scene`` is a real-looking stereo pair at ``size`` whose own disparity sets the range that the
    right-view probe measures change against.
    """
    report = ProbeReport()
    rng = np.random.default_rng(seed)
    _right_view_probe(disparity_of, scene, rng, report)
    for d in np.linspace(4, 0.9 * max_disparity, SHIFT_COUNT).round().astype(int):
        left, right = shifted_pair(size, int(d), rng)
        prediction = disparity_of(left, right)[:, int(d) + 8 :]  # columns with a match in view
        median = float(np.nanmedian(prediction)) if np.isfinite(prediction).any() else float("nan")
        report.shift[int(d)] = median
        if not abs(median - d) <= MAX_SHIFT_ERROR_PX:
            report.failures.append(f"shift {d} px: median prediction {median:.2f} px")
    left, right, truth, visible = random_dot_stereogram(size, max_disparity, rng)
    prediction = disparity_of(left, right)
    report.random_dots_d1 = d1_error(prediction, truth, visible)
    report.random_dots_density = float(np.isfinite(prediction[visible]).mean())
    if not report.random_dots_d1 <= MAX_RANDOM_DOT_D1:
        report.failures.append(f"random-dot stereogram: D1 {report.random_dots_d1:.1%}")
    return report


def _right_view_probe(
    disparity_of: DisparityFn,
    scene: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    report: ProbeReport,
) -> None:
    left, right = scene
    reference = disparity_of(left, right)
    matched = np.isfinite(reference)  # averaged where the true pair got a disparity (SGBM leaves holes)
    if not matched.any():
        report.failures.append("right view: no disparity at all on the true pair")
        return
    reference = reference[matched]
    low, high = np.percentile(reference, [5, 95])
    scene_range = max(float(high - low), 1.0)
    replacements = {
        "black": np.zeros_like(right),
        "noise": rng.integers(0, 256, right.shape, dtype=np.uint8),
        "copy of left": left.copy(),
    }
    for name, replaced in replacements.items():
        # No disparity (NaN) where there was one is a change too: it counts as 0 px.
        changed = np.nan_to_num(disparity_of(left, replaced)[matched], nan=0.0)
        report.right_view[name] = float(np.mean(np.abs(changed - reference)) / scene_range)
        if not report.right_view[name] >= MIN_RIGHT_VIEW_CHANGE:
            report.failures.append(
                f"right view {name}: disparity moved by {report.right_view[name]:.2f} of the scene's range"
            )


def natural_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8 texture with a 1/f-like spectrum (coarse blobs to fine grain), as photos have."""
    levels = ((4, 1.0), (16, 0.8), (64, 0.6), (max(width // 4, 64), 0.5))
    return np.clip(value_noise(height, width, levels, rng) * 255, 0, 255).astype(np.uint8)


def shifted_pair(size: tuple[int, int], d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fronto-parallel textured plane at disparity ``d``: left[x] shows what right[x - d] shows."""
    height, width = size
    texture = natural_texture(height, width + d, rng)
    return np.ascontiguousarray(texture[:, :width]), np.ascontiguousarray(texture[:, d:])


def random_dot_stereogram(
    size: tuple[int, int], max_disparity: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, true left disparity, visible-in-both mask) of random dots over layered planes.

    A background plane and three rectangles in front of it, at integer disparities across the range;
    both views are independent-looking dot fields, so only matching recovers the layers.
    """
    height, width = size
    levels = np.linspace(0.1, 0.8, 4) * max_disparity
    truth = np.full((height, width), round(levels[0]), np.int32)
    for level in levels[1:]:
        h, w = rng.integers(height // 5, height // 2), rng.integers(width // 6, width // 3)
        y, x = rng.integers(0, height - h), rng.integers(int(max_disparity), width - w)
        truth[y : y + h, x : x + w] = round(level)
    dots = rng.integers(0, 256, (height // DOT_PX + 1, (width + int(max_disparity)) // DOT_PX + 1), np.uint8)
    right_wide = np.repeat(np.repeat(dots, DOT_PX, axis=0), DOT_PX, axis=1)[:height]
    right = np.repeat(right_wide[:, :width, None], 3, axis=2)
    columns = np.arange(width)[None, :]
    source = columns - truth  # the right-view column each left pixel shows
    in_view = source >= 0
    # Pixels that leave the view get fresh dots (they have no match, and are not scored).
    left_gray = np.where(in_view, right_wide[np.arange(height)[:, None], np.clip(source, 0, None)], 0)
    fresh = rng.integers(0, 256, left_gray.shape, np.uint8)
    left_gray = np.where(in_view, left_gray, fresh).astype(np.uint8)
    # Visible in both views: for each right-view column, the nearest left pixel (largest disparity)
    # that lands there wins; farther ones are occluded.
    nearest = np.full((height, width), -1, np.int32)
    rows = np.repeat(np.arange(height)[:, None], width, axis=1)
    np.maximum.at(nearest, (rows[in_view], source[in_view]), truth[in_view])
    visible = in_view & (truth >= nearest[rows, np.clip(source, 0, None)])
    left = np.repeat(left_gray[:, :, None], 3, axis=2)
    return left, right, truth.astype(np.float32), visible


def d1_error(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """KITTI D1 over ``mask`` (the metrics module's definition; NaN counts as wrong)."""
    metrics = DisparityMetrics()
    metrics.update(prediction, np.where(mask, truth, 0.0))  # ground truth 0 = not scored
    return metrics.compute()["d1_all"]
