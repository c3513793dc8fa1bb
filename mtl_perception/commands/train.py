"""`mtl-perception train`: a stereo or mono multi-task network, or a steering head, from a YAML config."""

from __future__ import annotations

import argparse

from mtl_perception.commands import add_override_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="training YAML, e.g. config/train/stereo.yaml (a 'steering:' YAML trains a steering head)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest state in the output dir"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop cleanly (with a resumable checkpoint) after this wall-clock budget",
    )
    add_override_option(parser, "override a config value, e.g. --set optim.lr=3e-4 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from mtl_perception.training.config import read_training_yaml
    from mtl_perception.training.steering import is_steering_config

    raw = read_training_yaml(args.config)
    if is_steering_config(raw):
        return _run_steering(args, raw)
    from mtl_perception.training.config import load_train_config
    from mtl_perception.training.evaluation import format_metrics
    from mtl_perception.training.trainer import run_training

    config = load_train_config(args.config, args.overrides)
    if "teacher" in raw:
        from mtl_perception.errors import UserError

        # `train` would build a plain network and drop the guidance: the teacher is another command's.
        raise UserError(
            f"{args.config} describes a pseudo-label teacher: train it (and write its pseudo-labels) "
            "with `mtl-perception pseudo-label --config ...`"
        )
    metrics = run_training(config, resume=args.resume, max_minutes=args.max_minutes)
    if metrics:
        print(format_metrics(metrics))
    print(f"outputs in {config.train.output_dir}")
    return 0


def _run_steering(args: argparse.Namespace, raw: dict) -> int:
    from mtl_perception.errors import UserError
    from mtl_perception.training.steering import (
        format_steering_metrics,
        run_steering_training,
        steering_config_from_dict,
    )

    if args.resume or args.max_minutes is not None:
        raise UserError(
            "a steering run resumes by itself (finished folds are kept); --resume/--max-minutes do not apply"
        )
    config = steering_config_from_dict(raw, args.overrides)
    metrics = run_steering_training(config)
    print(format_steering_metrics(metrics))
    print(f"outputs in {config.output_dir}")
    return 0
