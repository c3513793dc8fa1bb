"""Timing loops and latency statistics shared by `mtl-perception benchmark` and benchmarks/*.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from mtl_perception.export.frames import StereoPair
from mtl_perception.runtime.pipeline import Pipeline


@dataclass
class LatencyStats:
    """Per-frame wall time in milliseconds; fps = 1000 / mean."""

    frames: int
    fps: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencyStats:
        values = np.asarray(latencies_ms, dtype=np.float64)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        mean = float(values.mean())
        return cls(len(values), 1000.0 / mean, mean, float(p50), float(p95), float(p99))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def time_calls(step: Callable[[int], object], frames: int, warmup: int, label: str) -> LatencyStats:
    """Call ``step(i)`` warmup + frames times; stats over the timed frames only."""
    for i in range(warmup):
        step(i)
    latencies = []
    for i in tqdm(range(frames), desc=label, leave=False):
        start = time.perf_counter()
        step(i)
        latencies.append((time.perf_counter() - start) * 1e3)
    return LatencyStats.of(latencies)


def time_pipeline(
    pipeline: Pipeline, pairs: Sequence[StereoPair], frames: int, warmup: int, label: str
) -> dict[str, object]:
    """End-to-end latency of ``pipeline.process`` plus the mean pre / inference / post split."""
    splits: list[dict[str, float]] = []
    stereo = pipeline.info.is_stereo

    def step(i: int) -> None:
        left, right = pairs[i % len(pairs)]
        result = pipeline.process(left, right if stereo else None)
        splits.append(result.timings)

    stats = time_calls(step, frames, warmup, label)
    timed = splits[warmup:]
    mean = {key: float(np.mean([s[key] for s in timed])) for key in ("pre_ms", "infer_ms", "post_ms")}
    return {
        **stats.as_dict(),
        **{k: round(v, 3) for k, v in mean.items()},
        "pre_post_share_of_infer": round((mean["pre_ms"] + mean["post_ms"]) / mean["infer_ms"], 4),
    }
