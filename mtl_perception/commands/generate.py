"""`mtl-perception generate`: render the synthetic stereo dataset (driving or flying scenes, and rosbags)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mtl_perception.data import layout
from mtl_perception.errors import UserError
from mtl_perception.sim.domains import DOMAINS, FLYING_SEED_OFFSET, HELD_OUT_SEED_OFFSET

DEFAULT_SEQUENCES = {"train": 40, "val": 6, "test": 8}
DEFAULT_FRAMES = {"train": 40, "val": 20, "test": 20}
DEFAULT_BAGS = {"train": 0, "val": 0, "test": 1}


def _per_split(option: str, values: list[str] | None, defaults: dict[str, int]) -> dict[str, int]:
    """'N' sets every split; 'split=N' sets one; repeatable."""
    counts = dict(defaults)
    for value in values or []:
        split, _, number = value.rpartition("=")
        try:
            n = int(number)
        except ValueError:
            raise UserError(f"{option} {value!r}: expected N or SPLIT=N with an integer N") from None
        if split and split not in layout.SPLITS:
            raise UserError(f"{option} {value!r}: unknown split {split!r}; choose from {list(layout.SPLITS)}")
        for name in [split] if split else layout.SPLITS:
            counts[name] = n
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output dataset directory")
    parser.add_argument(
        "--split",
        action="append",
        help="split to render: train, val, test or all (repeatable; default all)",
    )
    parser.add_argument(
        "--sequences",
        action="append",
        metavar="N|SPLIT=N",
        help=f"sequences per split (default {DEFAULT_SEQUENCES})",
    )
    parser.add_argument(
        "--frames",
        action="append",
        metavar="N|SPLIT=N",
        help=f"frames per sequence (default {DEFAULT_FRAMES})",
    )
    parser.add_argument("--width", type=int, default=512, help="image width in pixels (even)")
    parser.add_argument("--height", type=int, default=256, help="image height in pixels (even)")
    parser.add_argument(
        "--domain",
        choices=list(DOMAINS),
        default="default",
        help="default: the training world; unseen: the held-out domain (other textures, dusk light, a "
        "fixed robot rig outside the training ranges, a real camera's effects; seeds shifted by "
        f"{HELD_OUT_SEED_OFFSET}), never for training or model selection. Without --sequences/--frames/"
        "--bag-sequences it renders the committed set: train 4 and test 4 sequences x 20 frames, all "
        "as rosbags too",
    )
    parser.add_argument(
        "--family",
        choices=("driving", "flying"),
        default="driving",
        help="driving (default): streets along a road; flying: 10-30 random objects (primitives and "
        "pybullet_data meshes with procedural or real-photo textures) tumbling at random depths in front "
        "of a random backdrop or the sky, in the spirit of FlyingThings3D. Same layout and labels "
        "(semantics 255 = ignore except the sky; steering.csv holds 0); seeds shifted by "
        f"{FLYING_SEED_OFFSET}",
    )
    parser.add_argument(
        "--rig",
        choices=("random", "fixed"),
        default=None,
        help="random (default): a camera rig drawn per sequence from its seed (height 0.3-2.5 m, "
        "pitch -5..10 deg down, roll +-3 deg, baseline 0.05-0.6 m, hfov 60-110 deg); fixed: the rig of "
        "--hfov, --baseline, --camera-height and --pitch for every sequence "
        "(their defaults: the version-1 rig)",
    )
    parser.add_argument("--hfov", type=float, default=90.0, help="horizontal field of view, degrees")
    parser.add_argument("--baseline", type=float, default=0.3, help="stereo baseline, metres")
    parser.add_argument("--camera-height", type=float, default=1.5, help="rig height above ground, metres")
    parser.add_argument("--pitch", type=float, default=3.0, help="rig pitch, degrees down")
    parser.add_argument("--seed", type=int, default=0, help="base seed (splits use disjoint offsets)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--bag-sequences",
        action="append",
        metavar="N|SPLIT=N",
        help=f"sequences per split also written as rosbag2 (default {DEFAULT_BAGS})",
    )
    parser.add_argument("--no-camera-effects", action="store_true", help="clean renders (no gain/noise/blur)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def selected_splits(values: list[str] | None) -> list[str]:
    """Splits named by --split (default all), in canonical order."""
    names = set()
    for value in values or ["all"]:
        if value == "all":
            names.update(layout.SPLITS)
        elif value in layout.SPLITS:
            names.add(value)
        else:
            raise UserError(f"unknown split {value!r}; choose from {[*layout.SPLITS, 'all']}")
    return [s for s in layout.SPLITS if s in names]


def run(args: argparse.Namespace) -> int:
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    splits = selected_splits(args.split)
    domain = DOMAINS[args.domain]
    if domain.rig is not None and args.rig is not None:
        raise UserError(f"--domain {args.domain} brings its own rig; drop --rig")
    sequences = _per_split("--sequences", args.sequences, domain.sequences or DEFAULT_SEQUENCES)
    config = GeneratorConfig(
        width=args.width,
        height=args.height,
        hfov_deg=args.hfov,
        baseline=args.baseline,
        camera_height=args.camera_height,
        pitch_deg=args.pitch,
        seed=args.seed,
        sequences={s: sequences[s] for s in splits},
        frames={
            s: n
            for s, n in _per_split("--frames", args.frames, domain.frames or DEFAULT_FRAMES).items()
            if s in splits
        },
        bag_sequences={
            s: n
            for s, n in _per_split(
                "--bag-sequences", args.bag_sequences, domain.bag_sequences or DEFAULT_BAGS
            ).items()
            if s in splits
        },
        camera_effects=not args.no_camera_effects,
        rig_preset=args.rig or "random",
        domain=args.domain,
        family=args.family,
    )
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    manifest = generate_dataset(config, args.out, workers=args.workers, overwrite=args.overwrite)
    stats = manifest["stats"]
    print(
        f"rendered {stats['frames']} frames in {stats['seconds']:.1f} s "
        f"({stats['frames_per_minute']:.1f} frames/min, {args.workers} workers)"
    )
    for split in splits:
        names = manifest["splits"][split]
        frames = sum(manifest["sequences"][n]["frames"] for n in names)
        print(f"  {split:<5} {len(names):3d} sequences, {frames:5d} frames  -> {args.out / split}")
    bags = sorted((args.out / layout.BAGS_DIR).glob("*")) if (args.out / layout.BAGS_DIR).is_dir() else []
    print(f"  bags  {len(bags):3d} -> {args.out / layout.BAGS_DIR}")
    print(f"  manifest -> {layout.manifest_path(args.out)}")
    return 0
