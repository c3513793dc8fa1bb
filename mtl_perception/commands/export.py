"""`mtl-perception export`: checkpoint -> ONNX (+ steering graph, + optional TensorRT engine), with parity."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mtl_perception.errors import UserError

log = logging.getLogger("mtl_perception.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", type=Path, help="trained checkpoint (.pt) written by `mtl-perception train`"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="ONNX file to write (default: checkpoint name .onnx)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    parser.add_argument(
        "--data", type=Path, help="synthetic dataset root for parity frames (default: procedural)"
    )
    parser.add_argument("--frames", type=int, default=4, help="parity frames")
    from mtl_perception.export.parity import ParityTolerance  # numpy only: cheap at start-up

    # Defaults from ParityTolerance: one place says what passes.
    tolerance = ParityTolerance()
    parser.add_argument(
        "--tol-disparity", type=float, default=tolerance.disparity, help="disparity tolerance (pixels)"
    )
    parser.add_argument("--tol-depth", type=float, default=tolerance.depth, help="depth tolerance (meters)")
    parser.add_argument(
        "--tol-geometry-agreement",
        type=float,
        default=tolerance.geometry_agreement,
        help="min percent of disparity/depth pixels within their tolerance",
    )
    parser.add_argument(
        "--tol-other", type=float, default=tolerance.other, help="max abs diff of other float outputs"
    )
    parser.add_argument(
        "--tol-segmentation",
        type=float,
        default=tolerance.segmentation_agreement,
        help="min class agreement (percent)",
    )
    parser.add_argument(
        "--steering",
        type=Path,
        help="steering head (.pt from a steering `mtl-perception train`) to export as <name>.steering.onnx",
    )
    parser.add_argument("--tensorrt", action="store_true", help="also build and cache the TensorRT engine")
    parser.add_argument("--engine", type=Path, help="engine file (default: the engine cache)")
    parser.add_argument("--fp32", action="store_true", help="TensorRT engine without FP16")
    parser.add_argument(
        "--force-engine-update", action="store_true", help="rebuild the engine even if cached"
    )


def run(args: argparse.Namespace) -> int:
    """Export to staged files and move them into place only if every parity check passed.

    The TensorRT engine is built after that, for the promoted model. A failure leaves the previous
    model (and its cached engine) untouched and keeps the rejected export as ``<output>.rejected``.
    """
    from mtl_perception.export.onnx_export import Staging, export_deploy_model, export_steering_head
    from mtl_perception.export.parity import ParityTolerance
    from mtl_perception.model_info import check_model_file, steering_path_for
    from mtl_perception.networks import DeployModel, load_checkpoint, load_steering_head

    if args.opset < 17:
        raise UserError(f"--opset {args.opset}: the exported graphs need opset 17 or newer")
    checkpoint = check_model_file(args.checkpoint, ".pt")
    output = args.output or checkpoint.with_suffix(".onnx")
    tolerance = ParityTolerance(
        disparity=args.tol_disparity,
        depth=args.tol_depth,
        other=args.tol_other,
        segmentation_agreement=args.tol_segmentation,
        geometry_agreement=args.tol_geometry_agreement,
    )
    model, config, _meta = load_checkpoint(checkpoint)
    head, head_meta = (None, {})
    if args.steering:
        head, head_meta = load_steering_head(check_model_file(args.steering, ".pt"))
    with Staging() as staging:
        result = export_deploy_model(
            DeployModel(model),
            config,
            staging.path_for(output),
            opset=args.opset,
            simplify=not args.no_simplify,
            data_root=args.data,
            parity_frames=args.frames,
            tolerance=tolerance,
        )
        print(f"{output}: {'simplified' if result.simplified else 'not simplified'}")
        print(result.parity.summary())
        passed = result.parity.passed
        if head is not None:
            if head.embedding_dim != result.info.embedding_dim:
                raise UserError(
                    f"{args.steering}: the head reads embeddings of size {head.embedding_dim}, the model "
                    f"gives {result.info.embedding_dim}; train the head on this model's encoder"
                )
            steering = steering_path_for(output)
            _, report = export_steering_head(
                head, staging.path_for(steering), opset=args.opset, frame_period=head_meta.get("frame_period")
            )
            print(f"{steering}:")
            print(report.summary())
            passed = passed and report.passed
        if not passed:
            kept = staging.reject()
            log.error(
                "parity outside tolerance: %s left unchanged, no engine built; the rejected export "
                "is kept for inspection: %s",
                output,
                ", ".join(str(path) for path in kept),
            )
            return 1
        for path in staging.promote():
            print(f"wrote {path}")
    if args.tensorrt:
        from mtl_perception.runtime.tensorrt_engine import ensure_engine

        engine = ensure_engine(
            output, engine_path=args.engine, force_engine_update=args.force_engine_update, fp16=not args.fp32
        )
        print(f"TensorRT engine: {engine}")
    return 0
