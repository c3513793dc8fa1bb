"""`mtl-perception info`: what a checkpoint holds (config, training meta) and what it costs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="mtl_perception checkpoint (.pt)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from mtl_perception.config import to_dict
    from mtl_perception.networks import load_checkpoint
    from mtl_perception.networks.cost import model_cost

    model, config, meta = load_checkpoint(args.checkpoint)
    cost = model_cost(model)
    report = {"checkpoint": str(args.checkpoint), **cost.as_dict(), "config": to_dict(config), "meta": meta}
    height, width = cost.input_size
    print(f"{args.checkpoint}: {config.mode} model, input {height}x{width}")
    print(f"  parameters {cost.parameters / 1e6:.3f} M, {cost.flops / 1e9:.3f} GFLOPs per frame (batch 1)")
    for key, value in meta.items():
        print(f"  {key}: {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
