"""One thin module per `mtl-perception` subcommand.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
(torch, pybullet, rclpy) inside ``run`` so ``mtl-perception --help`` stays instant.
"""
