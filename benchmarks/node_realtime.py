"""Real-time behaviour of the perception node in its own process (issue: the node keeps real time).

    python benchmarks/node_realtime.py replays --runs 20 --json benchmarks/results/node_replays.json
    python benchmarks/node_realtime.py soak --seconds 600 --slow-subscriber \
        --json benchmarks/results/node_soak.json
    python benchmarks/node_realtime.py slow-subscriber --seconds 60 \
        --json benchmarks/results/node_slow_subscriber.json

``replays`` runs ``mtl-perception replay --mode node`` N times on the demo bag (rendered once into
the demo cache) and reports, per run, the processed share, latency percentiles (input publish to the
last output's arrival) and the longest stall (the longest gap between consecutive outputs).

``soak`` starts the node (`mtl-perception run stereo`, the launch files' entry point) and plays the
demo bag's frames in a loop at ``--rate`` Hz with wall-clock stamps for ``--seconds``; a subscriber
on ``depth`` (the last large map of a frame) measures latency and gaps, the node's RSS is sampled,
and its /diagnostics counters give drops. ``--slow-subscriber`` attaches a second, reliable
subscriber to every output that sleeps 1 s per message. ``slow-subscriber`` runs the soak twice,
without and with it, and compares the first subscriber's output rate and latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from mtl_perception.commands.demo import default_cache_dir, demo_bag

MODEL = Path(__file__).resolve().parent.parent / "models" / "stereo_default.onnx"
STALL_MS = 500.0  # a gap between outputs longer than this is a stall (the soak target)


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {
            "p50_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    data = np.asarray(values_ms)
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(data.max())}


def longest_gap_ms(arrivals_s: list[float]) -> float:
    times = np.sort(np.asarray(arrivals_s))
    return float(np.diff(times).max() * 1e3) if len(times) > 1 else float("nan")


# -- replays -----------------------------------------------------------------------------------------


def run_replays(args: argparse.Namespace) -> dict:
    from mtl_perception.replay.session import ReplayOptions, run_replay
    from mtl_perception.runtime.memory import retain_freed_memory

    retain_freed_memory()
    bag = demo_bag(default_cache_dir(), args.frames, 512, 256)
    runs = []
    for index in range(args.runs):
        out = Path(args.work) / f"replay_{index}"
        if (out / "predictions").exists():
            import shutil

            shutil.rmtree(out / "predictions")
        options = ReplayOptions(
            bag=bag, out=out, model=args.model, mode="node", backend="onnxruntime", threads=args.threads
        )
        summary = run_replay(options).summary
        rows = summary["per_frame"]
        first = rows[0]["stamp"]
        done = [r for r in rows if r["latency_ms"] is not None]
        # Output arrival on the playback clock: frame i is published at (stamp_i - stamp_0) / rate.
        arrivals = [(r["stamp"] - first) / 1e9 / args.rate + r["latency_ms"] / 1e3 for r in done]
        run = {
            "processed_share": len(done) / len(rows),
            **latency_summary([r["latency_ms"] for r in done]),
            "longest_stall_ms": longest_gap_ms(arrivals),
            "node_log_summary": _summary_line(out / "node.log"),
        }
        runs.append(run)
        print(
            f"run {index + 1}/{args.runs}: processed {run['processed_share']:.0%}, p50 {run['p50_ms']:.0f} "
            f"p95 {run['p95_ms']:.0f} p99 {run['p99_ms']:.0f} max {run['max_ms']:.0f} ms, "
            f"longest gap {run['longest_stall_ms']:.0f} ms",
            flush=True,
        )
    meeting = [r for r in runs if r["processed_share"] >= 0.95 and r["p95_ms"] <= 150.0]
    return {
        "bag": str(bag),
        "runs": runs,
        "runs_meeting_target": len(meeting),
        "target": ">= 95 % processed and p95 <= 150 ms",
    }


def _summary_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if "frames in " in line]
    return lines[-1].split("]: ", 1)[-1] if lines else ""


# -- soak ----------------------------------------------------------------------------------------


@dataclass
class _Received:
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (wall s, latency ms)
    slow_count: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)


def soak(args: argparse.Namespace, slow_subscriber: bool) -> dict:
    """Play the demo bag in a loop into a node process; see the module docstring."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from stereo_msgs.msg import DisparityImage

    from mtl_perception.replay.bag_source import BagSource, ReplayTopics
    from mtl_perception.replay.node_replay import private_domain_id
    from mtl_perception.ros.conversions import numpy_to_image
    from mtl_perception.ros.dds import apply_large_image_profile
    from mtl_perception.ros.spinning import BackgroundSpinner

    bag = demo_bag(default_cache_dir(), args.frames, 512, 256)
    frames = list(BagSource(bag, ReplayTopics(), stereo=True).frames())
    domain = private_domain_id()
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    apply_large_image_profile(env)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "FAST"))})
    log_path = Path(args.work) / f"soak_node{'_slow' if slow_subscriber else ''}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mtl_perception.cli", "run", "stereo", "--ros-args"]
    command += ["-p", f"model_file_path:={args.model.resolve()}", "-p", "backend:=onnxruntime"]
    command += ["-p", f"threads:={args.threads}"]
    node_process = subprocess.Popen(command, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    received = _Received()
    player = rclpy.create_node("soak_player", context=context)
    slow = rclpy.create_node("soak_slow_subscriber", context=context) if slow_subscriber else None
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def on_depth(msg: Image) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec / 1e9
        with received.lock:
            received.arrivals.append((now, (now - stamp) * 1e3))

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.hardware_id == "mtl_perception":
                received.diagnostics = {kv.key: kv.value for kv in status.values}

    from diagnostic_msgs.msg import DiagnosticArray

    player.create_subscription(Image, "depth", on_depth, reliable)
    player.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    if slow is not None:

        def sleepy(_msg) -> None:
            time.sleep(1.0)
            received.slow_count += 1

        for topic, kind in (
            ("semantic", Image),
            ("semantic/uncertainty", Image),
            ("disparity", DisparityImage),
            ("depth", Image),
            ("depth/uncertainty", Image),
        ):
            slow.create_subscription(kind, topic, sleepy, reliable)
    publishers = {
        name: player.create_publisher(kind, name, qos_profile_sensor_data)
        for name, kind in (
            ("left/image_rect", Image),
            ("right/image_rect", Image),
            ("left/camera_info", CameraInfo),
            ("right/camera_info", CameraInfo),
        )
    }
    spinners = [BackgroundSpinner(_executor(SingleThreadedExecutor, context, player), name="soak").start()]
    if slow is not None:
        spinners.append(
            BackgroundSpinner(_executor(SingleThreadedExecutor, context, slow), name="slow").start()
        )
    node = psutil.Process(node_process.pid)
    rss: list[tuple[float, int]] = []
    published = 0
    try:
        deadline = time.monotonic() + 120
        while not (
            all(p.get_subscription_count() for p in publishers.values()) and player.count_publishers("depth")
        ):
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError(f"the node did not come up; see {log_path}")
            time.sleep(0.1)
        infos = [_camera_info(frames[0].left_info), _camera_info(frames[0].right_info)]
        start = time.monotonic()
        next_sample = start
        period = 1.0 / args.rate
        while time.monotonic() - start < args.seconds:
            frame = frames[published % len(frames)]
            wall = time.time()
            header = Header(frame_id=frame.frame_id)
            header.stamp.sec, header.stamp.nanosec = int(wall), int((wall % 1) * 1e9)
            for info, topic in zip(infos, ("left/camera_info", "right/camera_info"), strict=True):
                info.header = header
                publishers[topic].publish(info)
            publishers["left/image_rect"].publish(numpy_to_image(frame.left, frame.encoding, header))
            publishers["right/image_rect"].publish(numpy_to_image(frame.right, frame.encoding, header))
            published += 1
            now = time.monotonic()
            if now >= next_sample:
                rss.append((now - start, node.memory_info().rss))
                next_sample += args.rss_every
            time.sleep(max(0.0, start + published * period - time.monotonic()))
        time.sleep(1.0)  # the last outputs
    finally:
        for spinner in spinners:
            spinner.stop()
        player.destroy_node()
        if slow is not None:
            slow.destroy_node()
        rclpy.try_shutdown(context=context)
        node_process.send_signal(2)
        try:
            node_process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node_process.kill()
    return _soak_report(args, received, published, rss, slow_subscriber, start)


def _executor(kind, context, node):
    executor = kind(context=context)
    executor.add_node(node)
    return executor


def _camera_info(info: dict):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=info["width"], height=info["height"], distortion_model=info["distortion_model"])
    msg.d, msg.k, msg.r, msg.p = list(info["d"]), info["k"], info["r"], info["p"]
    return msg


def _soak_report(args, received: _Received, published: int, rss, slow_subscriber: bool, start: float) -> dict:
    with received.lock:
        arrivals = list(received.arrivals)
    times = [wall for wall, _ in arrivals]
    latencies = [latency for _, latency in arrivals]
    gaps = np.diff(np.sort(times)) * 1e3 if len(times) > 1 else np.array([])
    minutes = []
    if times:
        t0 = min(times)
        for minute in range(int(np.ceil(args.seconds / 60))):
            inside = [lat for wall, lat in arrivals if minute * 60 <= wall - t0 < (minute + 1) * 60]
            minutes.append({"minute": minute + 1, "outputs": len(inside), **latency_summary(inside)})
    rss_mb = [(round(t, 1), round(value / 2**20, 1)) for t, value in rss]
    after_first_minute = next((mb for t, mb in rss_mb if t >= 60), None)
    return {
        "seconds": args.seconds,
        "rate_hz": args.rate,
        "slow_subscriber": slow_subscriber,
        "frames_published": published,
        "outputs_received": len(arrivals),
        "output_rate_hz": len(arrivals) / args.seconds,
        "latency": latency_summary(latencies),
        "longest_gap_ms": float(gaps.max()) if gaps.size else float("nan"),
        "stalls_over_500_ms": int((gaps > STALL_MS).sum()),
        "node_counters": {
            k: v for k, v in received.diagnostics.items() if k.startswith(("frames", "images"))
        },
        "slow_subscriber_messages": received.slow_count,
        "rss_mb": rss_mb,
        "rss_change_after_first_minute": (
            (rss_mb[-1][1] - after_first_minute) / after_first_minute if after_first_minute else None
        ),
        "per_minute": minutes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["replays", "soak", "slow-subscriber"])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--runs", type=int, default=20, help="replays: how many")
    parser.add_argument("--frames", type=int, default=30, help="frames of the demo bag")
    parser.add_argument("--rate", type=float, default=10.0, help="soak: frames per second (replays: x1)")
    parser.add_argument("--seconds", type=float, default=600.0, help="soak duration")
    parser.add_argument(
        "--slow-subscriber", action="store_true", help="soak: attach a 1 s/message subscriber"
    )
    parser.add_argument("--rss-every", type=float, default=10.0, help="soak: seconds between RSS samples")
    parser.add_argument("--threads", type=int, default=2, help="the node's backend threads")
    parser.add_argument(
        "--work", default="/tmp/mtl_node_realtime", help="scratch folder (reports, node logs)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.what == "replays":
        args.rate = 1.0  # replays play the bag at its recorded rate (10 Hz)
        results = run_replays(args)
    elif args.what == "soak":
        results = soak(args, args.slow_subscriber)
    else:
        without = soak(args, slow_subscriber=False)
        with_slow = soak(args, slow_subscriber=True)
        results = {
            "without": without,
            "with_slow_subscriber": with_slow,
            "output_rate_change": with_slow["output_rate_hz"] / without["output_rate_hz"] - 1,
            "p95_latency_change": with_slow["latency"]["p95_ms"] / without["latency"]["p95_ms"] - 1,
            "target": "rate and p95 latency within 10 %",
        }
    results["machine"] = {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    text = json.dumps(results, indent=2)
    print(text if args.what != "replays" else json.dumps({k: v for k, v in results.items() if k != "runs"}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
