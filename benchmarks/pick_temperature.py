"""Fit the temperature of a picking stereo model's uncertainty on the validation split.

A stereo network with hypothesis selection (``networks/selection.py``) widens its disparity scale by
how far the pick's softmax lies from the picked value (``pick_log_scale``). The choice loss spreads
that softmax over near-right hypotheses, so at temperature 1 the intervals are too wide. This
evaluates the checkpoint at each ``--temperatures`` value on the synthetic validation split (never
the test split or real pairs), prints the disparity coverage, NLL and AUSE, picks the temperature
whose ±2σ coverage is nearest the nominal value of the model's distribution (Laplace 94.1 %,
Gaussian 95.4 %), and with ``--output`` writes the checkpoint with it set
(``model.selection_temperature``). Only the uncertainty changes: disparity, picks and segmentation
are the same at every temperature.

    python benchmarks/pick_temperature.py runs/stereo_stage5/final.pt --output models/stereo_default.pt \
        --json benchmarks/results/pick_temperature.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from mtl_perception.metrics import nominal_coverage
from mtl_perception.networks import load_checkpoint, save_checkpoint
from mtl_perception.training.evaluation import evaluate_model, split_loader

REPORTED = (
    "d1_all",
    "disparity_coverage_1sigma",
    "disparity_coverage_2sigma",
    "disparity_nll",
    "disparity_ause",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a stereo checkpoint with hypothesis selection")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--split", default="val")
    parser.add_argument("--frames", type=int, default=60, help="validation frames used (in split order)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--output", type=Path, default=None, help="write the checkpoint with the fitted temperature"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, config, meta = load_checkpoint(args.checkpoint)
    if not getattr(config, "hypothesis_selection", False):
        parser.error(f"{args.checkpoint} has no hypothesis selection: nothing to fit")
    nominal = nominal_coverage(2.0, config.uncertainty_distribution)
    rows = {}
    for temperature in args.temperatures:
        model.config = dataclasses.replace(config, selection_temperature=temperature)
        loader = split_loader("synthetic", args.data, args.split, tuple(config.input_size))
        metrics = evaluate_model(model, True, loader, max_batches=args.frames)
        rows[temperature] = {key: float(metrics[key]) for key in REPORTED}
        print(
            f"T = {temperature:g}: "
            + ", ".join(f"{key} {value:.4f}" for key, value in rows[temperature].items())
        )
    best = min(rows, key=lambda t: abs(rows[t]["disparity_coverage_2sigma"] - nominal))
    print(
        f"fitted temperature {best:g}: ±2σ coverage "
        f"{rows[best]['disparity_coverage_2sigma']:.1%} (nominal {nominal:.1%})"
    )
    if args.output is not None:
        fitted = dataclasses.replace(config, selection_temperature=best)
        meta = {**meta, "selection_temperature_fit": {"split": args.split, "frames": args.frames}}
        save_checkpoint(args.output, model, fitted, **meta)
        print(f"wrote {args.output}")
    if args.json is not None:
        report = {
            "checkpoint": str(args.checkpoint),
            "split": args.split,
            "frames": args.frames,
            "nominal_coverage_2sigma": nominal,
            "by_temperature": {str(t): row for t, row in rows.items()},
            "fitted_temperature": best,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
