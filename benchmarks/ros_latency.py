"""End-to-end latency and throughput of the ROS node over DDS, against the pipeline alone.

    python benchmarks/ros_latency.py --model models/stereo_default.onnx --frames 200 --rate 30 \
        --json ros_latency.json

Latency is output arrival time minus the input header stamp (both wall clock, same machine), on
the `depth` topic (the last large image the node publishes per frame); fps over DDS is the rate
of those arrivals. Frames are published at
``--rate`` Hz (0 = as fast as possible: the node then drops frames, and fps shows its ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tqdm import tqdm

from mtl_perception.data.frames import procedural_frames
from mtl_perception.ros.conversions import numpy_to_image
from mtl_perception.ros.node import PerceptionNode
from mtl_perception.ros.spinning import BackgroundSpinner
from mtl_perception.runtime import CameraModel, Pipeline, create_backend

FX, BASELINE = 400.0, 0.12


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50/p95/mean of a latency sample in ms (NaN when empty)."""
    if not values_ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "count": 0}
    data = np.asarray(values_ms)
    return {
        "p50_ms": float(np.percentile(data, 50)),
        "p95_ms": float(np.percentile(data, 95)),
        "mean_ms": float(data.mean()),
        "count": len(values_ms),
    }


def camera_info(width: int, height: int, tx: float) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [FX, 0.0, width / 2, 0.0, FX, height / 2, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, width / 2, tx, 0.0, FX, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def pipeline_alone(args: argparse.Namespace, frames: list) -> dict[str, float]:
    """fps and per-stage ms of Pipeline.process on the same frames, no ROS."""
    backend = create_backend(
        args.backend, args.model, threads=args.threads or None, spin_wait=args.cpu_spin_wait
    )
    pipeline = Pipeline(backend)
    camera = CameraModel(FX, BASELINE)
    right_of = (lambda pair: pair[1]) if backend.info.is_stereo else (lambda pair: None)
    pipeline.process(frames[0][0], right_of(frames[0]), camera=camera)  # warm-up
    totals: list[float] = []
    start = time.perf_counter()
    for index in tqdm(range(args.frames), desc="pipeline alone"):
        left_right = frames[index % len(frames)]
        result = pipeline.process(left_right[0], right_of(left_right), camera=camera)
        totals.append(sum(result.timings.values()))
    elapsed = time.perf_counter() - start
    backend.close()
    return {"fps": args.frames / elapsed, **percentiles(totals)}


def over_dds(args: argparse.Namespace, frames: list) -> dict[str, float]:
    """Publish frames to the node and time each `depth` output from its input stamp."""
    context = Context()
    rclpy.init(context=context, domain_id=args.domain_id)
    overrides = [
        Parameter("model_file_path", value=str(args.model)),
        Parameter("backend", value=args.backend),
    ]
    if args.threads:
        overrides.append(Parameter("threads", value=args.threads))
    overrides.append(Parameter("cpu_spin_wait", value=args.cpu_spin_wait))
    node = PerceptionNode(context=context, parameter_overrides=overrides)
    probe = Node("latency_probe", context=context)
    latencies: list[float] = []
    arrivals: list[float] = []

    def on_depth(msg: Image) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - stamp) / 1e6)
        arrivals.append(time.perf_counter())

    probe.create_subscription(
        Image, "depth", on_depth, QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    )
    stereo = node.mode == "stereo"
    image_topics = ("left/image_rect", "right/image_rect") if stereo else ("image_rect",)
    info_topics = ("left/camera_info", "right/camera_info") if stereo else ("camera_info",)
    image_pubs = [probe.create_publisher(Image, t, qos_profile_sensor_data) for t in image_topics]
    info_pubs = [probe.create_publisher(CameraInfo, t, qos_profile_sensor_data) for t in info_topics]
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    executor.add_node(probe)
    spinner = BackgroundSpinner(executor).start()
    height, width = frames[0][0].shape[:2]
    while any(p.get_subscription_count() == 0 for p in image_pubs):
        time.sleep(0.05)  # DDS discovery
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    for publisher, tx in zip(info_pubs, (0.0, -FX * BASELINE), strict=False):
        publisher.publish(camera_info(width, height, tx))
    time.sleep(0.2)  # let camera_info land before the first image (best effort, separate topics)
    start = time.perf_counter()
    for index in tqdm(range(args.frames), desc="over DDS"):
        for publisher, tx in zip(info_pubs, (0.0, -FX * BASELINE), strict=False):
            publisher.publish(camera_info(width, height, tx))
        header = Header(frame_id="benchmark_optical_frame")
        header.stamp.sec, header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        for publisher, image in zip(image_pubs, frames[index % len(frames)], strict=False):
            publisher.publish(numpy_to_image(image, "rgb8", header))
        time.sleep(max(0.0, start + (index + 1) * period - time.perf_counter()))
    deadline = time.perf_counter() + 5.0
    stats = node.statistics
    while stats.frames_out + stats.frames_dropped + stats.frames_rejected < stats.frames_in:
        if time.perf_counter() > deadline:
            break
        time.sleep(0.01)
    time.sleep(0.2)  # the last outputs in flight
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    report = {
        "fps": (len(arrivals) - 1) / span,
        **percentiles(latencies),
        "frames_sent": args.frames,
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "frames_dropped": stats.frames_dropped,
        "frames_rejected": stats.frames_rejected,
        "backend": stats.backend,
    }
    spinner.stop()
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown(context=context)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="exported .onnx model")
    parser.add_argument("--backend", default="auto", help="auto | tensorrt | onnxruntime | torch")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument(
        "--size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"), help="input size"
    )
    parser.add_argument(
        "--rate", type=float, default=30.0, help="publish rate in Hz; 0 = as fast as possible"
    )
    parser.add_argument("--threads", type=int, default=0, help="backend CPU threads; 0 = library default")
    parser.add_argument(
        "--cpu-spin-wait", action="store_true", help="ONNX Runtime threads busy-wait (node and pipeline)"
    )
    parser.add_argument("--domain-id", type=int, default=150 + os.getpid() % 50, help="ROS_DOMAIN_ID to use")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the figures to this JSON file (default: stdout only)"
    )
    args = parser.parse_args()
    frames = procedural_frames(tuple(args.size), 8)
    report = {
        "model": str(args.model),
        "input_size": list(args.size),
        "rate_hz": args.rate,
        "threads": args.threads,
        "cpu_spin_wait": args.cpu_spin_wait,
        "pipeline": pipeline_alone(args, frames),
        "ros": over_dds(args, frames),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
