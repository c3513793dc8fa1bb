"""Stereo bags for training-side tools (`mtl-perception adapt`): opened with replay's reader, and
scored as `replay` scores them. They live here because training sits below replay in the layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from mtl_perception.errors import UserError
from mtl_perception.replay.bag_source import BagSource, ReplayTopics

LABELLED_METRICS = ("d1_all", "epe", "miou", "abs_rel")


def open_stereo_bags(bags: Sequence[Path], topics: ReplayTopics | None = None) -> list[BagSource]:
    """A checked stereo ``BagSource`` per bag (replay's topic options and errors)."""
    if not bags:
        raise UserError("give at least one stereo rosbag to adapt on")
    return [BagSource(bag, topics or ReplayTopics(), stereo=True) for bag in bags]


def bag_accuracy(source: BagSource, model: Path, max_frames: int | None) -> dict[str, float]:
    """Labelled metrics (D1, EPE, mIoU, AbsRel) of a stereo checkpoint on the bag's first ``max_frames``
    frames, scored as `replay` scores them: its runtime pipeline (torch backend, maps at the input
    resolution, depth from the camera_info) and its evaluator."""
    from mtl_perception.replay.evaluation import ReplayEvaluator
    from mtl_perception.replay.session import ReplayOptions, pipeline_results

    options = ReplayOptions(bag=source.path, out=Path(), model=model, backend="torch", topics=source.topics)
    evaluator = ReplayEvaluator(stereo=True, frame_count=source.frame_count, panel_count=0)
    for frame, prediction, latency_ms in pipeline_results(islice(source.frames(), max_frames), options):
        evaluator.add(frame, prediction, latency_ms)
    accuracy = evaluator.summary().get("accuracy", {})
    return {
        key: float(accuracy[key])
        for key in LABELLED_METRICS
        if key in accuracy and math.isfinite(accuracy[key])
    }
