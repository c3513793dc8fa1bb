"""CI gates on replay metrics: ``--fail-below miou=0.5 --fail-above d1_all=0.2``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mtl_perception.errors import UserError
from mtl_perception.metrics import SCALAR_METRICS


@dataclass(frozen=True)
class Gate:
    """``metric`` must stay at or above (``below=True`` fails below) or at or below ``threshold``."""

    metric: str
    threshold: float
    below: bool

    def __str__(self) -> str:
        return f"{self.metric} {'>=' if self.below else '<='} {self.threshold:g}"


def parse_gates(fail_below: list[str] | None, fail_above: list[str] | None) -> list[Gate]:
    """Gates from ``METRIC=VALUE`` strings; a malformed one raises UserError."""
    gates = []
    for values, below, option in ((fail_below, True, "--fail-below"), (fail_above, False, "--fail-above")):
        for text in values or []:
            metric, sep, number = text.partition("=")
            try:
                threshold = float(number)
            except ValueError:
                threshold = math.nan
            if not sep or not metric or math.isnan(threshold):
                raise UserError(f"{option} {text!r}: expected METRIC=NUMBER, e.g. {option} miou=0.5")
            gates.append(Gate(metric.strip(), threshold, below))
    return gates


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The flat metric names gates and the demo use (only those the replay measured)."""
    flat: dict[str, float] = {}
    accuracy = summary.get("accuracy", {})
    for key in SCALAR_METRICS:
        if key in accuracy:
            flat[key] = accuracy[key]
    for key, value in summary.get("latency_ms", {}).items():
        if key.startswith("p") and value is not None:
            flat[f"latency_{key}_ms"] = value
    flat["drop_rate"] = summary["frames"]["drop_rate"]
    if summary.get("throughput_fps") is not None:
        flat["throughput_fps"] = summary["throughput_fps"]
    steering = summary.get("steering", {})
    for key in ("rmse_deg", "mse_deg2"):
        if steering.get(key) is not None:
            flat[f"steering_{key}"] = steering[key]
    return {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(v)}


def failed_gates(gates: list[Gate], metrics: dict[str, float]) -> list[str]:
    """One line per failing gate; a gate on a metric the replay did not measure fails too."""
    failures = []
    for gate in gates:
        value = metrics.get(gate.metric)
        if value is None:
            failures.append(f"{gate}: not measured (available: {', '.join(sorted(metrics))})")
        elif (value < gate.threshold) if gate.below else (value > gate.threshold):
            failures.append(f"{gate}: got {value:.4g}")
    return failures
