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
    parser.add_argument("--data", help="dataset root, e.g. data/synthetic (not needed for --probes alone)")
    parser.add_argument(
        "--probes",
        action="store_true",
        help="also run the known-answer stereo probes (right view replaced, shifted texture, random-dot "
        "stereograms) that a disparity guessed from the left image cannot pass",
    )
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
        split_loader,
    )

    sources = [args.checkpoint, args.model, args.baseline]
    if sum(source is not None for source in sources) != 1:
        raise UserError("give exactly one of --checkpoint PATH, --model MODEL.onnx or --baseline sgbm")
    if args.data is None and not args.probes:
        raise UserError("give --data (a dataset root) to score a split, or --probes for the stereo probes")
    report: dict[str, object] = {"source": str(args.checkpoint or args.model or "sgbm")}
    if args.probes:
        probes = stereo_probes(args)
        print(probes.summary())
        report["probes"] = probes.as_dict()
    if args.data is None:
        _write(args.json, report)
        return 0
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
    report |= {"data": args.data, "split": args.split, "metrics": metrics}
    _write(args.json, report)
    return 0


def _write(path: Path | None, report: dict[str, object]) -> None:
    if path is None:
        return
    from mtl_perception.training.evaluation import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=2))
    print(f"wrote {path}")


def stereo_probes(args: argparse.Namespace):
    """The probes on the chosen source, at the model's input size (SGBM: --size, --max-disparity)."""
    from mtl_perception.data.frames import procedural_frames
    from mtl_perception.probes import run_probes

    if args.baseline == "sgbm":
        from mtl_perception.baselines.sgbm import sgbm_disparity, sgbm_matcher

        size, max_disparity = tuple(args.size), args.max_disparity
        matcher = sgbm_matcher(max_disparity)
        return run_probes(
            lambda left, right: sgbm_disparity(matcher, left, right),
            size,
            max_disparity,
            procedural_frames(size, 1, seed=1)[0],
        )
    from mtl_perception.runtime import Pipeline, create_backend

    path, kind = (args.model, args.backend) if args.model is not None else (args.checkpoint, "torch")
    backend = create_backend(kind, path, threads=args.threads)
    try:
        if not backend.info.is_stereo:
            raise UserError(f"{path} is a {backend.info.mode} model: the stereo probes need a stereo model")
        pipeline = Pipeline(backend)  # maps at the probe images' size, which is the model's
        size = backend.info.input_size
        return run_probes(
            lambda left, right: pipeline.process(left, right).disparity,
            size,
            backend.info.max_disparity,
            procedural_frames(size, 1, seed=1)[0],
        )
    finally:
        backend.close()
