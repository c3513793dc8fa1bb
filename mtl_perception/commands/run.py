"""`mtl-perception run stereo|mono`: start the ROS 2 node without `ros2 launch`.

Everything after ``--ros-args`` goes to ROS untouched (``--ros-args -r image_rect:=/cam/image
-p backend:=onnxruntime``), so rclpy's own parser handles the parameter file, remaps and overrides
exactly as under a launch file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_perception.errors import UserError

ACCEPTS_UNKNOWN_ARGS = True
MODES = ("stereo", "mono")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `run`; unknown arguments (the ROS ones) are passed through."""
    # No abbreviations: ROS's own --param must not be taken for --params-file.
    parser.allow_abbrev = False
    parser.add_argument("mode", choices=MODES, help="stereo (left/right image_rect) or mono (image_rect)")
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="ROS 2 parameter file (default: the shipped config/<mode>.yaml)",
    )
    parser.add_argument("--node-name", default="mtl_perception", help="ROS node name (default: %(default)s)")
    # Everything after --ros-args belongs to ROS, including its own --params-file: REMAINDER keeps
    # argparse from taking those for our options (launch_ros adds such a section).
    parser.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="ROS arguments (remaps, -p overrides, more --params-file), passed to rclpy untouched",
    )


def ros_arguments(mode: str, params_file: Path, ros_args: list[str]) -> list[str]:
    """The argv handed to rclpy.init: the parameter file first, the user's ROS arguments after.

    ``mode`` goes in as ``-p`` so it beats the file (rcl ranks -p overrides above files).
    """
    return [
        "mtl-perception",
        "--ros-args",
        "--params-file",
        str(params_file),
        "-p",
        f"mode:={mode}",
        *ros_args,
    ]


def run(args: argparse.Namespace) -> int:
    """Start the node and spin it until Ctrl-C or a ROS shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from mtl_perception.ros.dds import apply_large_image_profile
    from mtl_perception.ros.node import PerceptionNode
    from mtl_perception.ros.resources import default_params_file
    from mtl_perception.runtime.memory import retain_freed_memory

    unexpected = list(getattr(args, "extra_args", []))
    if unexpected:
        raise UserError(f"unexpected arguments {unexpected}; put ROS arguments after --ros-args")
    params_file = args.params_file or default_params_file(args.mode)
    if not params_file.is_file():
        raise UserError(f"parameter file not found: {params_file}; pass --params-file with an existing file")
    retain_freed_memory()  # per-frame maps reuse freed pages instead of faulting in new ones
    profile = apply_large_image_profile()  # before rclpy.init: read when the participant is made
    try:
        rclpy.init(args=ros_arguments(args.mode, params_file, args.ros_args))
    except RuntimeError as exc:  # rclpy's RCLError: a bad params file, remap or --ros-args option
        raise UserError(f"ROS refused the arguments (check {params_file} and --ros-args): {exc}") from exc
    node = None
    try:
        node = PerceptionNode(args.node_name)
        if profile is not None:
            node.get_logger().info(f"Fast DDS profile for large images: {profile}")
        # One thread: the callbacks only store messages and inference has its own thread. rclpy's
        # MultiThreadedExecutor spends far more Python time per callback (futures, a thread pool)
        # and stalled the process for 0.3 s at a time here: 40 s soaks at 10 Hz gave p95 174 ms,
        # 16 drops with it and p95 113 ms, no drop with this one (benchmarks/node_realtime.py).
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # rclpy's RCLError
        if rclpy.ok():
            raise
        # Ctrl-C during start-up: rclpy's SIGINT handler shut the context down, so making the executor
        # (or a node entity) failed on it. That is a requested stop, not an error.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
