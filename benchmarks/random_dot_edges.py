"""Where a stereo model fails the random-dot probe: D1 by distance to the nearest disparity edge.

The probe's random-dot stereograms (``mtl_perception.probes.random_dot_stereogram``, the same
generator and size) have no monocular cue, so the outline of each layer is visible to matching
only. Errors in a wide band around the outlines mean the network smears disparity across edges it
cannot see in the left image; errors far from them mean it does not match at all. Per seed and
pooled: D1 (KITTI: > 3 px and > 5 %) on the visible pixels, split by their distance (px) to the
nearest jump of the true disparity.

    python benchmarks/random_dot_edges.py --model models/stereo_default.onnx --seeds 6 \
        --json benchmarks/results/random_dot_edges_stereo_default.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.probes import random_dot_stereogram
from mtl_perception.runtime import Pipeline, create_backend

# Distance bands in input pixels: the 1/4-res cost volume's cell is 4 px, the 1/8 aggregation's 8.
BANDS = ((0, 4), (4, 8), (8, 16), (16, None))


def distance_to_edges(truth: np.ndarray) -> np.ndarray:
    """Per pixel, the distance (px) to the nearest pixel whose right or lower neighbour has
    another disparity."""
    jumps = np.zeros(truth.shape, bool)
    jumps[:, :-1] |= truth[:, :-1] != truth[:, 1:]
    jumps[:-1, :] |= truth[:-1, :] != truth[1:, :]
    return cv2.distanceTransform((~jumps).astype(np.uint8), cv2.DIST_L2, 5)


def band_name(low: int, high: int | None) -> str:
    return f"{low}-{high} px" if high is not None else f">= {low} px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/stereo_default.onnx"))
    parser.add_argument("--seeds", type=int, default=6, help="how many stereograms (the probe uses one)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first..first+N-1; choose models on seeds away from 0..5, which are reported",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    backend = create_backend("onnxruntime", str(args.model), threads=args.threads)
    try:
        pipeline = Pipeline(backend)
        size, max_disparity = backend.info.input_size, backend.info.max_disparity
        wrong_by_band = {band_name(*band): [0, 0] for band in BANDS}
        per_seed = []
        for seed in seeds:
            left, right, truth, visible = random_dot_stereogram(
                size, max_disparity, np.random.default_rng(seed)
            )
            prediction = np.nan_to_num(pipeline.process(left, right).disparity, nan=-1e6)
            error = np.abs(prediction - truth)
            wrong = (error > 3) & (error > 0.05 * truth) & visible
            distance = distance_to_edges(truth)
            per_seed.append(float(wrong.sum() / visible.sum()))
            for low, high in BANDS:
                band = visible & (distance >= low) & (distance < (high if high is not None else np.inf))
                counts = wrong_by_band[band_name(low, high)]
                counts[0] += int(wrong[band].sum())
                counts[1] += int(band.sum())
    finally:
        backend.close()

    total_visible = sum(count for _, count in wrong_by_band.values())
    bands = {
        name: {"d1": wrong / max(count, 1), "share_of_pixels": count / total_visible}
        for name, (wrong, count) in wrong_by_band.items()
    }
    report = {
        "model": str(args.model),
        "seeds": list(seeds),
        "d1_per_seed": per_seed,
        "d1_mean": float(np.mean(per_seed)),
        "by_distance_to_edge": bands,
    }
    print(
        f"{args.model}: random-dot D1 {report['d1_mean']:.1%} (seeds {seeds[0]}..{seeds[-1]}: "
        + ", ".join(f"{d:.1%}" for d in per_seed)
        + ")"
    )
    for name, figures in bands.items():
        print(
            f"  {name:>9} from an edge: D1 {figures['d1']:6.1%}"
            f" on {figures['share_of_pixels']:5.1%} of the pixels"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
