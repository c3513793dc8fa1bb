"""`mtl-perception demo`: synthetic bag -> live node over DDS -> replay report, in one command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mtl_perception.replay import REPLAY_MODES


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
    from mtl_perception.errors import UserError
    from mtl_perception.replay.demo import default_cache_dir, demo_bag, demo_model
    from mtl_perception.replay.session import PREDICTIONS_BAG, ReplayOptions, run_replay

    if args.frames < 1 or args.rate <= 0:
        raise UserError(f"--frames must be >= 1 and --rate > 0 (got {args.frames}, {args.rate})")
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
