"""`mtl-perception adapt BAG...`: fine-tune a stereo checkpoint on unlabelled stereo rosbags.

Self-supervised disparity (each view reconstructed from the other), confident pseudo-labels for
semantics and labelled batches mixed in (``training/adapt.py``). Writes adapted.pt, adapted.onnx and
a before/after report into --out; resumable with --resume, time-boxed with --max-minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_perception.commands import add_override_option, add_topic_options, topics_from
from mtl_perception.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `adapt`: the bags and topics as `replay` takes them, the run as `train` does."""
    parser.add_argument(
        "bags", type=Path, nargs="+", metavar="BAG", help="stereo rosbag2 directories or files"
    )
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="stereo checkpoint to start from, e.g. models/stereo_default.pt",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/adapt"), help="output directory (default runs/adapt)"
    )
    parser.add_argument(
        "--config", type=Path, help="adapt YAML (default: built-in defaults, as config/adapt/stereo.yaml)"
    )
    add_override_option(parser, "override a config value, e.g. --set run.steps=200 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest state in --out")
    parser.add_argument(
        "--max-minutes", type=float, help="stop cleanly (with a resumable state) after this wall-clock budget"
    )
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export of the adapted model")
    add_topic_options(parser)


def run(args: argparse.Namespace) -> int:
    from mtl_perception.replay.stereo_bags import bag_accuracy, open_stereo_bags
    from mtl_perception.training.adapt import (
        RETRAIN_WARNING,
        AdaptRequest,
        format_report,
        load_adapt_config,
        run_adaptation,
    )

    if not args.model.is_file():
        raise UserError(f"model not found: {args.model}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UserError(f"--max-minutes must be positive, got {args.max_minutes}")
    topics = topics_from(args)
    request = AdaptRequest(
        sources=open_stereo_bags(args.bags, topics),
        model=args.model,
        out=args.out,
        config=load_adapt_config(args.config, args.overrides),
        score_bag=bag_accuracy,
        resume=args.resume,
        max_minutes=args.max_minutes,
    )
    report = run_adaptation(request, export=not args.no_export)
    if report is None:
        print(f"stopped early; continue with: mtl-perception adapt ... --out {args.out} --resume")
        return 0
    print(format_report(report))
    print(f"WARNING: {RETRAIN_WARNING}")
    for name, path in report["outputs"].items():
        print(f"{name}: {path or 'not written (see the log)'}")
    print(f"report: {args.out / 'report.md'}")
    return 0
