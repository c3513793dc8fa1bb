"""`mtl-perception benchmark`: fps and latency per backend and input size, multi-task vs single-task
models with the same backbone, and OpenCV StereoSGBM, on real generated frames; prints and writes JSON.
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
    from mtl_perception.export.frames import StereoPair

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
        "--backends",
        nargs="+",
        default=["onnxruntime", "torch"],
        choices=["onnxruntime", "torch", "tensorrt"],
    )
    parser.add_argument("--frames", type=int, default=50, help="timed frames per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every backend and OpenCV")
    parser.add_argument("--output", type=Path, default=Path("benchmark.json"), help="JSON results file")


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise UserError(f"--sizes {text!r}: write sizes as HxW, e.g. 256x512") from exc
    return height, width


def run(args: argparse.Namespace) -> int:
    import cv2
    import torch

    if args.model and args.checkpoint:
        raise UserError("give --model (an exported file) or --checkpoint, not both")
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = [parse_size(s) for s in args.sizes]
    results: dict[str, Any] = {
        # Load average: other processes on the machine slow every figure below; record it.
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "load_average_1min": os.getloadavg()[0],
        },
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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def benchmark_model(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline speed of one exported file (e.g. FP32 vs INT8) with each requested backend.

    A backend that cannot open the file (torch needs the .pt beside it) is recorded as skipped.
    """
    from mtl_perception.export.frames import stereo_frames
    from mtl_perception.runtime import BackendUnavailableError, Pipeline, create_backend, read_model_info
    from mtl_perception.runtime.benchmark import time_pipeline

    info = read_model_info(args.model)
    pairs = stereo_frames(info.input_size, 8, args.data)
    out: dict[str, Any] = {
        "precision": info.extra.get("precision", "fp32"),
        "input_size": list(info.input_size),
        "pipeline": {},
    }
    for kind in args.backends:
        try:
            backend = create_backend(kind, args.model, threads=args.threads)
        except BackendUnavailableError as exc:
            log.warning("%s skipped: %s", kind, exc)
            out["pipeline"][kind] = {"skipped": str(exc)}
            continue
        label = f"{kind} {args.model.name}"
        out["pipeline"][kind] = time_pipeline(Pipeline(backend), pairs, args.frames, args.warmup, label)
        backend.close()
    return out


def benchmark_size(args: argparse.Namespace, size: tuple[int, int], tmp: Path) -> dict[str, Any]:
    """All measurements at one model input size."""
    import dataclasses

    import torch

    from mtl_perception.export.frames import stereo_frames
    from mtl_perception.export.onnx_export import export_deploy_model
    from mtl_perception.networks import (
        DeployModel,
        StereoNetConfig,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )
    from mtl_perception.runtime.backend import create_backend
    from mtl_perception.runtime.benchmark import time_pipeline
    from mtl_perception.runtime.pipeline import Pipeline

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
    pairs = stereo_frames(size, 8, args.data)
    out: dict[str, Any] = {"pipeline": {}}
    for kind in args.backends:
        backend = create_backend(kind, onnx_path, threads=args.threads)
        out["pipeline"][kind] = time_pipeline(
            Pipeline(backend), pairs, args.frames, args.warmup, f"{kind} {tag}"
        )
        backend.close()
    out["multitask_vs_single_task"] = compare_single_task(
        dataclasses.replace(config, pretrained=False), onnx_path, pairs, args
    )
    out["opencv_sgbm"] = time_sgbm(pairs, size, int(config.max_disparity), args)
    return out


def compare_single_task(
    config: Any, multitask_onnx: Path, pairs: list[StereoPair], args: argparse.Namespace
) -> dict[str, Any]:
    """ONNX Runtime inference time: one multi-task model vs segmentation-only + disparity-only.

    The baselines are the same network built with ``tasks`` cut to one task (random weights:
    only their speed is compared).
    """
    import dataclasses

    from mtl_perception.export.onnx_export import simplify_if_equivalent, write_onnx
    from mtl_perception.export.parity import ParityTolerance, frame_feeds
    from mtl_perception.networks import DeployModel, build_model
    from mtl_perception.runtime.benchmark import LatencyStats, time_calls
    from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from mtl_perception.runtime.torch_backend import describe_deploy_model

    backends = {"multitask": OnnxRuntimeBackend(multitask_onnx, threads=args.threads)}
    for label, tasks in (("segmentation_only", ("semantic",)), ("disparity_only", ("disparity",))):
        task_config = dataclasses.replace(config, tasks=tasks)
        deploy = DeployModel(build_model(task_config))
        info = dataclasses.replace(describe_deploy_model(deploy, task_config), extra={"baseline": label})
        path = write_onnx(deploy, info, multitask_onnx.with_name(f"{label}.onnx"))
        simplify_if_equivalent(path, info, frame_feeds(pairs[:1], info), ParityTolerance())
        backends[label] = OnnxRuntimeBackend(path, threads=args.threads)
    feeds = {label: frame_feeds(pairs, backend.info) for label, backend in backends.items()}

    def timed(label: str) -> LatencyStats:
        backend, frames = backends[label], feeds[label]
        return time_calls(lambda i: backend.infer(frames[i % len(frames)]), args.frames, args.warmup, label)

    stats = {label: timed(label) for label in backends}
    pair_ms = stats["segmentation_only"].mean_ms + stats["disparity_only"].mean_ms
    return {
        **{label: s.as_dict() for label, s in stats.items()},
        "two_single_task_fps": round(1000.0 / pair_ms, 3),
        "multitask_speedup": round(pair_ms / stats["multitask"].mean_ms, 3),
    }


def time_sgbm(
    pairs: list[StereoPair], size: tuple[int, int], max_disparity: int, args: argparse.Namespace
) -> dict[str, Any]:
    """OpenCV semi-global matching on grayscale at the model input size (disparity only, no semantics)."""
    import cv2

    from mtl_perception.runtime.benchmark import time_calls

    height, width = size
    grays = [
        tuple(cv2.cvtColor(cv2.resize(v, (width, height)), cv2.COLOR_RGB2GRAY) for v in pair)
        for pair in pairs
    ]
    num_disparities = max(16, (max_disparity + 15) // 16 * 16)  # SGBM wants a multiple of 16
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num_disparities, blockSize=5)
    stats = time_calls(lambda i: sgbm.compute(*grays[i % len(grays)]), args.frames, args.warmup, "sgbm")
    return {**stats.as_dict(), "num_disparities": num_disparities}
