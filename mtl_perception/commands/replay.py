"""`mtl-perception replay BAG`: evaluate a model on a rosbag2 (in-process or through the live node).

Writes metrics.json, a self-contained report.html and a bag of the predicted topics into --out;
``--fail-below`` / ``--fail-above`` turn metrics into CI gates (exit status 1 when one fails).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_perception.commands import add_topic_options, topics_from
from mtl_perception.errors import UserError
from mtl_perception.replay import REPLAY_MODES
from mtl_perception.replay.gates import failed_gates, parse_gates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `replay`."""
    parser.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3), or one .mcap/.db3 file")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped stereo_default.onnx)")
    parser.add_argument(
        "--mode",
        choices=REPLAY_MODES,
        default="pipeline",
        help="pipeline: in-process, as fast as possible; node: the live node over DDS",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="auto | tensorrt | onnxruntime | torch (torch needs the [train] extra; the others do not)",
    )
    parser.add_argument("--rate", type=float, default=1.0, help="node mode: playback speed, x recorded rate")
    parser.add_argument("--params-file", type=Path, help="node mode: ROS parameter file for the node")
    parser.add_argument("--max-frames", type=int, help="replay at most this many frames")
    parser.add_argument("--panels", type=int, default=6, help="sampled frames shown in the report")
    parser.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="predictions bag storage"
    )
    parser.add_argument("--threads", type=int, help="CPU threads of the backend (in node mode, the node's)")
    add_topic_options(parser)
    parser.add_argument(
        "--fail-below",
        nargs="+",
        metavar="METRIC=VALUE",
        help="exit 1 if a metric is below VALUE (e.g. miou=0.5 delta1=0.8)",
    )
    parser.add_argument(
        "--fail-above",
        nargs="+",
        metavar="METRIC=VALUE",
        help="exit 1 if an error metric is above VALUE (e.g. d1_all=0.2 epe=2)",
    )


def resolve_model(model: Path | None, mode: str = "stereo") -> Path:
    """``model`` if given, else the shipped default; a clear error when neither exists."""
    if model is not None:
        if not model.is_file():
            raise UserError(f"model file not found: {model}")
        return model
    from mtl_perception.ros.resources import shipped_file

    try:
        return shipped_file(f"models/{mode}_default.onnx")
    except UserError as exc:
        raise UserError(
            f"no --model given and {exc}; train and export one (`mtl-perception export`) and pass --model"
        ) from exc


def run(args: argparse.Namespace) -> int:
    """Replay, write the outputs, print the headline figures and the gate verdicts."""
    from mtl_perception.replay.session import ReplayOptions, run_replay
    from mtl_perception.runtime.memory import retain_freed_memory

    retain_freed_memory()  # per-frame maps reuse freed pages instead of faulting in new ones
    gates = parse_gates(args.fail_below, args.fail_above)
    if args.rate <= 0:
        raise UserError(f"--rate must be positive, got {args.rate}")
    topics = topics_from(args)
    options = ReplayOptions(
        bag=args.bag,
        out=args.out,
        model=resolve_model(args.model),
        mode=args.mode,
        backend=args.backend,
        topics=topics,
        rate=args.rate,
        panels=args.panels,
        max_frames=args.max_frames,
        storage=args.storage,
        params_file=args.params_file,
        threads=args.threads,
    )
    outcome = run_replay(options)
    print_headline(outcome.summary, outcome.report_path)
    failures = failed_gates(gates, outcome.summary["headline"])
    for failure in failures:
        print(f"GATE FAILED: {failure}")
    if gates and not failures:
        print(f"all {len(gates)} gate(s) passed")
    return 1 if failures else 0


def print_headline(summary: dict, report_path: Path) -> None:
    """The few numbers a person looks at first, and where the report is."""
    frames = summary["frames"]
    print(
        f"replayed {frames['replayed']} frames: {frames['processed']} processed, {frames['dropped']} dropped"
    )
    for name, value in summary["headline"].items():
        print(f"  {name:<18} {value:.4g}")
    line = steering_line(summary)
    if line is not None:
        print(line)
    print(f"report: {report_path}")
    print(f"metrics: {report_path.with_name('metrics.json')}")


def steering_line(summary: dict) -> str | None:
    """What the replay says about steering: its error, why nothing was scored, or that no graph runs."""
    from mtl_perception.model_info import steering_path_for

    run = summary.get("run", {})
    steering = summary.get("steering")
    if run.get("steering_graph") == "none":
        graph = steering_path_for(run.get("model", "model.onnx")).name
        return f"steering: no steering graph ships with this model ({graph} absent): none published or scored"
    if steering is None:
        if "steering" in str(run.get("ground_truth", "")):
            return None  # nothing processed: the frame counts already say so
        return "steering: published, but the bag has no steering ground truth to score it against"
    incomplete = steering["frames_incomplete_window"]
    if not steering["frames_scored"]:
        return (
            f"steering: no frame scored; {incomplete} frame(s) came before their window held enough "
            "consecutive frames (each dropped or missing frame restarts it)"
        )
    return (
        f"steering: RMSE {steering['rmse_deg']:.3g} deg, MSE {steering['mse_deg2']:.4g} deg^2 over "
        f"{steering['frames_scored']} frames ({incomplete} with an incomplete window, not scored)"
    )
