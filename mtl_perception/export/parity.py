"""Parity between two implementations of the same graph (PyTorch vs ONNX Runtime, ORT vs TensorRT)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

InferFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# Outputs compared by max absolute difference, with the tolerance field that bounds each.
CONTINUOUS_TOLERANCE_FIELD = {
    "disparity": "disparity",
    "disparity_uncertainty": "disparity",
    "depth": "depth",
    "depth_uncertainty": "depth",
    "semantic_uncertainty": "other",
    "semantic_confidence": "other",
    "embedding": "other",
    "steering": "other",
}


@dataclass(frozen=True)
class ParityTolerance:
    """Pass limits: disparity in pixels, depth in meters, segmentation agreement in percent."""

    disparity: float = 0.05
    depth: float = 0.05
    other: float = 1e-3
    segmentation_agreement: float = 99.5


@dataclass
class ParityReport:
    frames: int
    max_abs: dict[str, float] = field(default_factory=dict)
    segmentation_agreement: float | None = None  # percent of pixels with the same class id
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line per metric, for logs and the export command."""
        lines = [f"parity on {self.frames} frame(s): {'PASS' if self.passed else 'FAIL'}"]
        if self.segmentation_agreement is not None:
            lines.append(f"  segmentation agreement: {self.segmentation_agreement:.3f} %")
        lines += [f"  {name} max abs diff: {value:.3g}" for name, value in sorted(self.max_abs.items())]
        lines += [f"  failed: {failure}" for failure in self.failures]
        return "\n".join(lines)


def check_parity(
    reference: InferFn,
    candidate: InferFn,
    feeds: Sequence[dict[str, np.ndarray]],
    tolerance: ParityTolerance | None = None,
) -> ParityReport:
    """Run both on every feed and compare: max abs difference per continuous output, class agreement."""
    tolerance = tolerance or ParityTolerance()
    report = ParityReport(frames=len(feeds))
    agree = total = 0
    for feed in feeds:
        expected = {k: np.array(v) for k, v in reference(feed).items()}  # copy: backends reuse buffers
        actual = candidate(feed)
        for name, want in expected.items():
            got = actual[name]
            if name == "semantic":
                agree += int(np.count_nonzero(want == got))
                total += want.size
            else:
                diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
                report.max_abs[name] = max(report.max_abs.get(name, 0.0), diff)
    if total:
        report.segmentation_agreement = 100.0 * agree / total
        if report.segmentation_agreement < tolerance.segmentation_agreement:
            report.failures.append(
                f"segmentation agreement {report.segmentation_agreement:.3f} % < "
                f"{tolerance.segmentation_agreement} %"
            )
    for name, diff in report.max_abs.items():
        limit = getattr(tolerance, CONTINUOUS_TOLERANCE_FIELD.get(name, "other"))
        if not diff <= limit:  # also catches NaN
            report.failures.append(f"{name} max abs diff {diff:.3g} > {limit}")
    return report
