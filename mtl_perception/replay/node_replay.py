"""Node-mode replay: the live node in a subprocess, fed over DDS at the recorded rate.

What is measured is what a robot would see: the node's own QoS, frame dropping and latency. The
node runs with ``use_sim_time`` on a private ROS_DOMAIN_ID (localhost discovery only); this process
publishes ``/clock`` and the camera topics, and collects the node's outputs by header stamp.
Latency is wall time from publishing a frame's images to receiving its last expected output.

Scoring a frame costs about as much CPU as inferring it, so results are held back until playback
ends (up to ``DEFERRED_RESULTS_BYTES``) and the node does not share the CPU with the evaluation;
past that budget, the oldest results are handed on during playback and a warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.contract import disparity_from_message_values
from mtl_perception.errors import UserError
from mtl_perception.model_info import ModelInfo, read_model_info, steering_path_for
from mtl_perception.replay.bag_source import ReplayFrame
from mtl_perception.replay.evaluation import Prediction
from mtl_perception.replay.session import FrameResult, ReplayOptions
from mtl_perception.ros.dds import PROFILE_VARIABLES, apply_large_image_profile
from mtl_perception.ros.spinning import BackgroundSpinner

log = logging.getLogger(__name__)
NAMESPACE = "/mtl_replay"
NODE_NAME = "mtl_perception_replay"
STARTUP_TIMEOUT_S = 120.0
# A frame with no output this long after it was published (wall time) counts as dropped.
MIN_DROP_TIMEOUT_S = 3.0
DEFERRED_RESULTS_BYTES = 2 * 2**30  # about 400 frames at 512x256 with ground truth
OUTPUT_TOPICS = {  # prediction key -> node output topic (relative to the node's namespace)
    "semantic": "semantic",
    "semantic_uncertainty": "semantic/uncertainty",
    "semantic_confidence": "semantic/confidence",
    "disparity": "disparity",
    "depth": "depth",
    "depth_uncertainty": "depth/uncertainty",
    "steering": "steering",
}


def private_domain_id() -> int:
    """A ROS_DOMAIN_ID unlikely to clash with the user's (0) or with parallel replays (by pid)."""
    return 100 + os.getpid() % 130  # 100..229 stays below the 232 limit of Fast DDS ports


def expected_outputs(info: ModelInfo) -> set[str]:
    """Prediction keys the node publishes for every processed frame of this model (not steering)."""
    keys = {"semantic"}
    keys |= {key for key in ("semantic_uncertainty", "semantic_confidence") if key in info.outputs}
    if info.is_stereo:
        keys |= {"disparity", "depth"}
        if "disparity_uncertainty" in info.outputs:
            keys.add("depth_uncertainty")
    else:
        keys.add("depth")
        if "depth_uncertainty" in info.outputs:
            keys.add("depth_uncertainty")
    return keys


@dataclass
class _Sent:
    frame: ReplayFrame
    wall: float  # time.monotonic() when its images were published
    outputs: dict[str, Any] = field(default_factory=dict)
    last_arrival: float = 0.0


class _OutputCollector:
    """Thread-safe store of the frames played and the node's outputs, keyed by header stamp.

    Written by the player thread (``expect``) and the executor thread (``add``), read by ``_settled``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[int, _Sent] = {}
        self.order: list[int] = []  # stamps in publishing order, not yet settled
        self.processed = 0  # frames settled with outputs: the node's steering buffer holds as many
        self.drop_timeout = MIN_DROP_TIMEOUT_S
        self._last_log_time: int | None = None

    def expect(self, frame: ReplayFrame) -> None:
        """Register ``frame`` as published now; a slow recording rate widens the drop timeout."""
        with self.lock:
            if self._last_log_time is not None:
                period_s = (frame.log_time - self._last_log_time) / 1e9
                self.drop_timeout = max(self.drop_timeout, 10 * period_s)
            self._last_log_time = frame.log_time
            self.sent[frame.stamp] = _Sent(frame, time.monotonic())
            self.order.append(frame.stamp)

    def add(self, key: str, stamp: int, value: Any) -> None:
        with self.lock:
            entry = self.sent.get(stamp)
            if entry is not None:
                entry.outputs[key] = value
                entry.last_arrival = time.monotonic()


def _decode_output(key: str, msg: Any) -> Any:
    from mtl_perception.ros.conversions import image_to_numpy

    if key == "steering":
        names = list(msg.name)
        return float(msg.position[names.index("steering")]) if "steering" in names else None
    if key == "disparity":
        # Back to the pipeline's map (NaN = invalid), so both replay modes score the same values.
        return disparity_from_message_values(image_to_numpy(msg.image, ("32FC1",)), msg.min_disparity)
    encoding = "mono8" if key == "semantic" else "32FC1"
    return np.array(image_to_numpy(msg, (encoding,)))


def node_command(options: ReplayOptions, info: ModelInfo) -> list[str]:
    """`mtl-perception run` for the replay node: namespaced, sim time, the replay's model and backend."""
    command = [sys.executable, "-m", "mtl_perception.cli", "run", info.mode, "--node-name", NODE_NAME]
    if options.params_file is not None:
        command += ["--params-file", str(options.params_file)]
    command += [
        "--ros-args",
        "-r", f"__ns:={NAMESPACE}",
        "-p", f"model_file_path:={options.model.resolve()}",
        "-p", f"backend:={options.backend}",
        "-p", "use_sim_time:=true",
        "-p", "output_resolution:=input",
    ]  # fmt: skip
    if options.threads:
        command += ["-p", f"threads:={options.threads}"]
    return command


def node_results(
    frames: Iterator[ReplayFrame], options: ReplayOptions, info: ModelInfo, log_path: Path
) -> Iterator[FrameResult]:
    """Play ``frames`` into a freshly started node and yield each frame with its outputs or a drop."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from stereo_msgs.msg import DisparityImage

    domain_id = private_domain_id()
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    # The player publishes the camera images: it needs the large-image profile as much as the node.
    apply_large_image_profile(env)
    # This process joins the same private, localhost-only DDS domain (read by rmw at init).
    saved = {
        k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", *PROFILE_VARIABLES)
    }
    os.environ.update({k: env[k] for k in saved if k in env})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            node_command(options, info), env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        player = rclpy.create_node("mtl_replay_player", namespace=NAMESPACE, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(player)
        spinner = BackgroundSpinner(executor, name="replay_spin")
        collector = _OutputCollector()
        try:
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            inputs = {
                "left": player.create_publisher(
                    Image, "left/image_rect" if info.is_stereo else "image_rect", reliable
                ),
                "left_info": player.create_publisher(
                    CameraInfo, "left/camera_info" if info.is_stereo else "camera_info", reliable
                ),
            }
            if info.is_stereo:
                inputs["right"] = player.create_publisher(Image, "right/image_rect", reliable)
                inputs["right_info"] = player.create_publisher(CameraInfo, "right/camera_info", reliable)
            clock = player.create_publisher(Clock, "/clock", reliable)
            types = {"disparity": DisparityImage, "steering": JointState}
            for key, topic in OUTPUT_TOPICS.items():
                player.create_subscription(
                    types.get(key, Image),
                    topic,
                    lambda msg, key=key: collector.add(
                        key,
                        msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                        _decode_output(key, msg),
                    ),
                    QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                )
            spinner.start()
            _wait_for_node(process, inputs.values(), player, log_path)
            yield from _play(frames, options, info, collector, inputs, clock, process, log_path)
        finally:
            spinner.stop()
            player.destroy_node()
            rclpy.try_shutdown(context=context)
            _stop(process)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _wait_for_node(process: subprocess.Popen, publishers: Any, player: Any, log_path: Path) -> None:
    """Until the node subscribes to every input and publishes its outputs, or it exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"the node exited with status {process.returncode}: {_log_tail(log_path)}")
        if all(p.get_subscription_count() > 0 for p in publishers) and player.count_publishers(
            f"{NAMESPACE}/semantic"
        ):
            return
        time.sleep(0.1)
    raise UserError(f"the node did not come up within {STARTUP_TIMEOUT_S:.0f} s: {_log_tail(log_path)}")


def _play(
    frames: Iterator[ReplayFrame],
    options: ReplayOptions,
    info: ModelInfo,
    collector: _OutputCollector,
    inputs: dict[str, Any],
    clock: Any,
    process: subprocess.Popen,
    log_path: Path,
) -> Iterator[FrameResult]:
    """Publish the frames at their recorded times (a thread) and yield each one once it settles.

    Publishing runs on its own thread so evaluating the results here never delays the playback.
    """
    required = expected_outputs(info)
    steering_path = steering_path_for(options.model)  # the node publishes steering only with it
    steering = read_model_info(steering_path).window if steering_path.is_file() else None
    failure: list[BaseException] = []
    player = threading.Thread(
        target=_publish_frames, args=(frames, options.rate, collector, inputs, clock, failure), daemon=True
    )
    deferred = _DeferredResults(DEFERRED_RESULTS_BYTES)
    player.start()
    while player.is_alive():
        if process.poll() is not None:
            yield from deferred.drain()
            raise UserError(f"the node exited with status {process.returncode}: {_log_tail(log_path)}")
        deferred.extend(_settled(collector, required, steering, time.monotonic(), final=False))
        yield from deferred.overflow()
        time.sleep(0.01)
    deadline = time.monotonic() + collector.drop_timeout
    while collector.order and time.monotonic() < deadline:
        deferred.extend(_settled(collector, required, steering, time.monotonic(), final=False))
        time.sleep(0.02)
    deferred.extend(_settled(collector, required, steering, float("inf"), final=True))
    yield from deferred.drain()
    if failure:  # the bag failed part-way: what was played has been yielded, now report it
        raise failure[0]


class _DeferredResults:
    """Settled frames held until playback ends, within a memory budget (oldest handed on first)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._results: deque[tuple[FrameResult, int]] = deque()
        self._bytes = 0
        self._warned = False

    def extend(self, results: Iterator[FrameResult]) -> None:
        for result in results:
            size = _result_bytes(result)
            self._results.append((result, size))
            self._bytes += size

    def overflow(self) -> Iterator[FrameResult]:
        """The oldest results beyond the budget: these are evaluated while the node still runs."""
        while self._bytes > self.budget_bytes and self._results:
            if not self._warned:
                self._warned = True
                log.warning(
                    "more than %d MiB of results held back: evaluating alongside playback from now on, so "
                    "the node shares the CPU with scoring (expect more drops than on a robot)",
                    self.budget_bytes // 2**20,
                )
            yield self._pop()

    def drain(self) -> Iterator[FrameResult]:
        while self._results:
            yield self._pop()

    def _pop(self) -> FrameResult:
        result, size = self._results.popleft()
        self._bytes -= size
        return result


def _result_bytes(result: FrameResult) -> int:
    frame, prediction, _ = result
    arrays = [getattr(frame, name) for name in ("left", "right", "semantic", "disparity", "depth")]
    arrays += list((prediction or {}).values())
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def _publish_frames(
    frames: Iterator[ReplayFrame],
    rate: float,
    collector: _OutputCollector,
    inputs: dict[str, Any],
    clock: Any,
    failure: list[BaseException],
) -> None:
    """Publish /clock, camera_info and the images of each frame at its log time / ``rate``."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import Header

    from mtl_perception.ros.conversions import numpy_to_image

    start_wall = start_log = None
    try:
        for frame in frames:
            now = time.monotonic()
            if start_wall is None:
                start_wall, start_log = now, frame.log_time
            else:
                wait = start_wall + (frame.log_time - start_log) / 1e9 / rate - now
                if wait > 0:
                    time.sleep(wait)
            stamp = Time(sec=frame.stamp // 1_000_000_000, nanosec=frame.stamp % 1_000_000_000)
            clock.publish(Clock(clock=stamp))
            for role in ("left_info", "right_info"):
                value = getattr(frame, role)
                if role in inputs and value is not None:
                    inputs[role].publish(
                        _camera_info(value, Header(stamp=stamp, frame_id=value["header_frame_id"]))
                    )
            collector.expect(frame)
            header = Header(stamp=stamp, frame_id=frame.frame_id)
            inputs["left"].publish(numpy_to_image(frame.left, frame.encoding, header))
            if "right" in inputs and frame.right is not None:
                inputs["right"].publish(numpy_to_image(frame.right, frame.encoding, header))
    except Exception as exc:  # handed to the consuming generator, which re-raises it
        failure.append(exc)


def _settled(
    collector: _OutputCollector, required: set[str], steering: int | None, now: float, final: bool
) -> Iterator[FrameResult]:
    """Yield the oldest frames whose outputs are complete (or given up on as dropped), in order.

    ``steering`` is the steering graph's window (None: no graph): the node publishes steering from
    the window-th frame it processes on, so only those frames wait for it. A restart of the node's
    window (a drop, a stamp gap) means some of them get none; they wait only until a later frame is
    done, and are then scored as frames with an incomplete window. Waiting too little would lose a
    steering value that was on its way, so the rule errs on the side of waiting.
    """
    while True:
        with collector.lock:
            if not collector.order:
                return
            entry = collector.sent[collector.order[0]]
            complete = required <= entry.outputs.keys()
            later_done = any(required <= collector.sent[s].outputs.keys() for s in collector.order[1:])
            awaits_steering = steering is not None and collector.processed + 1 >= steering
            # Steering comes on its own topic: wait for it unless a later frame is already done.
            if complete and (not awaits_steering or "steering" in entry.outputs or later_done or final):
                result = _prediction(entry), (entry.last_arrival - entry.wall) * 1e3
                collector.processed += 1
            elif final or (not complete and now - entry.wall > collector.drop_timeout):
                result = None, None
            elif not entry.outputs and later_done:
                # The node works newest-first and publishes all of a frame's outputs before the next
                # frame: a later frame is done and this one has nothing, so it was skipped.
                result = None, None
            else:
                return
            del collector.sent[collector.order.pop(0)]
        yield entry.frame, *result


def _camera_info(info: dict[str, Any], header: Any) -> Any:
    """sensor_msgs/CameraInfo (rclpy) from rosbag_io's camera_info dict."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(header=header, width=info["width"], height=info["height"])
    msg.distortion_model = info["distortion_model"]
    msg.d, msg.k, msg.r, msg.p = list(info["d"]), info["k"], info["r"], info["p"]
    return msg


def _prediction(entry: _Sent) -> Prediction:
    return {k: v for k, v in entry.outputs.items() if v is not None}


def _log_tail(log_path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return f"see {log_path}:\n" + "\n".join(tail)
    return f"see {log_path}"


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the node shuts down cleanly), then terminate if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(2)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=5)
