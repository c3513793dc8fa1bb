"""Timing loops, latency statistics and isolated measurements for `mtl-perception benchmark` and
benchmarks/*.py.

Each figure of `mtl-perception benchmark` is measured in a process of its own
(``measure_isolated``) that loads only the backend it times, as a user's process does. The command
used to time everything in its own process: ONNX Runtime ran after torch had exported (and
parity-checked) the model there, beside the other sessions of the comparison, with cv2/torch
thread counts set, and its figures disagreed with a short script's. Measured on a quiet 16-core
machine, each process pinned to 2 cores, stereo_default 256x512, pipeline p50 over 35 frames, five
interleaved rounds: short script 39-52 ms (median 42.0), the isolated worker 40-47 (41.3), the
worker started by a parent that had run torch and held two sessions 41-43 (41.9); in the timing
process itself, cv2.setNumThreads(2) gave median 43.4 and two more open sessions 43.1, and in an
earlier two rounds torch run beforehand 52-53 where the short script gave 42-43. The spread between
identical processes (39-52 ms) was as large as any single factor, so no one thread pool is "the"
cause: isolation removes the whole class. ONNX Runtime pool threads sleeping instead of spinning
(``spin_wait=False``, the node's ``cpu_spin_wait`` default) measured 56-57 ms there. The figures
are for sleeping threads unless ``--cpu-spin-wait``: that is what the node runs, and on 2 cores
spinning threads take the CPU from pre/post-processing (stereo_default at 720x1280 frames on this
2-core VM: post 13.5 ms spinning vs 6.5 ms sleeping, inference 74 vs 77 ms). An ONNX Runtime or SGBM
worker never imports torch.

Run as a worker: ``python -m mtl_perception.runtime.benchmark '<Measurement as JSON>'`` prints one
JSON line with the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from tqdm import tqdm

from mtl_perception.contract import resize_image
from mtl_perception.data.frames import StereoPair
from mtl_perception.runtime.pipeline import Pipeline

# What one isolated measurement times: the whole pipeline of a backend, a bare ONNX Runtime session
# (inference only, for the multi-task vs single-task comparison), or the SGBM baseline.
MEASUREMENTS = ("pipeline", "infer", "sgbm")


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


@dataclass(frozen=True)
class Measurement:
    """One figure of the benchmark: what to time, on which frames, with how many threads.

    ``model`` is the .onnx file (``pipeline`` with backend torch opens the .pt beside it; ``sgbm``
    needs none). Frames come from ``data`` when given, else procedural frames of ``size`` (H, W);
    ``sgbm`` matches them at ``size`` over ``max_disparity``.
    """

    what: str
    label: str
    size: tuple[int, int]
    threads: int
    frames: int
    warmup: int
    model: str | None = None
    backend: str = "onnxruntime"
    data: str | None = None
    max_disparity: float = 0.0
    spin_wait: bool = False  # ONNX Runtime pool threads busy-wait between runs (the node's cpu_spin_wait)

    def __post_init__(self) -> None:
        if self.what not in MEASUREMENTS:
            raise ValueError(f"unknown measurement {self.what!r}; expected one of {MEASUREMENTS}")
        if self.what != "sgbm" and self.model is None:
            raise ValueError(f"a {self.what} measurement needs a model file")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        values = json.loads(text)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown measurement fields {sorted(unknown)}")
        return cls(**{**values, "size": tuple(values["size"])})


def measure(spec: Measurement) -> dict[str, object]:
    """Run one measurement in this process; returns its figures (``skipped`` if the backend can't run).

    Meant for a fresh process (``measure_isolated``): it loads only what ``spec`` times.
    """
    import cv2

    from mtl_perception.data.frames import stereo_frames

    # The pipeline's resizes and SGBM run on OpenCV's pool: the same thread budget as the backend.
    cv2.setNumThreads(spec.threads)
    pairs = stereo_frames(spec.size, 8, spec.data)
    out: dict[str, object] = {"load_average_1min": round(os.getloadavg()[0], 2)}
    if spec.what == "sgbm":
        return {**out, **_time_sgbm(spec, pairs)}
    assert spec.model is not None
    if spec.what == "infer":
        from mtl_perception.data.frames import frame_feeds
        from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

        session = OnnxRuntimeBackend(spec.model, threads=spec.threads, spin_wait=spec.spin_wait)
        feeds = frame_feeds(pairs, session.info)
        try:
            stats = time_calls(
                lambda i: session.infer(feeds[i % len(feeds)]), spec.frames, spec.warmup, spec.label
            )
        finally:
            session.close()
        return {**out, **stats.as_dict()}
    from mtl_perception.runtime import BackendUnavailableError, create_backend

    try:
        backend = create_backend(spec.backend, spec.model, threads=spec.threads, spin_wait=spec.spin_wait)
    except BackendUnavailableError as exc:
        return {"skipped": str(exc)}
    try:
        return {**out, **time_pipeline(Pipeline(backend), pairs, spec.frames, spec.warmup, spec.label)}
    finally:
        backend.close()


def _time_sgbm(spec: Measurement, pairs: Sequence[StereoPair]) -> dict[str, object]:
    """The SGBM baseline that `evaluate --baseline sgbm` scores, on RGB frames resized to ``size``."""
    from mtl_perception.baselines.sgbm import num_disparities, sgbm_disparity, sgbm_matcher

    height, width = spec.size
    resized = [tuple(resize_image(view, width, height) for view in pair) for pair in pairs]
    matcher = sgbm_matcher(spec.max_disparity)
    stats = time_calls(
        lambda i: sgbm_disparity(matcher, *resized[i % len(resized)]), spec.frames, spec.warmup, spec.label
    )
    return {**stats.as_dict(), "num_disparities": num_disparities(spec.max_disparity)}


class MeasurementError(RuntimeError):
    """An isolated measurement process failed (its error went to stderr)."""


def measure_isolated(spec: Measurement) -> dict[str, object]:
    """``measure(spec)`` in a fresh Python process, so nothing else in the caller's process competes.

    The worker's progress and errors go to this process's stderr; its figures come back on stdout.
    """
    command = [sys.executable, "-m", "mtl_perception.runtime.benchmark", spec.to_json()]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise MeasurementError(f"{spec.label}: the measurement process failed (exit code {done.returncode})")
    return json.loads(lines[-1])


if __name__ == "__main__":
    from mtl_perception.runtime.memory import retain_freed_memory

    retain_freed_memory()  # as the node and replay processes do
    print(json.dumps(measure(Measurement.from_json(sys.argv[1]))), flush=True)
