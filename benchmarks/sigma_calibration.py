"""Post-hoc σ calibration (issue 12): one factor per model, fitted on the validation split, scored on test.

    python benchmarks/sigma_calibration.py --rows benchmarks/results/uncertainty_mono_small.json \\
        --labels "mono/single@[0-4]" "mono/ensemble@*" "mono/student@*" --max-frames 160 \\
        --json benchmarks/results/sigma_calibration_mono_small.json
    python benchmarks/sigma_calibration.py --model stereo=models/stereo_default.pt \\
        --model mono=models/mono_default.pt --json benchmarks/results/sigma_calibration_shipped.json

Every row of an uncertainty table (``benchmarks/uncertainty_table.py``: its label and checkpoints;
several checkpoints are a deep ensemble) is scored twice on ``--split``: with σ as predicted, and with
σ multiplied by the ``sigma_scale`` of ``--fit-split`` (the factor that minimises that split's NLL,
``metrics.RegressionUncertainty``; the regression analogue of temperature scaling). The test split
never sets the factor. Only the NLL and the ±1/±2σ coverage are rescored: AUSE, AUROC and the
out-of-distribution AUROC rank σ, and one positive factor does not change a ranking. Rows labelled
``KIND@REPEAT`` are summarised as mean ± std over the repeats, as in the uncertainty table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from uncertainty_table import group_repeats, load_row, parse_rows, spread, write_report

from mtl_perception.data.datasets import build_dataset
from mtl_perception.training.distill import GEOMETRY_KEYS
from mtl_perception.training.evaluation import evaluate_model

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("nll", "coverage_1sigma", "coverage_2sigma")


class ScaledSigma(nn.Module):
    """``model`` with every geometry σ multiplied by ``factor`` (its log scale shifted by log factor)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.shift = model, math.log(factor)
        self.config = model.config
        self.SEMANTIC_LOGITS_STRIDE = model.SEMANTIC_LOGITS_STRIDE
        self.embedding_dim = getattr(model, "embedding_dim", None)

    def forward(self, *inputs: Tensor, **options: Any) -> dict[str, Tensor]:
        outputs = dict(self.model(*inputs, **options))
        for key in GEOMETRY_KEYS:
            if f"{key}_log_scale" in outputs:
                outputs[f"{key}_log_scale"] = outputs[f"{key}_log_scale"] + self.shift
        return outputs


def score(model: nn.Module, root: Path, split: str, max_frames: int) -> dict[str, Any]:
    stereo = model.config.mode == "stereo"
    dataset = build_dataset("synthetic", root, split, eval_size=tuple(model.config.input_size))
    if max_frames > 0:
        dataset = Subset(dataset, range(min(max_frames, len(dataset))))
    return evaluate_model(model, stereo, DataLoader(dataset, batch_size=1), progress=False)


def calibrate_row(
    paths: list[str], root: Path, fit_split: str, split: str, max_frames: int
) -> dict[str, Any]:
    model = load_row(paths)
    geometry = "disparity" if model.config.mode == "stereo" else "depth"
    factor = score(model, root, fit_split, max_frames)[f"{geometry}_sigma_scale"]
    raw = score(model, root, split, max_frames)
    calibrated = score(ScaledSigma(model, factor), root, split, max_frames)
    return {
        "mode": model.config.mode,
        "checkpoints": paths,
        "sigma_scale": factor,
        f"{split}_sigma_scale": raw[f"{geometry}_sigma_scale"],
        "nominal": {k: raw[f"coverage_nominal_{k}"] for k in ("1sigma", "2sigma")},
        "raw": {f: raw[f"{geometry}_{f}"] for f in FIGURES},
        "calibrated": {f: calibrated[f"{geometry}_{f}"] for f in FIGURES},
    }


def summarise(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row kind: mean and std (ddof 1; 0 for one repeat) of the factor and every figure."""
    return {
        kind: {
            "repeats": len(repeats),
            "nominal": repeats[0]["nominal"],
            "sigma_scale": spread([r["sigma_scale"] for r in repeats]),
            **{
                f"{state}/{f}": spread([r[state][f] for r in repeats])
                for state in ("raw", "calibrated")
                for f in FIGURES
            },
        }
        for kind, repeats in group_repeats(rows).items()
    }


def format_table(summaries: dict[str, dict[str, Any]]) -> str:
    def cell(figure: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * figure['mean']:.{digits}f} ± {scale * figure['std']:.{digits}f}"

    lines = [
        "| row | repeats | factor (val) | NLL | NLL, scaled | cov 1σ | cov 1σ, scaled | cov 2σ | "
        "cov 2σ, scaled | nominal 1σ / 2σ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, s in summaries.items():
        nominal = f"{100 * s['nominal']['1sigma']:.1f} / {100 * s['nominal']['2sigma']:.1f}"
        lines.append(
            f"| {kind} | {s['repeats']} | {cell(s['sigma_scale'])} | {cell(s['raw/nll'])} "
            f"| {cell(s['calibrated/nll'])} | {cell(s['raw/coverage_1sigma'], 100, 1)} "
            f"| {cell(s['calibrated/coverage_1sigma'], 100, 1)} | {cell(s['raw/coverage_2sigma'], 100, 1)} "
            f"| {cell(s['calibrated/coverage_2sigma'], 100, 1)} | {nominal} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, help="an uncertainty_table.py JSON: its rows")
    parser.add_argument(
        "--model", action="append", default=[], metavar="LABEL=CKPT[,CKPT...]", help="a row of its own"
    )
    parser.add_argument(
        "--data", type=Path, help="dataset root (default: the rows' JSON's, else data/synthetic)"
    )
    parser.add_argument(
        "--labels", nargs="+", default=["*"], help="only the rows whose label matches one of these globs"
    )
    parser.add_argument("--fit-split", default="val", help="the split that sets each factor")
    parser.add_argument("--split", default="test", help="the split scored")
    parser.add_argument("--max-frames", type=int, default=0, help="0 = every frame of each split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = json.loads(args.rows.read_text()) if args.rows else {"rows": {}}
    for label, paths in parse_rows(args.model):
        table["rows"][label] = {"checkpoints": paths}
    if not table["rows"]:
        raise SystemExit("nothing to calibrate: give --rows and/or --model")
    root = args.data or Path(table.get("data", ROOT / "data" / "synthetic"))
    settings = {"rows": str(args.rows), "data": str(root), "fit_split": args.fit_split, "split": args.split}
    settings["max_frames"] = args.max_frames
    recorded = json.loads(args.json.read_text()) if args.json.is_file() else {}
    report: dict[str, Any] = {"host": platform.node(), **settings, "rows": {}}
    resume = all(recorded.get(k) == v for k, v in settings.items())
    for label, row in table["rows"].items():
        if not any(fnmatch.fnmatchcase(label, pattern) for pattern in args.labels):
            continue
        previous = recorded.get("rows", {}).get(label) if resume else None
        if previous is not None and previous["checkpoints"] == row["checkpoints"]:
            report["rows"][label] = previous
            continue
        report["rows"][label] = calibrate_row(
            row["checkpoints"], root, args.fit_split, args.split, args.max_frames
        )
        print(f"{label}: factor {report['rows'][label]['sigma_scale']:.3f}", flush=True)
        write_report(args.json, report)  # resumable per row
    report["kinds"] = summarise(report["rows"])
    report["table"] = format_table(report["kinds"])
    print(report["table"])
    write_report(args.json, report)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
