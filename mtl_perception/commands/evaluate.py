"""`mtl-perception evaluate`: all metrics of a checkpoint, an ONNX model or the SGBM baseline on a split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtl_perception.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="a training checkpoint (best.pt / final.pt)")
    parser.add_argument("--model", help="an exported model (.onnx, FP32 or INT8) run by a runtime backend")
    parser.add_argument(
        "--backend",
        default="onnxruntime",
        choices=["auto", "onnxruntime", "tensorrt", "torch"],
        help="--model: runtime backend (default onnxruntime: the same numerics on every machine; "
        "torch runs the .pt checkpoint beside the .onnx file)",
    )
    parser.add_argument("--threads", type=int, default=None, help="--model: CPU threads for the backend")
    parser.add_argument("--baseline", choices=["sgbm"], help="evaluate OpenCV StereoSGBM instead of a model")
    parser.add_argument("--data", required=True, help="dataset root, e.g. data/synthetic")
    parser.add_argument(
        "--kind",
        default=None,
        help="dataset layout (synthetic|cityscapes|kitti2015); default: the checkpoint's, else synthetic",
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", type=Path, default=None, help="write all metrics (and curves) here")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=None, help="evaluate only the first N batches")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[256, 512],
        metavar=("H", "W"),
        help="SGBM baseline: image size to evaluate at (a model uses its own input size)",
    )
    parser.add_argument("--max-disparity", type=float, default=96.0, help="SGBM baseline: disparity range")


def run(args: argparse.Namespace) -> int:
    from mtl_perception.training.evaluation import (
        evaluate_checkpoint,
        evaluate_exported,
        evaluate_sgbm,
        format_metrics,
        json_safe,
        split_loader,
    )

    sources = [args.checkpoint, args.model, args.baseline]
    if sum(source is not None for source in sources) != 1:
        raise UserError("give exactly one of --checkpoint PATH, --model MODEL.onnx or --baseline sgbm")
    if args.checkpoint is not None:
        metrics = evaluate_checkpoint(
            args.checkpoint, args.data, args.split, args.kind, args.batch_size, args.max_batches
        )
        source = str(args.checkpoint)
    elif args.model is not None:
        metrics = evaluate_exported(
            args.model,
            args.data,
            args.split,
            args.kind,
            args.backend,
            args.threads,
            args.batch_size,
            args.max_batches,
        )
        source = str(args.model)
    else:
        loader = split_loader(
            args.kind or "synthetic", args.data, args.split, tuple(args.size), args.batch_size
        )
        metrics = evaluate_sgbm(loader, args.max_disparity, args.max_batches)
        source = "sgbm"
    print(f"{source} on {args.data} [{args.split}]")
    print(format_metrics(metrics))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"source": source, "data": args.data, "split": args.split, "metrics": metrics}
        args.json.write_text(json.dumps(json_safe(report), indent=2))
        print(f"wrote {args.json}")
    return 0
