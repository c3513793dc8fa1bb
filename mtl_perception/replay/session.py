"""One replay: bag -> (pipeline in-process | live node over DDS) -> metrics.json, report.html, bag.

Whatever was evaluated before a failure (corrupt bag part-way, node crash) is still written; the
error is recorded in metrics.json and the report, then re-raised for the caller's exit status.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtl_perception.errors import UserError
from mtl_perception.replay import REPLAY_MODES
from mtl_perception.replay.bag_source import BagSource, ReplayFrame, ReplayTopics
from mtl_perception.replay.evaluation import Prediction, ReplayEvaluator, prediction_from_result
from mtl_perception.replay.gates import headline
from mtl_perception.replay.prediction_bag import PredictionBagWriter
from mtl_perception.replay.report import write_report

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
PREDICTIONS_BAG = "predictions"
log = logging.getLogger(__name__)

FrameResult = tuple[ReplayFrame, Prediction | None, float | None]  # frame, outputs (None: dropped), ms


@dataclass
class ReplayOptions:
    """Everything one replay needs; ``rate`` paces node mode (multiple of the recorded rate)."""

    bag: Path
    out: Path
    model: Path
    mode: str = "pipeline"
    backend: str = "auto"
    topics: ReplayTopics = field(default_factory=ReplayTopics)
    rate: float = 1.0
    panels: int = 6
    max_frames: int | None = None
    storage: str = "mcap"
    params_file: Path | None = None  # node mode: the node's ROS parameter file
    threads: int | None = None


@dataclass
class ReplayOutcome:
    summary: dict[str, Any]
    metrics_path: Path
    report_path: Path
    bag_path: Path | None


def pipeline_results(frames: Iterator[ReplayFrame], options: ReplayOptions) -> Iterator[FrameResult]:
    """In-process replay through the runtime pipeline, as fast as it goes (nothing is dropped)."""
    from mtl_perception.model_info import steering_path_for
    from mtl_perception.runtime import CameraModel, Pipeline, create_backend

    backend = create_backend(options.backend, options.model, threads=options.threads)
    steering_path = steering_path_for(options.model)
    steering = create_backend("onnxruntime", steering_path) if steering_path.is_file() else None
    pipeline = Pipeline(backend, output_resolution="input", steering_backend=steering)
    try:
        for frame in frames:
            camera = frame.camera()
            start = time.perf_counter()
            result = pipeline.process(
                frame.left,
                frame.right,
                encoding=frame.encoding,
                camera=None if camera is None else CameraModel(*camera),
                stamp=frame.stamp / 1e9,  # the node's rule: the steering window follows the stamps
            )
            latency_ms = (time.perf_counter() - start) * 1e3
            yield frame, prediction_from_result(result), latency_ms
    finally:
        backend.close()
        if steering is not None:
            steering.close()


def run_replay(options: ReplayOptions) -> ReplayOutcome:
    """Replay ``options.bag`` and write the outputs into ``options.out``; raises after writing on error."""
    from mtl_perception.model_info import steering_path_for
    from mtl_perception.runtime import read_model_info

    if options.mode not in REPLAY_MODES:
        raise UserError(f"unknown replay mode {options.mode!r}; choose one of {', '.join(REPLAY_MODES)}")
    info = read_model_info(options.model)
    source = BagSource(options.bag, options.topics, stereo=info.is_stereo)
    total = source.frame_count if options.max_frames is None else min(source.frame_count, options.max_frames)
    options.out.mkdir(parents=True, exist_ok=True)
    steering_path = steering_path_for(options.model)
    evaluator = ReplayEvaluator(
        info.is_stereo,
        total,
        options.panels,
        distribution=info.uncertainty_distribution,
        steering_graph=steering_path.is_file(),
    )
    bag_path = options.out / PREDICTIONS_BAG
    if bag_path.exists():
        raise UserError(f"{bag_path} already exists; remove it or choose another --out")
    clock = _FirstFrameClock()
    frames = clock.watch(_limited(source.frames(), options.max_frames))
    if options.mode == "pipeline":
        results = pipeline_results(frames, options)
    else:
        from mtl_perception.replay.node_replay import node_results

        # Node mode scores after playback (see node_replay), so playback gets its own progress bar.
        frames = iter(tqdm(frames, total=total, desc="playback", unit="frame"))
        results = node_results(frames, options, info, log_path=options.out / "node.log")
    label = "replay" if options.mode == "pipeline" else "scoring"
    error: UserError | None = None
    evaluating_s = 0.0  # time spent on metrics, panels and the predictions bag, not on inference
    with PredictionBagWriter(bag_path, options.storage) as writer:
        try:
            for frame, prediction, latency_ms in tqdm(results, total=total, desc=label, unit="frame"):
                started = time.perf_counter()
                evaluator.add(frame, prediction, latency_ms)
                if prediction is not None:
                    writer.write(frame, prediction)
                evaluating_s += time.perf_counter() - started
        except UserError as exc:
            error = exc
    if error is None and not any(not record.dropped for record in evaluator.records):
        # Nothing scored is a failure, not an empty report with exit status 0.
        error = UserError(
            f"replay evaluated no frame ({len(evaluator.records)} read, none processed); "
            f"{source.topics_report()}"
        )
    # From the first frame read (node start-up and model loading do not count), less evaluation.
    wall_s = time.perf_counter() - clock.start - evaluating_s if clock.start is not None else 0.0
    summary = evaluator.summary()
    processed = summary["frames"]["processed"]
    summary["throughput_fps"] = processed / wall_s if wall_s > 0 and processed else None
    summary["run"] = {
        "bag": str(source.path),
        "mode": options.mode,
        "model": str(options.model),
        "backend": options.backend,
        "frames_in_bag": source.frame_count,
        "ground_truth": ", ".join(source.ground_truth) or "none",
        "steering_graph": str(steering_path) if steering_path.is_file() else "none",
        "rate": options.rate if options.mode == "node" else "as fast as possible",
        "wall_s": wall_s,
    }
    summary["error"] = None if error is None else str(error)
    summary["headline"] = headline(summary)
    metrics_path = options.out / METRICS_FILE
    metrics_path.write_text(json.dumps(_json_ready(summary), indent=2, allow_nan=False))
    report_path = write_report(options.out / REPORT_FILE, summary, evaluator.panels)
    outcome = ReplayOutcome(summary, metrics_path, report_path, bag_path if writer.frames else None)
    if error is not None:
        raise ReplayError(str(error), outcome) from error
    return outcome


class ReplayError(UserError):
    """The replay stopped early; ``outcome`` holds what was written before it did."""

    def __init__(self, message: str, outcome: ReplayOutcome) -> None:
        super().__init__(f"{message} (partial results written to {outcome.metrics_path.parent})")
        self.outcome = outcome


class _FirstFrameClock:
    """Notes when the first frame is taken from the bag (the start of the throughput window)."""

    def __init__(self) -> None:
        self.start: float | None = None

    def watch(self, frames: Iterator[ReplayFrame]) -> Iterator[ReplayFrame]:
        for frame in frames:
            if self.start is None:
                self.start = time.perf_counter()
            yield frame


def _limited(frames: Iterator[ReplayFrame], max_frames: int | None) -> Iterator[ReplayFrame]:
    for frame in frames:
        if max_frames is not None and frame.index >= max_frames:
            return
        yield frame


def _json_ready(value: Any) -> Any:
    """JSON has no NaN/inf: such metrics (a class never seen) become null; numpy scalars floats."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
