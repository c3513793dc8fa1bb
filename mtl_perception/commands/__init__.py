"""One thin module per `mtl-perception` subcommand.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
(torch, pybullet, rclpy) inside ``run`` so ``mtl-perception --help`` stays instant.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtl_perception.replay.bag_source import ReplayTopics


def add_override_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override of the training commands (-> ``overrides``)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def add_topic_options(parser: argparse.ArgumentParser) -> None:
    """``--<name>-topic`` for every bag topic ``replay`` reads (the commands that read stereo bags)."""
    from mtl_perception.replay.bag_source import ReplayTopics

    defaults = ReplayTopics()
    for topic in fields(ReplayTopics):
        parser.add_argument(
            f"--{topic.name.replace('_', '-')}-topic",
            dest=f"topic_{topic.name}",
            default=getattr(defaults, topic.name),
            help=f"(default {getattr(defaults, topic.name)})",
        )


def topics_from(args: argparse.Namespace) -> ReplayTopics:
    """The ``ReplayTopics`` that ``add_topic_options`` parsed."""
    from mtl_perception.replay.bag_source import ReplayTopics

    return ReplayTopics(**{f.name: getattr(args, f"topic_{f.name}") for f in fields(ReplayTopics)})
