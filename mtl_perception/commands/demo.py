"""`mtl-perception demo`: synthetic bag -> live node over DDS -> replay report, in one command."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mtl_perception.errors import UserError
from mtl_perception.replay import REPLAY_MODES

log = logging.getLogger(__name__)
SEQUENCE = "test_0000"  # the generator's first test sequence, the one written as a bag


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mtl_perception/demo`` (``~/.cache/...`` when unset)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mtl_perception" / "demo"


def demo_bag(cache: Path, frames: int, width: int, height: int) -> Path:
    """The demo's synthetic stereo bag for these settings, rendered on first use and then reused."""
    from mtl_perception.data import layout
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    root = cache / f"sim_{width}x{height}_{frames}f"
    bag = layout.bag_dir(root, SEQUENCE)
    if (bag / "metadata.yaml").is_file():
        log.info("reusing the demo bag %s", bag)
        return bag
    config = GeneratorConfig(
        width=width,
        height=height,
        sequences={"test": 1},
        frames={"test": frames},
        bag_sequences={"test": 1},
    )
    print(f"rendering a {frames}-frame {width}x{height} synthetic stereo bag into {root} (once)")
    generate_dataset(config, root, workers=min(2, os.cpu_count() or 1), overwrite=True)
    if not (bag / "metadata.yaml").is_file():
        raise UserError(f"the generator wrote no bag at {bag}; check `mtl-perception generate`")
    return bag


def demo_model(model: Path | None, cache: Path) -> Path:
    """``model``, else the shipped default, else (clearly announced) an untrained network.

    The untrained fallback lets the demo show the whole path (sim -> node -> report) before a
    trained model is shipped; its accuracy figures mean nothing and the message says so.
    """
    from mtl_perception.ros.resources import default_model_path

    if model is not None:
        if not model.is_file():
            raise UserError(f"model file not found: {model}")
        return model
    try:
        return default_model_path("stereo")
    except UserError as exc:
        print(
            f"NOTE: {exc}.\n      Running the demo with an UNTRAINED network (ImageNet backbone, random "
            "heads): the pipeline runs end to end but its accuracy figures are meaningless.\n"
            "      Pass --model PATH with a trained ONNX model for real results."
        )
    path = cache / "untrained_stereo.onnx"
    if not path.is_file():
        _export_untrained(path)
    return path


def _export_untrained(path: Path) -> None:
    import torch

    from mtl_perception.export.onnx_export import export_deploy_model
    from mtl_perception.networks import DeployModel, StereoNetConfig, build_model

    torch.manual_seed(0)
    config = StereoNetConfig()
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    export_deploy_model(DeployModel(build_model(config)), config, tmp, simplify=False, parity_frames=1)
    tmp.replace(path)  # only a complete export is ever reused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `demo` (all have working defaults)."""
    parser.add_argument("--model", type=Path, help="ONNX model (default: models/stereo_default.onnx)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="report directory")
    parser.add_argument("--cache", type=Path, help="where the synthetic bag is kept (default: ~/.cache/...)")
    parser.add_argument("--frames", type=int, default=30, help="frames in the synthetic bag (10 Hz)")
    parser.add_argument("--width", type=int, default=512, help="image width of the synthetic bag")
    parser.add_argument("--height", type=int, default=256, help="image height of the synthetic bag")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed, x recorded rate")
    parser.add_argument("--mode", choices=REPLAY_MODES, default="node", help="node (over DDS) or pipeline")
    parser.add_argument("--backend", default="auto", help="auto | tensorrt | onnxruntime | torch")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads of the node's backend (default: all cores; scoring waits until playback ends)",
    )


def run(args: argparse.Namespace) -> int:
    """Render (or reuse) the bag, replay it through the node, print where the report is."""
    import shutil

    from mtl_perception.commands.replay import print_headline
    from mtl_perception.replay.session import PREDICTIONS_BAG, ReplayOptions, run_replay
    from mtl_perception.runtime.memory import retain_freed_memory

    if args.frames < 1 or args.rate <= 0:
        raise UserError(f"--frames must be >= 1 and --rate > 0 (got {args.frames}, {args.rate})")
    retain_freed_memory()  # per-frame maps reuse freed pages instead of faulting in new ones
    cache = args.cache or default_cache_dir()
    model = demo_model(args.model, cache)
    bag = demo_bag(cache, args.frames, args.width, args.height)
    previous = args.out / PREDICTIONS_BAG
    if previous.is_dir():
        shutil.rmtree(previous)  # the last demo's predictions; the other outputs are overwritten
    print(f"replaying {bag} through the {args.mode} ({model.name}) ...")
    options = ReplayOptions(
        bag=bag,
        out=args.out,
        model=model,
        mode=args.mode,
        backend=args.backend,
        rate=args.rate,
        threads=args.threads,
    )
    outcome = run_replay(options)
    print_headline(outcome.summary, outcome.report_path.resolve())
    print(f"open {outcome.report_path.resolve()} in a browser")
    return 0
