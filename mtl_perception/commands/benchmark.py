"""`mtl-perception benchmark`: fps and latency per backend and input size, multi-task vs single-task
models with the same backbone, and the OpenCV StereoSGBM baseline, on real generated frames; prints
and writes JSON.

This process only prepares (exports the models); every figure is measured in a process of its own
that loads just the backend it times (``runtime.benchmark.measure_isolated``), so a figure is what
a user's process running that one backend sees. Why: see ``mtl_perception.runtime.benchmark``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl_perception.errors import UserError

if TYPE_CHECKING:
    from mtl_perception.data.frames import StereoPair

log = logging.getLogger("mtl_perception.benchmark")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="trained stereo checkpoint (default: random weights)")
    parser.add_argument(
        "--model",
        type=Path,
        help="time this exported .onnx file (FP32 or INT8) at its own input size, instead of the "
        "--checkpoint / --sizes sweep",
    )
    parser.add_argument("--data", type=Path, help="synthetic dataset root for frames (default: procedural)")
    parser.add_argument("--sizes", nargs="+", default=["256x512"], help="model input sizes HxW")
    parser.add_argument(
        "--camera-sizes",
        nargs="+",
        default=["720x1280", "1080x1920"],
        help="with --model: also time the pipeline on frames of these sizes HxW (pre/post-processing "
        "cost of camera-sized images), besides the model's own size",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["onnxruntime", "torch"],
        choices=["onnxruntime", "torch", "tensorrt"],
    )
    parser.add_argument("--frames", type=int, default=50, help="timed frames per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every backend and OpenCV")
    parser.add_argument(
        "--cpu-spin-wait",
        action="store_true",
        help="ONNX Runtime threads busy-wait between runs (default off, as the node's cpu_spin_wait: "
        "spinning threads take the cores from pre/post-processing on a 2-core machine)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="write the figures here")


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise UserError(f"--sizes {text!r}: write sizes as HxW, e.g. 256x512") from exc
    return height, width


def run(args: argparse.Namespace) -> int:
    if args.model and args.checkpoint:
        raise UserError("give --model (an exported file) or --checkpoint, not both")
    sizes = [parse_size(s) for s in args.sizes]
    results: dict[str, Any] = {
        # Load average: other processes on the machine slow every figure below; record it.
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "cpu_spin_wait": args.cpu_spin_wait,
            "load_average_1min": os.getloadavg()[0],
        },
        "isolation": "each figure measured in a fresh process that loads only the backend it times",
        "frames": "dataset " + str(args.data) if args.data else "procedural",
        "weights": str(args.model or args.checkpoint or "random initialisation"),
    }
    if args.model:
        results["model"] = benchmark_model(args)
    else:
        results["sizes"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                results["sizes"][f"{size[0]}x{size[1]}"] = benchmark_size(args, size, Path(tmp))
    print(json.dumps(results, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def measurement(
    args: argparse.Namespace, what: str, label: str, size: tuple[int, int], **kw: Any
) -> dict[str, Any]:
    """One figure, measured in a fresh process with the command's threads, frames and data."""
    from mtl_perception.runtime.benchmark import Measurement, MeasurementError, measure_isolated

    spec = Measurement(
        what=what,
        label=label,
        size=size,
        threads=args.threads,
        frames=args.frames,
        warmup=args.warmup,
        data=str(args.data) if args.data else None,
        spin_wait=args.cpu_spin_wait,
        **kw,
    )
    try:
        return measure_isolated(spec)
    except MeasurementError as exc:
        raise UserError(str(exc)) from exc


def benchmark_model(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline speed of one exported file (e.g. FP32 vs INT8) with each requested backend.

    A backend that cannot open the file (torch needs the .pt beside it) is recorded as skipped.
    """
    from mtl_perception.runtime import read_model_info

    info = read_model_info(args.model)
    out: dict[str, Any] = {
        "precision": info.extra.get("precision", "fp32"),
        "input_size": list(info.input_size),
        "pipeline": {},
    }
    out["camera_sizes"] = {}
    camera_sizes = [parse_size(s) for s in args.camera_sizes]
    for kind in args.backends:
        label = f"{kind} {args.model.name}"
        result = measurement(args, "pipeline", label, info.input_size, model=str(args.model), backend=kind)
        out["pipeline"][kind] = result
        if "skipped" in result:
            log.warning("%s skipped: %s", kind, result["skipped"])
            continue
        for size in camera_sizes:
            key = f"{size[0]}x{size[1]}"
            label = f"{kind} {args.model.name} {key} frames"
            timed = measurement(args, "pipeline", label, size, model=str(args.model), backend=kind)
            out["camera_sizes"].setdefault(key, {})[kind] = timed
    return out


def benchmark_size(args: argparse.Namespace, size: tuple[int, int], tmp: Path) -> dict[str, Any]:
    """All measurements at one model input size."""
    import dataclasses

    import torch

    from mtl_perception.data.frames import stereo_frames
    from mtl_perception.export.onnx_export import export_deploy_model
    from mtl_perception.networks import (
        DeployModel,
        StereoNetConfig,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )

    torch.manual_seed(0)
    if args.checkpoint:
        model, config, _ = load_checkpoint(args.checkpoint)
        if config.mode != "stereo":
            raise UserError(f"{args.checkpoint} is a {config.mode} model; the benchmark times stereo models")
        # The networks are fully convolutional: the trained weights run at any valid input size.
        try:
            config = dataclasses.replace(config, input_size=size)
        except ValueError as exc:
            raise UserError(f"{args.checkpoint} at input size {list(size)}: {exc}") from exc
    else:
        config = StereoNetConfig(pretrained=False, input_size=size)
        model = build_model(config).eval()
    tag = f"{size[0]}x{size[1]}"
    onnx_path = tmp / f"multitask_{tag}.onnx"
    export_deploy_model(DeployModel(model), config, onnx_path, parity_frames=1)
    save_checkpoint(onnx_path.with_suffix(".pt"), model, config)
    single_task = export_single_task(
        dataclasses.replace(config, pretrained=False), onnx_path, stereo_frames(size, 1, args.data)
    )
    out: dict[str, Any] = {"pipeline": {}}
    for kind in args.backends:
        out["pipeline"][kind] = measurement(
            args, "pipeline", f"{kind} {tag}", size, model=str(onnx_path), backend=kind
        )
    out["multitask_vs_single_task"] = compare_single_task(args, size, {"multitask": onnx_path, **single_task})
    out["opencv_sgbm"] = measurement(args, "sgbm", "sgbm", size, max_disparity=float(config.max_disparity))
    return out


def export_single_task(config: Any, multitask_onnx: Path, pairs: list[StereoPair]) -> dict[str, Path]:
    """The same network built with ``tasks`` cut to one task, exported beside ``multitask_onnx``.

    Random weights: only their speed is compared.
    """
    import dataclasses

    from mtl_perception.data.frames import frame_feeds
    from mtl_perception.export.onnx_export import simplify_if_equivalent, write_onnx
    from mtl_perception.export.parity import ParityTolerance
    from mtl_perception.networks import DeployModel, build_model
    from mtl_perception.networks.deploy import describe_deploy_model

    paths = {}
    for label, tasks in (("segmentation_only", ("semantic",)), ("disparity_only", ("disparity",))):
        task_config = dataclasses.replace(config, tasks=tasks)
        deploy = DeployModel(build_model(task_config))
        info = dataclasses.replace(describe_deploy_model(deploy, task_config), extra={"baseline": label})
        path = write_onnx(deploy, info, multitask_onnx.with_name(f"{label}.onnx"))
        simplify_if_equivalent(path, info, frame_feeds(pairs, info), ParityTolerance())
        paths[label] = path
    return paths


def compare_single_task(
    args: argparse.Namespace, size: tuple[int, int], models: dict[str, Path]
) -> dict[str, Any]:
    """ONNX Runtime inference time: one multi-task model vs segmentation-only + disparity-only.

    Each model is timed alone in its own process (one session open, as in a deployment of it).
    """
    stats = {
        label: measurement(args, "infer", label, size, model=str(path)) for label, path in models.items()
    }
    pair_ms = stats["segmentation_only"]["mean_ms"] + stats["disparity_only"]["mean_ms"]
    return {
        **stats,
        "two_single_task_fps": round(1000.0 / pair_ms, 3),
        "multitask_speedup": round(pair_ms / stats["multitask"]["mean_ms"], 3),
    }
