"""Sky phantoms and far pixels: does a stereo model put finite, near depth in the sky?

    python benchmarks/sky_phantoms.py --model models/stereo_default.onnx --data data/synthetic \
        --split test --json benchmarks/results/sky_phantoms_stereo_default.json

Each frame of a synthetic split goes through the runtime ``Pipeline`` with its own calibration
(fx, baseline), so the output policy of ``mtl_perception.contract`` decides what is published
(REP-118: +Inf = too far, NaN = unknown). Sky is found from the semantic ground truth (class
``sky``), not from any disparity validity label. Pixels are pooled over the split.

* (a) sky phantoms: the share of ground-truth sky pixels whose published depth is finite and below
  ``--near`` meters (30 by default), with the median published depth over them; the same on the raw
  network disparity (before the policy, at the model's resolution): sky pixels whose raw disparity
  d gives fx * B / d < near with fx scaled to the model's width.
* (b) far pixels off the sky: the share of labelled non-sky pixels published as +Inf depth
  (should stay at or below 0.1 %).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.contract import OutputPolicy
from mtl_perception.data.augment import resize_stereo
from mtl_perception.data.base import StereoDataset
from mtl_perception.data.datasets import build_dataset
from mtl_perception.data.labels import CLASS_ID, IGNORE_INDEX
from mtl_perception.data.sample import StereoArrays
from mtl_perception.runtime import Backend, CameraModel, Pipeline, create_backend

ROOT = Path(__file__).resolve().parent.parent
SKY = CLASS_ID["sky"]
NEAR_M = 30.0
NON_SKY_INF_LIMIT = 0.001  # (b) should stay at or below 0.1 %


class RecordingBackend:
    """Passes inference through and keeps a copy of the raw ``disparity`` output (model size)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.info = backend.info
        self.name = backend.name
        self.last_disparity: np.ndarray | None = None

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.backend.infer(inputs)
        self.last_disparity = np.array(outputs["disparity"][0], np.float32)  # backends reuse buffers
        return outputs

    def close(self) -> None:
        self.backend.close()


@dataclass
class SkyTally:
    """Pixel counts pooled over frames, and the depths of the phantom pixels for their medians."""

    near: float = NEAR_M
    frames: int = 0
    frames_with_sky: int = 0
    sky: int = 0
    sky_published_near: int = 0
    sky_published_far_finite: int = 0  # finite depth at or beyond ``near``
    sky_published_inf: int = 0
    sky_published_nan: int = 0
    sky_raw_near: int = 0
    frames_with_published_phantoms: int = 0
    non_sky: int = 0
    non_sky_inf: int = 0
    published_near_depths: list[np.ndarray] = field(default_factory=list)
    raw_near_depths: list[np.ndarray] = field(default_factory=list)

    def add(self, semantic: np.ndarray, depth: np.ndarray, raw_depth: np.ndarray) -> None:
        """One frame: ground-truth classes, published depth and raw-disparity depth (same size)."""
        sky = semantic == SKY
        non_sky = (semantic != SKY) & (semantic != IGNORE_INDEX)
        finite = np.isfinite(depth)
        near = finite & (depth < self.near) & sky
        raw_near = np.isfinite(raw_depth) & (raw_depth > 0) & (raw_depth < self.near) & sky
        self.frames += 1
        self.frames_with_sky += bool(sky.any())
        self.sky += int(sky.sum())
        self.sky_published_near += int(near.sum())
        self.sky_published_far_finite += int((finite & (depth >= self.near) & sky).sum())
        self.sky_published_inf += int((np.isposinf(depth) & sky).sum())
        self.sky_published_nan += int((np.isnan(depth) & sky).sum())
        self.sky_raw_near += int(raw_near.sum())
        self.frames_with_published_phantoms += bool(near.any())
        self.non_sky += int(non_sky.sum())
        self.non_sky_inf += int((np.isposinf(depth) & non_sky).sum())
        self.published_near_depths.append(depth[near])
        self.raw_near_depths.append(raw_depth[raw_near])

    def summary(self) -> dict[str, Any]:
        def share(count: int, total: int) -> float | None:
            return count / total if total else None

        def median(parts: list[np.ndarray]) -> float | None:
            values = np.concatenate(parts) if parts else np.empty(0)
            return float(np.median(values)) if values.size else None

        non_sky_inf_share = share(self.non_sky_inf, self.non_sky)
        return {
            "frames": self.frames,
            "frames_with_sky": self.frames_with_sky,
            "near_m": self.near,
            "sky_pixels": self.sky,
            "a_published": {
                "share_finite_below_near": share(self.sky_published_near, self.sky),
                "median_depth_m_there": median(self.published_near_depths),
                "share_finite_at_or_beyond_near": share(self.sky_published_far_finite, self.sky),
                "share_inf": share(self.sky_published_inf, self.sky),
                "share_nan": share(self.sky_published_nan, self.sky),
                "frames_with_phantoms": self.frames_with_published_phantoms,
            },
            "a_raw_network": {
                "share_below_near": share(self.sky_raw_near, self.sky),
                "median_depth_m_there": median(self.raw_near_depths),
            },
            "b_non_sky": {
                "pixels": self.non_sky,
                "share_published_inf": non_sky_inf_share,
                "limit": NON_SKY_INF_LIMIT,
                "within_limit": None if non_sky_inf_share is None else non_sky_inf_share <= NON_SKY_INF_LIMIT,
            },
        }


def raw_depth_at_output(raw_disparity: np.ndarray, fx_model: float, baseline: float) -> np.ndarray:
    """fx * B / d of the raw model-size disparity (NaN where d <= 0 or not finite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(fx_model * baseline) / raw_disparity
    depth[~(raw_disparity > 0)] = np.nan
    return depth


def measure(
    pipeline: Pipeline, recorder: RecordingBackend, frames: Iterable[StereoArrays], near: float
) -> SkyTally:
    """Run every frame through the pipeline (output at the model's size) and tally (a) and (b)."""
    if pipeline.output_resolution != "model" or pipeline.backend is not recorder:
        raise ValueError("the pipeline must run the recording backend with output_resolution='model'")
    model_w = pipeline.info.input_size[1]
    tally = SkyTally(near=near)
    for arrays in frames:
        result = pipeline.process(arrays.left, arrays.right, camera=CameraModel(arrays.fx, arrays.baseline))
        assert result.depth is not None and recorder.last_disparity is not None
        semantic = arrays.semantic
        if semantic.shape != result.depth.shape:
            raise ValueError(
                f"frames must come at the model's size {result.depth.shape}, got {semantic.shape}"
            )
        fx_model = arrays.fx * model_w / arrays.size[1]
        tally.add(
            semantic, result.depth, raw_depth_at_output(recorder.last_disparity, fx_model, arrays.baseline)
        )
    return tally


def model_size_frames(dataset: StereoDataset, count: int) -> Iterator[StereoArrays]:
    """The first ``count`` frames as numpy arrays at the dataset's ``eval_size`` (resized the way the
    dataset's validation samples are: images as the runtime does, labels nearest, fx scaled)."""
    for index in range(count):
        arrays = dataset.load_arrays(index)
        if dataset.eval_size is not None and arrays.size != tuple(dataset.eval_size):
            arrays = resize_stereo(arrays, dataset.eval_size)
        yield arrays


def dataset_root(requested: Path) -> Path:
    """The requested synthetic root, or data/synthetic_v1 beside it when the requested one is gone."""
    if (requested / "manifest.json").is_file():
        return requested
    fallback = requested.parent / "synthetic_v1"
    if (fallback / "manifest.json").is_file():
        print(f"{requested}: no manifest (missing or being regenerated); using {fallback}")
        return fallback
    raise SystemExit(f"{requested}: no synthetic dataset there (and no {fallback})")


def print_table(name: str, summary: dict[str, Any]) -> None:
    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:6.2f} %"

    def meters(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} m"

    a, raw, b = summary["a_published"], summary["a_raw_network"], summary["b_non_sky"]
    near = summary["near_m"]
    print(f"{name}: {summary['frames']} frames, {summary['sky_pixels']} ground-truth sky pixels")
    print(
        f"  (a) sky, published depth finite < {near:g} m  {pct(a['share_finite_below_near'])}"
        f"  median {meters(a['median_depth_m_there'])}  ({a['frames_with_phantoms']} frames)"
    )
    print(f"      sky, published finite >= {near:g} m      {pct(a['share_finite_at_or_beyond_near'])}")
    print(f"      sky, published +Inf                {pct(a['share_inf'])}")
    print(f"      sky, published NaN                 {pct(a['share_nan'])}")
    print(
        f"      sky, raw network depth < {near:g} m     {pct(raw['share_below_near'])}"
        f"  median {meters(raw['median_depth_m_there'])}"
    )
    print(
        f"  (b) non-sky published +Inf             {pct(b['share_published_inf'])}"
        f"  (limit {100 * b['limit']:.1f} %: {'ok' if b['within_limit'] else 'EXCEEDED'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "stereo_default.onnx")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--near", type=float, default=NEAR_M, help="meters: a finite depth below is a phantom"
    )
    parser.add_argument("--min-disparity", type=float, default=0.0, help="the node's min_disparity")
    parser.add_argument("--max-frames", type=int, default=0, help="0 = every frame of the split")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    root = dataset_root(args.data)
    recorder = RecordingBackend(create_backend(args.backend, args.model, threads=args.threads))
    if not recorder.info.is_stereo:
        raise SystemExit(f"{args.model}: a {recorder.info.mode} model; this measures stereo disparity")
    dataset = build_dataset("synthetic", root, args.split, eval_size=recorder.info.input_size)
    count = len(dataset) if args.max_frames <= 0 else min(args.max_frames, len(dataset))
    policy = OutputPolicy(min_disparity=args.min_disparity)
    pipeline = Pipeline(recorder, output_resolution="model", policy=policy)
    try:
        tally = measure(pipeline, recorder, model_size_frames(dataset, count), args.near)
    finally:
        recorder.close()
    summary = {
        "model": str(args.model),
        "backend": recorder.name,
        "data": str(root),
        "split": args.split,
        "policy": {
            "min_disparity": policy.min_disparity,
            "confidence_threshold": policy.confidence_threshold,
        },
        "host": platform.node(),
        "sky_from": "semantic ground truth, class sky",
        **tally.summary(),
    }
    print_table(args.model.stem, summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
