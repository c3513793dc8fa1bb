"""Issue 14, experiment 2: a stereo model before and after `mtl-perception adapt`, side by side.

Scores both exported models on the target domain's test split (whose ground truth `adapt` never
saw: it adapts on the domain's *train* bags without their labels) and on the original test split
(what adaptation must not forget), and runs the known-answer stereo probes on both, so an adapted
model that stopped matching cannot hide behind a domain score. Prints a markdown table, checks the
issue's targets and writes everything to --json.

    python benchmarks/adapt_table.py --before models/stereo_default.onnx \
        --after runs/adapt_unseen/adapted.onnx --target data/unseen --original data/synthetic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = ("d1_all", "epe", "miou", "abs_rel")


def score(model: str, root: str, split: str, threads: int) -> dict[str, float]:
    from mtl_perception.training.evaluation import evaluate_exported, flat_scalars

    metrics = flat_scalars(evaluate_exported(model, root, split, backend="onnxruntime", threads=threads))
    return {key: metrics[key] for key in COLUMNS if key in metrics}


def probes(model: str, threads: int) -> dict[str, Any]:
    from mtl_perception.commands.evaluate import stereo_probes

    args = argparse.Namespace(model=model, backend="onnxruntime", threads=threads, baseline=None)
    return stereo_probes(args).as_dict()


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The issue's targets: D1-all halved on the target domain, <= 2 points of mIoU lost at home."""
    before, after = rows["before"], rows["after"]
    return {
        "target_d1_halved": after["target"]["d1_all"] <= 0.5 * before["target"]["d1_all"],
        "original_miou_within_2_points": after["original"]["miou"] >= before["original"]["miou"] - 0.02,
    }


def table(rows: dict[str, dict[str, Any]], target: str, original: str) -> str:
    head = [f"{target} {key}" for key in COLUMNS] + [f"{original} {key}" for key in COLUMNS] + ["probes"]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in rows.items():
        cells = [_cell(row[part].get(k)) for part in ("target", "original") for k in COLUMNS]
        cells.append(_probes_cell(row["probes"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _probes_cell(probes: dict[str, Any]) -> str:
    return "; ".join(probes["failures"]) or "pass"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="the exported model adapt started from")
    parser.add_argument("--after", help="adapt's exported model (adapted.onnx)")
    parser.add_argument("--target", default="data/unseen", help="target-domain dataset root")
    parser.add_argument("--original", default="data/synthetic", help="the original training data's root")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/adapt_unseen.json"))
    parser.add_argument("--print", action="store_true", help="only print the table of an existing --json")
    args = parser.parse_args()
    if args.print:
        report = json.loads(args.json.read_text())
        print(table(report["rows"], Path(report["target"]).name, Path(report["original"]).name))
        return
    if args.before is None or args.after is None:
        parser.error("give --before and --after (or --print to show an existing --json)")

    rows: dict[str, dict[str, Any]] = {}
    for name, model in (("before", args.before), ("after", args.after)):
        rows[name] = {
            "model": model,
            "target": score(model, args.target, args.split, args.threads),
            "original": score(model, args.original, args.split, args.threads),
            "probes": probes(model, args.threads),
        }
    verdict = targets(rows)
    print(table(rows, Path(args.target).name, Path(args.original).name))
    for key, ok in verdict.items():
        print(f"{key}: {'met' if ok else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"split": args.split, "target": args.target, "original": args.original, "rows": rows, **verdict}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
