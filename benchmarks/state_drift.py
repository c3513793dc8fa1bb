"""How far a fine-tuned checkpoint moved from its start: BatchNorm running statistics vs weights.

Per float tensor of the state dict, the relative change |after - before| / |before|; printed as the
median and the largest few, for the running statistics and for everything else apart. Used to see
whether an adaptation changed what the network computes or mostly re-estimated its normalisation.

    python benchmarks/state_drift.py models/stereo_default.pt runs/adapt_unseen/adapted.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

RUNNING_STATS = ("running_mean", "running_var")


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def relative_changes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Name -> relative change, for the float tensors both hold (others, e.g. counters, left out)."""
    changes = {}
    for name, old in before.items():
        new = after.get(name)
        if new is None or not old.is_floating_point() or new.shape != old.shape:
            continue
        changes[name] = float((new - old).norm() / old.norm().clamp_min(1e-12))
    return changes


def summary(changes: dict[str, float], top: int = 3) -> dict[str, object]:
    ordered = sorted(changes.items(), key=lambda item: -item[1])
    return {
        "tensors": len(changes),
        "median": float(np.median(list(changes.values()))),
        "largest": ordered[:top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="the checkpoint fine-tuning started from")
    parser.add_argument("after", type=Path, help="the fine-tuned checkpoint")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    changes = relative_changes(state_dict(args.before), state_dict(args.after))
    stats = {name: v for name, v in changes.items() if name.endswith(RUNNING_STATS)}
    report = {
        "batchnorm_running_stats": summary(stats),
        "weights": summary({name: v for name, v in changes.items() if name not in stats}),
    }
    for part, figures in report.items():
        largest = ", ".join(f"{name} {value:.3f}" for name, value in figures["largest"])
        print(f"{part}: {figures['tensors']} tensors, median {figures['median']:.4f}; largest {largest}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"before": str(args.before), "after": str(args.after), **report}, indent=2)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
