"""One thin module per `mtl-perception` subcommand.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
(torch, pybullet, rclpy) inside ``run`` so ``mtl-perception --help`` stays instant.
"""

import argparse


def add_override_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override of the training commands (-> ``overrides``)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )
