"""ROS test helpers: tiny exported models, a private DDS domain, and a probe node that feeds the
perception node and records everything it publishes."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from fixtures_networks import tiny_mono_config, tiny_stereo_config
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage
from visualization_msgs.msg import Marker

from mtl_perception.export.onnx_export import export_deploy_model, export_steering_head
from mtl_perception.model_info import steering_path_for
from mtl_perception.networks import DeployModel, SteeringHead, build_model
from mtl_perception.ros.conversions import numpy_to_image
from mtl_perception.ros.spinning import BackgroundSpinner

FX = 100.0
BASELINE = 0.12
STEERING_WINDOW = 2
FRAME_ID = "stereo_left_optical_frame"
# How long a test waits for something that must happen (DDS discovery, a published output). A deadline
# for a loaded CI machine, not a speed check: waits return as soon as the condition holds.
WAIT_S = 30.0

OUTPUT_TYPES: dict[str, type] = {
    "semantic": Image,
    "semantic/color": Image,
    "semantic/uncertainty": Image,
    "semantic/confidence": Image,
    "disparity": DisparityImage,
    "depth": Image,
    "depth/camera_info": CameraInfo,
    "depth/uncertainty": Image,
    "steering": JointState,
    "steering/marker": Marker,
    "/diagnostics": DiagnosticArray,
}


def export_tiny_model(directory: Path, mode: str) -> Path:
    """A randomly initialised 64x128 model (+ steering graph) exported the way `export` does it."""
    torch.manual_seed(0)
    config = tiny_stereo_config() if mode == "stereo" else tiny_mono_config()
    model = build_model(config)
    deploy = DeployModel(model).eval()
    path = directory / f"{mode}_tiny.onnx"
    export_deploy_model(deploy, config, path, simplify=False, parity_frames=1)
    export_steering_head(SteeringHead.for_model(model, window=STEERING_WINDOW), steering_path_for(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'stereo': path, 'mono': path} of tiny exported ONNX models (built once per test session)."""
    directory = tmp_path_factory.mktemp("ros_models")
    return {mode: export_tiny_model(directory, mode) for mode in ("stereo", "mono")}


@pytest.fixture
def ros_context() -> Iterator[Context]:
    """An rclpy context on a DDS domain private to this test process (no cross-talk with others)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context, domain_id=100 + os.getpid() % 100)
    yield context
    rclpy.try_shutdown(context=context)


def camera_info(width: int, height: int, *, fx: float = FX, tx: float = 0.0) -> CameraInfo:
    """Rectified pinhole camera_info; ``tx`` is P[3] = -fx * baseline for the right camera."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = FRAME_ID
    cx, cy = width / 2, height / 2
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, tx, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


@dataclass
class RosHarness:
    """The node under test plus a probe node, spun by one executor in a background thread."""

    context: Context
    probe: Node
    spinner: BackgroundSpinner
    received: dict[str, list[Any]]
    publishers: dict[str, Any]
    lock: threading.Lock

    def publish(self, topic: str, msg: Any) -> None:
        self.publishers[topic].publish(msg)

    def messages(self, topic: str) -> list[Any]:
        with self.lock:
            return list(self.received[topic])

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        """Poll ``condition`` until true or ``timeout_s`` passes (returns the final value)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    def wait_connected(self, node: Node, timeout_s: float = WAIT_S) -> None:
        """Wait until DDS discovery has matched the probe's publishers and subscriptions to ``node``."""
        ok = self.wait_for(
            lambda: (
                all(p.get_subscription_count() > 0 for p in self.publishers.values())
                and node.count_subscribers("semantic") > 0
            ),
            timeout_s,
        )
        assert ok, "DDS discovery did not connect the probe and the node"

    def latest_status(self) -> Any:
        arrays = self.messages("/diagnostics")
        return arrays[-1].status[0] if arrays else None


def start_harness(context: Context, node: Node, input_topics: dict[str, type]) -> RosHarness:
    """Spin ``node`` with a probe that publishes ``input_topics`` best-effort and records outputs."""
    probe = Node("probe", context=context)
    received: dict[str, list[Any]] = defaultdict(list)
    lock = threading.Lock()
    reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)

    def recorder(topic: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            with lock:
                received[topic].append(msg)

        return record

    for topic, msg_type in OUTPUT_TYPES.items():
        probe.create_subscription(msg_type, topic, recorder(topic), reliable)
    publishers = {t: probe.create_publisher(m, t, qos_profile_sensor_data) for t, m in input_topics.items()}
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    executor.add_node(probe)
    spinner = BackgroundSpinner(executor, name="harness_spin").start()
    return RosHarness(context, probe, spinner, received, publishers, lock)


def stop_harness(harness: RosHarness, node: Node) -> None:
    """Stop spinning (thread joined, executor shut down), destroy both nodes."""
    harness.spinner.stop()
    node.destroy_node()
    harness.probe.destroy_node()


def stamped_header(stamp_ns: int) -> Header:
    header = Header(frame_id=FRAME_ID)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def image_message(array: np.ndarray, encoding: str, stamp_ns: int) -> Image:
    return numpy_to_image(array, encoding, stamped_header(stamp_ns))
