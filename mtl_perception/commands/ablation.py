"""`mtl-perception ablation`: train the three cross-task link variants alike, compare on the test split.

Variants (StereoNetConfig switches): ``no_links`` (independent heads on the shared encoder),
``seg_to_disp`` (coarse-seg features feed the disparity aggregation), ``both`` (plus the attention
refinement of segmentation from disparity features). Each variant trains in
``<output_dir>/<variant>`` and always resumes, so the command can be run in time-boxed chunks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from mtl_perception.commands import add_override_option

VARIANTS: dict[str, dict[str, bool]] = {
    "no_links": {"link_seg_to_disparity": False, "link_attention": False},
    "seg_to_disp": {"link_seg_to_disparity": True, "link_attention": False},
    "both": {"link_seg_to_disparity": True, "link_attention": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config/train/ablation.yaml", help="base training YAML (stereo)")
    add_override_option(parser, "override a base config value for every variant (repeatable)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="total training budget of this call; run again to continue unfinished variants",
    )
    parser.add_argument("--json", type=Path, default=None, help="default: <output_dir>/ablation.json")
    parser.add_argument(
        "--max-batches", type=int, default=None, help="evaluate only the first N test batches"
    )


def run(args: argparse.Namespace) -> int:
    from mtl_perception.errors import UserError
    from mtl_perception.training.config import load_train_config
    from mtl_perception.training.evaluation import evaluate_checkpoint, format_comparison, json_safe
    from mtl_perception.training.trainer import BEST_NAME, FINAL_NAME, run_training

    base = load_train_config(args.config, args.overrides)
    if base.model.get("mode", "stereo") != "stereo":
        raise UserError(f"{args.config}: the link ablation needs a stereo model (model.mode: stereo)")
    root = Path(base.train.output_dir)
    start = time.monotonic()
    unfinished = []
    for name, switches in VARIANTS.items():
        output_dir = root / name
        if (output_dir / FINAL_NAME).is_file():
            continue
        left = None if args.max_minutes is None else args.max_minutes - (time.monotonic() - start) / 60.0
        if left is not None and left <= 0:
            unfinished.append(name)
            continue
        config = dataclasses.replace(
            base,
            model=base.model | switches,
            train=dataclasses.replace(base.train, output_dir=str(output_dir)),
        )
        print(f"== {name}: {switches}")
        run_training(config, resume=True, max_minutes=left)
        if not (output_dir / FINAL_NAME).is_file():
            unfinished.append(name)
    if unfinished:
        print(f"budget spent; unfinished: {', '.join(unfinished)}. Run the same command again to continue.")
        return 0

    results = {}
    for name in VARIANTS:
        checkpoint = root / name / BEST_NAME
        checkpoint = checkpoint if checkpoint.is_file() else root / name / FINAL_NAME
        results[name] = evaluate_checkpoint(
            checkpoint, base.data.root, base.data.test_split, base.data.kind, max_batches=args.max_batches
        )
    print(format_comparison(results))
    out = args.json or root / "ablation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            json_safe({"variants": VARIANTS, "split": base.data.test_split, "results": results}), indent=2
        )
    )
    print(f"wrote {out}")
    return 0
