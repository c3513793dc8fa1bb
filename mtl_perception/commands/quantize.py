"""`mtl-perception quantize`: exported FP32 ONNX -> INT8 (ONNX Runtime static QDQ) calibrated on a split."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TypeVar

from mtl_perception.errors import UserError

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="FP32 model exported by `mtl-perception export` (.onnx)")
    parser.add_argument("--data", required=True, help="dataset root whose frames calibrate the ranges")
    parser.add_argument("--kind", default="synthetic", help="dataset layout (synthetic|cityscapes|kitti2015)")
    parser.add_argument("--split", default="val", help="calibration split (never the test split you report)")
    parser.add_argument("--frames", type=int, default=64, help="calibration frames, spread over the split")
    parser.add_argument(
        "--check-frames",
        type=int,
        default=8,
        help="other frames of the split on which INT8-vs-FP32 drift is measured (0: skip)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        choices=["minmax", "percentile", "entropy"],
        help="activation range method (default minmax: see export/quantize.py for the measurement)",
    )
    parser.add_argument(
        "--quantize-heads",
        action="store_true",
        help="also quantize the last disparity/depth layers (kept FP32 by default)",
    )
    parser.add_argument(
        "--symmetric-activations",
        action="store_true",
        help="symmetric activation ranges, as TensorRT's INT8 path expects (ONNX Runtime CPU: leave off)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="default: <model>.int8.onnx")
    parser.add_argument("--json", type=Path, default=None, help="write the drift figures here")


def run(args: argparse.Namespace) -> int:
    from mtl_perception.export.quantize import (
        DEFAULT_CALIBRATION,
        GEOMETRY_OUTPUTS,
        calibration_feeds,
        int8_path_for,
        quantize_int8,
    )
    from mtl_perception.model_info import steering_path_for
    from mtl_perception.runtime import read_model_info

    if args.frames < 1 or args.check_frames < 0:
        raise UserError("--frames must be at least 1 and --check-frames at least 0")
    info = read_model_info(args.model)
    if info.extra.get("precision") == "int8":
        raise UserError(f"{args.model} is already INT8; pass the FP32 model from `mtl-perception export`")
    output = args.output or int8_path_for(args.model)
    feeds = calibration_feeds(args.data, args.split, info, args.frames + args.check_frames, args.kind)
    calibration, check = hold_out(feeds, args.check_frames)
    result = quantize_int8(
        args.model,
        output,
        calibration,
        method=args.calibration or DEFAULT_CALIBRATION,
        keep_fp32_heads=() if args.quantize_heads else GEOMETRY_OUTPUTS,
        symmetric_activations=args.symmetric_activations,
        check=check,
    )
    print(result.summary())
    # The steering graph is tiny and stays FP32; it is found beside the model by name.
    steering = steering_path_for(args.model)
    if steering.is_file():
        shutil.copyfile(steering, steering_path_for(output))
        print(f"copied {steering} -> {steering_path_for(output)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "source": str(args.model),
            "output": str(result.path),
            "calibration": result.info.extra.get("int8_calibration"),
            "fp32_layers": result.excluded_nodes,
            "check_frames": len(check),
            "drift": result.drift,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def hold_out(feeds: list[T], count: int) -> tuple[list[T], list[T]]:
    """(calibration, check): ``count`` feeds spread over the list are held out for the drift check.

    Calibration keeps at least one feed; the check never sees a calibration frame.
    """
    count = min(count, len(feeds) - 1)
    if count <= 0:
        return list(feeds), []
    stride = len(feeds) / count
    held = {int(i * stride + stride / 2) for i in range(count)}
    return [f for i, f in enumerate(feeds) if i not in held], [feeds[i] for i in sorted(held)]
