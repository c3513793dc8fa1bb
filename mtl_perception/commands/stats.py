"""`mtl-perception stats`: pixel share and frame presence of every class per split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TRAIN_SPLITS = {"synthetic": "train", "cityscapes": "train", "kitti2015": "training"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset root folder")
    parser.add_argument(
        "--format",
        choices=sorted(TRAIN_SPLITS),
        default="synthetic",
        help="dataset layout (default: synthetic)",
    )
    parser.add_argument("--split", action="append", help="split to count (repeatable; default: all)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the statistics to this JSON file"
    )
    parser.add_argument(
        "--require-all",
        action="store_true",
        help="fail when a class of the table never appears in the train split",
    )


def run(args: argparse.Namespace) -> int:
    from mtl_perception.data.labels import class_table
    from mtl_perception.data.stats import dataset_statistics, format_table
    from mtl_perception.errors import UserError

    train_split = TRAIN_SPLITS[args.format]
    splits = args.split
    if args.require_all and splits and train_split not in splits:
        splits = [*splits, train_split]
    stats = dataset_statistics(args.format, args.root, splits)
    print(format_table(stats))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "root": str(args.root),
            "format": args.format,
            "classes": class_table(),
            "percent_of": {"pixel_share": "labelled pixels", "frame_presence": "labelled frames"},
            "splits": {s.split: s.to_dict() for s in stats},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.require_all:
        train = next((s for s in stats if s.split == train_split), None)
        if train is None:
            raise UserError(f"{args.root}: no {train_split!r} split to check with --require-all")
        missing = train.missing_classes()
        if missing:
            print(
                f"error: classes never present in the {train_split} split: {', '.join(missing)}",
                file=sys.stderr,
            )
            return 1
    return 0
