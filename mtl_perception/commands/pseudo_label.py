"""`mtl-perception pseudo-label`: train a (depth- or semantic-guided) teacher, then write pseudo-labels.

Both steps resume: a finished teacher (final.pt) is not retrained, an interrupted one continues from
its last state, and labels already written by the same teacher for the same data are kept. A student
then trains on real + pseudo labels with `mtl-perception train` and `data.pseudo_labels: <out dir>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_perception.commands import add_override_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="training YAML with a 'teacher:' section (guidance none|depth|semantic, target semantic|depth, "
        "threshold) and the label shares of the data it labels, "
        "e.g. config/train/pseudo_label_teacher_small.yaml",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="use this trained teacher checkpoint instead of training the config's (train.output_dir)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="pseudo-label folder (default: teacher.out_dir, else <output_dir>/pseudo_labels)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="teacher training budget: stop cleanly with a resumable state (rerun to continue)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="frames per teacher pass when writing labels"
    )
    add_override_option(parser, "override a config value, e.g. --set teacher.threshold=0.8 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from mtl_perception.training.config import load_train_config
    from mtl_perception.training.pseudo_labels import pseudo_label_dir, train_teacher, write_pseudo_labels

    config = load_train_config(args.config, args.overrides)
    checkpoint = Path(args.teacher) if args.teacher else train_teacher(config, args.max_minutes)
    if checkpoint is None:
        print(
            "teacher training stopped before the end; rerun the same command to continue "
            f"({config.train.output_dir})"
        )
        return 0
    out = Path(args.out) if args.out else pseudo_label_dir(config)
    manifest = write_pseudo_labels(config, checkpoint, out, batch_size=args.batch_size)
    print(
        f"{manifest['target']} pseudo-labels for {len(manifest['frames'])} frames "
        f"({100 * manifest['kept_pixel_share']:.1f} % of their pixels kept) in {out}; teacher {checkpoint}\n"
        f"train a student with: --set data.pseudo_labels={out} --set data.pseudo_label_teacher={checkpoint}"
    )
    return 0
