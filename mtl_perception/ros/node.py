"""The perception node: ROS messages in, the runtime pipeline, ROS messages out.

The node holds no model logic. Subscription callbacks only cache camera_info and store the newest
matched frame; one worker thread runs inference on the newest frame and publishes, so a slow model
drops old frames (counted) instead of queueing them.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.event_handler import (
    QoSMessageLostInfo,
    QoSRequestedIncompatibleQoSInfo,
    SubscriptionEventCallbacks,
    UnsupportedEventTypeError,
)
from rclpy.exceptions import ParameterException
from rclpy.impl.logging_severity import LoggingSeverity
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_policy_name_from_kind,
    qos_profile_sensor_data,
)
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header
from std_srvs.srv import SetBool
from stereo_msgs.msg import DisparityImage
from visualization_msgs.msg import Marker

from mtl_perception.contract import OutputPolicy
from mtl_perception.errors import UserError
from mtl_perception.model_info import steering_path_for
from mtl_perception.ros.conversions import (
    InvalidMessageError,
    compressed_to_numpy,
    disparity_image,
    image_to_numpy,
    intrinsics_from_camera_info,
    numpy_to_image,
    scaled_camera_info,
    stereo_intrinsics,
)
from mtl_perception.ros.diagnostics import NodeStatistics, format_stages
from mtl_perception.ros.params import NodeParameters, apply_changes, declare_parameters
from mtl_perception.ros.resources import default_model_path
from mtl_perception.ros.sync import StampedPair, StereoSynchronizer
from mtl_perception.ros.visualization import steering_marker, steering_message
from mtl_perception.runtime import Backend, CameraModel, InputError, Pipeline, PipelineResult, create_backend

NODE_NAME = "mtl_perception"
OUTPUT_DEPTH = 5  # keep-last depth of every publisher and subscription
# DisparityImage.delta_d: the network regresses continuous float disparity, so there is no true
# quantisation step; 1/16 px is the step stereo_image_proc publishes (fixed-point SGBM) and what
# consumers use to size disparity histograms, and it is exactly representable in float32.
DELTA_D = 1.0 / 16.0
WARN_THROTTLE_S = 2.0
DIAGNOSTICS_PERIOD_S = 1.0


def qos_profile(name: str) -> QoSProfile:
    """The QoS named by an ``input_qos`` / ``output_qos`` parameter value."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    reliability = {
        "reliable": QoSReliabilityPolicy.RELIABLE,
        "best_effort": QoSReliabilityPolicy.BEST_EFFORT,
        "default": QoSReliabilityPolicy.RELIABLE,
    }[name]
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=OUTPUT_DEPTH if name != "default" else 10,
        reliability=reliability,
        durability=QoSDurabilityPolicy.VOLATILE,
    )


class _RosLogHandler(logging.Handler):
    """Forwards Python logging records (the runtime logs that way) to the node's ROS logger."""

    _SEVERITY: ClassVar[dict[int, LoggingSeverity]] = {
        logging.DEBUG: LoggingSeverity.DEBUG,
        logging.INFO: LoggingSeverity.INFO,
        logging.WARNING: LoggingSeverity.WARN,
        logging.ERROR: LoggingSeverity.ERROR,
        logging.CRITICAL: LoggingSeverity.FATAL,
    }

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        severity = self._SEVERITY.get(record.levelno, LoggingSeverity.INFO)
        self._ros_logger.log(self.format(record), severity)


@dataclass(frozen=True)
class _Frame:
    """One input: the mono image, or a matched stereo pair (decoded only when inferred)."""

    left: Image | CompressedImage
    right: Image | CompressedImage | None = None
    completed_at: float = 0.0  # time.perf_counter() when the frame was complete (pair matched)
    arrival_ms: float | None = None  # header stamp -> complete, node clock; None for stamp 0


@dataclass(frozen=True)
class _Outputs:
    """One inferred frame on its way to the publisher thread."""

    header: Header
    result: PipelineResult
    camera: CameraModel
    camera_info: CameraInfo
    stage_ms: dict[str, float]


def output_policy(params: NodeParameters) -> OutputPolicy:
    """The pipeline's validity policy from the node parameters of the same names."""
    return OutputPolicy(
        min_disparity=params.min_disparity,
        confidence_threshold=params.confidence_threshold,
        max_disparity=params.max_disparity,
    )


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _to_array(msg: Image | CompressedImage) -> tuple[np.ndarray, str]:
    """(array, encoding) of a raw or compressed image; raises InvalidMessageError if unusable."""
    if isinstance(msg, CompressedImage):
        return compressed_to_numpy(msg)
    return image_to_numpy(msg), msg.encoding


class PerceptionNode(Node):
    """Stereo or mono multi-task perception as a ROS 2 node (see DESIGN.md, Node topics)."""

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        parameter_defaults: NodeParameters | None = None,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, **node_kwargs)
        self._destroyed = False
        try:
            self._params = declare_parameters(self, parameter_defaults)
            self._pipeline = self._load_pipeline(self._params)
        except (ValueError, ParameterException) as exc:
            self._abandon()
            raise UserError(f"{node_name}: parameter refused: {exc}") from exc
        except UserError:
            self._abandon()
            raise
        self.mode = self._pipeline.info.mode
        self._stats = NodeStatistics(
            self.get_fully_qualified_name(),
            hardware_id=NODE_NAME,
            views=2 if self.mode == "stereo" else 1,
            stale_after_s=self._params.input_timeout_seconds,
            waiting_images=lambda: sum(self._sync.pending()),
        )
        self._stats.backend = self._pipeline.backend.name
        self._stats.steering = self._pipeline.steering_backend is not None
        self._stats.set_paused(not self._params.enable)
        try:
            warm_ms = self._pipeline.warm_up()
        except Exception as exc:  # a model that loads but cannot run: say so now, not at the first frame
            self._close_backends()
            self._abandon()
            raise UserError(f"{node_name}: the model failed its warm-up inference: {exc!r}") from exc
        self.get_logger().info(f"model warmed up before subscribing (last warm-up run {warm_ms:.0f} ms)")
        self._camera_info: dict[str, CameraInfo] = {}
        self._pending: _Frame | None = None
        self._work_ready = threading.Condition()
        self._stopping = False
        # Why the worker must restart the steering window before its next frame (None: no need).
        self._reset_steering: str | None = None
        self._sync: StereoSynchronizer[Image | CompressedImage] = StereoSynchronizer(
            self._params.queue_size,
            approximate=self._params.approximate_sync,
            tolerance_s=self._params.approximate_sync_tolerance_seconds,
            on_unmatched=self._stats.unmatched,
        )
        self._sync_problem = False
        self._qos_problems: set[str] = set()  # topics with an incompatible publisher and no message since
        self._create_publishers(qos_profile(self._params.output_qos))
        self._create_subscriptions(qos_profile(self._params.input_qos))
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, MutuallyExclusiveCallbackGroup())
        # Publishing has its own thread, so inference never waits on the middleware: a reliable
        # subscriber that falls behind made single publish calls block for 100 ms (Fast DDS's
        # max_blocking_time) in the worker. The outbox holds one frame; a newer one replaces it.
        self._outbox: _Outputs | None = None
        self._outbox_ready = threading.Condition()
        self._publisher = threading.Thread(
            target=self._publish_loop, name=f"{node_name}_publish", daemon=True
        )
        self._publisher.start()
        self._worker = threading.Thread(target=self._work_loop, name=f"{node_name}_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self.mode} perception with backend {self._pipeline.backend.name}, "
            f"input {self._pipeline.info.input_size[1]}x{self._pipeline.info.input_size[0]}, "
            f"output resolution {self._params.output_resolution}, resize {self._params.resize_mode}, "
            f"{self._params.input_transport} input images"
        )

    # -- set-up ---------------------------------------------------------------------------------

    def _load_pipeline(self, params: NodeParameters) -> Pipeline:
        """Open the model with the chosen backend (auto falls back and logs why) and check its mode."""
        log = logging.getLogger(f"mtl_perception.ros.{self.get_name()}")
        log.propagate = False
        if not log.handlers:
            log.addHandler(_RosLogHandler(self.get_logger()))
        log.setLevel(logging.INFO)
        expected_mode = params.mode if params.mode != "auto" else "stereo"
        model_path = (
            Path(params.model_file_path) if params.model_file_path else default_model_path(expected_mode)
        )

        def open_backend(kind: str, path: Path) -> Backend:
            return create_backend(
                kind,
                path,
                engine_path=params.engine_file_path or None,
                force_engine_update=params.force_engine_update,
                fp16=params.enable_fp16,
                threads=params.threads or None,
                spin_wait=params.cpu_spin_wait,
                logger=log,
            )

        backend = open_backend(params.backend, model_path)
        if params.mode != "auto" and backend.info.mode != params.mode:
            backend.close()
            raise UserError(
                f"{model_path} is a {backend.info.mode} model but the node's mode is {params.mode}; "
                f"set mode to auto or {backend.info.mode}, or point model_file_path at a {params.mode} model"
            )
        steering_path = steering_path_for(model_path)
        steering = None
        if steering_path.is_file():
            # The steering graph is ONNX only; the torch backend has no checkpoint for it.
            steering = open_backend("auto" if params.backend == "torch" else params.backend, steering_path)
        else:
            self.get_logger().info(f"no steering graph at {steering_path}; `steering` will not be published")
        return Pipeline(
            backend,
            output_resolution=params.output_resolution,
            resize_mode=params.resize_mode,
            steering_backend=steering,
            steering_max_gap=params.steering_max_gap_seconds or None,
            policy=output_policy(params),
        )

    def _create_publishers(self, qos: QoSProfile) -> None:
        self._pub_semantic = self.create_publisher(Image, "semantic", qos)
        self._pub_semantic_color = self.create_publisher(Image, "semantic/color", qos)
        self._pub_semantic_uncertainty = self.create_publisher(Image, "semantic/uncertainty", qos)
        self._pub_semantic_confidence = self.create_publisher(Image, "semantic/confidence", qos)
        self._pub_depth = self.create_publisher(Image, "depth", qos)
        self._pub_depth_info = self.create_publisher(CameraInfo, "depth/camera_info", qos)
        self._pub_depth_uncertainty = self.create_publisher(Image, "depth/uncertainty", qos)
        self._pub_disparity = (
            self.create_publisher(DisparityImage, "disparity", qos) if self.mode == "stereo" else None
        )
        self._pub_steering = self.create_publisher(JointState, "steering", qos)
        self._pub_steering_marker = self.create_publisher(Marker, "steering/marker", qos)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_subscriptions(self, qos: QoSProfile) -> None:
        # One mutually exclusive group: the callbacks are short and the synchronizer's counts stay
        # exact; inference runs in the worker thread, not here.
        group = MutuallyExclusiveCallbackGroup()
        stereo = self.mode == "stereo"
        cameras = {"mono": "camera_info"}
        if stereo:
            cameras = {"left": "left/camera_info", "right": "right/camera_info"}
        # camera_info first: rclpy's executor takes ready subscriptions in creation order, so an
        # image arriving together with the first camera_info finds it cached instead of being refused.
        for camera, topic in cameras.items():
            self._subscribe(CameraInfo, topic, functools.partial(self._on_camera_info, camera), qos, group)
        images: dict[str, Callable[[Any], None]] = {"image_rect": self._on_mono_image}
        if stereo:
            images = {"left/image_rect": self._on_left_image, "right/image_rect": self._on_right_image}
        # image_transport's layout: the compressed stream of `<topic>` is `<topic>/compressed`.
        compressed = self._params.input_transport == "compressed"
        for topic, callback in images.items():
            if compressed:
                self._subscribe(CompressedImage, f"{topic}/compressed", callback, qos, group)
            else:
                self._subscribe(Image, topic, callback, qos, group)

    def _subscribe(
        self,
        msg_type: type,
        topic: str,
        callback: Callable[[Any], None],
        qos: QoSProfile,
        group: CallbackGroup,
    ) -> None:
        """Subscribe with middleware events (incompatible QoS, lost messages) fed to diagnostics."""

        def on_message(msg: Any) -> None:
            if topic in self._qos_problems:  # data arrives after all: the WARN has served its purpose
                self._qos_problems.discard(topic)
                self._stats.set_condition(f"qos {topic}", None)
            callback(msg)

        def on_incompatible_qos(event: QoSRequestedIncompatibleQoSInfo) -> None:
            self._on_incompatible_qos(topic, event)

        def on_lost(event: QoSMessageLostInfo) -> None:
            self._on_message_lost(topic, event)

        def subscribe(events: SubscriptionEventCallbacks) -> None:
            self.create_subscription(
                msg_type, topic, on_message, qos, callback_group=group, event_callbacks=events
            )

        try:
            subscribe(SubscriptionEventCallbacks(incompatible_qos=on_incompatible_qos, message_lost=on_lost))
        except UnsupportedEventTypeError:  # an RMW without message-lost events: go without them
            subscribe(SubscriptionEventCallbacks(incompatible_qos=on_incompatible_qos))

    # -- middleware events -----------------------------------------------------------------------

    def _on_incompatible_qos(self, topic: str, event: QoSRequestedIncompatibleQoSInfo) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        name = self.resolve_topic_name(topic)
        message = (
            f"incompatible QoS on {name}: a publisher's {policy} policy does not match input_qos = "
            f"{self._params.input_qos}, so none of its messages arrive (cameras usually publish "
            "best effort: input_qos sensor_data)"
        )
        self._qos_problems.add(topic)
        self._stats.set_condition(f"qos {topic}", message)
        self._stats.note("incompatible QoS", f"{name}: {policy} ({event.total_count} publishers in all)")
        self.get_logger().warning(message)  # once per publisher discovered: no throttle needed

    def _on_message_lost(self, topic: str, event: QoSMessageLostInfo) -> None:
        self._stats.lost(event.total_count_change)
        self.get_logger().warning(
            f"{event.total_count_change} messages lost on {self.resolve_topic_name(topic)} before "
            "reaching the node (large images over UDP: see config/fastdds_large_images.xml)",
            throttle_duration_sec=WARN_THROTTLE_S,
        )

    # -- input callbacks (cheap: never block on inference) ---------------------------------------

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        self._camera_info[camera] = msg

    def _on_mono_image(self, msg: Image | CompressedImage) -> None:
        if not self._params.enable or self._stopping:  # ignored, not taken in: nothing to count
            return
        self._stats.image_received()
        self._submit(self._frame(msg))

    def _on_left_image(self, msg: Image | CompressedImage) -> None:
        self._on_stereo_image(msg, self._sync.push_left)

    def _on_right_image(self, msg: Image | CompressedImage) -> None:
        self._on_stereo_image(msg, self._sync.push_right)

    def _on_stereo_image(
        self,
        msg: Image | CompressedImage,
        push: Callable[[int, Image | CompressedImage], StampedPair[Image | CompressedImage] | None],
    ) -> None:
        if not self._params.enable or self._stopping:
            return
        self._stats.image_received()
        # Images that leave the synchronizer without a partner are counted by its on_unmatched.
        pair = push(_stamp_ns(msg.header), msg)
        if pair is not None:
            if self._sync_problem:
                self._sync_problem = False
                self._stats.set_condition("sync", None)
            self._submit(self._frame(pair.left, pair.right))
            return
        mismatch = self._sync.mismatch()
        if mismatch is not None:
            self._report_sync_mismatch(*mismatch)

    def _report_sync_mismatch(self, left_ns: int, right_ns: int) -> None:
        gap_ms = abs(left_ns - right_ns) / 1e6
        if self._params.approximate_sync:
            message = (
                f"no left/right pair within approximate_sync_tolerance_seconds = "
                f"{self._params.approximate_sync_tolerance_seconds} (latest stamps {gap_ms:.3f} ms "
                "apart); raise the tolerance if the cameras really are that far apart"
            )
        else:
            message = (
                f"left and right stamps never match exactly (latest stamps {gap_ms:.3f} ms apart): the "
                "cameras are not hardware-synchronised; set approximate_sync: true with "
                "approximate_sync_tolerance_seconds above the usual gap"
            )
        self._sync_problem = True
        self._stats.set_condition("sync", message)
        self.get_logger().warning(message, throttle_duration_sec=WARN_THROTTLE_S)

    def _frame(self, left: Image | CompressedImage, right: Image | CompressedImage | None = None) -> _Frame:
        """A complete frame, stamped with when it became complete (for the stage timings)."""
        stamp_ns = _stamp_ns(left.header)
        arrival_ms = None if stamp_ns == 0 else (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        return _Frame(left, right, completed_at=time.perf_counter(), arrival_ms=arrival_ms)

    def _submit(self, frame: _Frame) -> None:
        """Make ``frame`` the next one to process, replacing (and counting) an unprocessed one."""
        self._stats.input_received()
        with self._work_ready:
            if not self._params.enable or self._stopping:  # paused or stopped since the callback began
                self._stats.dropped()
                return
            if self._pending is not None:
                self._stats.dropped()
                # Steering must not span a frame that was never inferred. Stamps alone miss it when
                # most frames are dropped: the median gap, the period estimate, is then a drop.
                self._reset_steering = self._reset_steering or "a frame was dropped (the node is busy)"
            self._pending = frame
            self._work_ready.notify()

    # -- inference worker ------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            with self._work_ready:
                self._work_ready.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                frame, self._pending = self._pending, None
                reset, self._reset_steering = self._reset_steering, None
            if reset is not None:
                self._restart_steering(reset)
            try:
                self._process(frame)
            except Exception as exc:  # the only worker must survive a failing frame; log and go on
                self.get_logger().error(f"inference failed: {exc!r}", throttle_duration_sec=WARN_THROTTLE_S)
                self._stats.rejected(f"inference failed: {exc!r}")
                self._restart_steering("a frame failed inference")

    def _restart_steering(self, reason: str) -> None:
        """Empty the steering window (worker thread only), counting it when it held frames."""
        if self._pipeline.steering.frames and self._stats.steering:
            self._stats.steering_restarted(reason)
        self._pipeline.reset()

    def _process(self, frame: _Frame) -> None:
        header = frame.left.header
        started = time.perf_counter()
        try:
            left, encoding = _to_array(frame.left)
            right = None
            if frame.right is not None:
                right, right_encoding = _to_array(frame.right)
                if right_encoding != encoding:
                    raise InvalidMessageError(f"left {encoding} and right {right_encoding} encodings differ")
            decoded = time.perf_counter()
            camera, camera_info = self._camera_for(left.shape[1], left.shape[0])
            stamp_ns = _stamp_ns(header)
            # Stamp 0 means "not stamped": such frames keep the window unchecked, as without a stamp.
            stamp = stamp_ns / 1e9 if stamp_ns else None
            result = self._pipeline.process(left, right, encoding=encoding, camera=camera, stamp=stamp)
        except (InvalidMessageError, InputError) as exc:
            self._reject(str(exc))
            self._restart_steering("a frame was rejected")
            return
        if result.steering_restart is not None and self._stats.steering:
            self._stats.steering_restarted(result.steering_restart)
        stage_ms = {
            "queue": (started - frame.completed_at) * 1e3,
            "decode": (decoded - started) * 1e3,
            "pre": result.timings["pre_ms"],
            "infer": result.timings["infer_ms"],
            "post": result.timings["post_ms"],
        }
        if frame.arrival_ms is not None:
            stage_ms["arrival"] = frame.arrival_ms
        with self._outbox_ready:
            if self._outbox is not None:  # inferred but not yet sent: the newer frame wins
                self._stats.dropped()
            self._outbox = _Outputs(header, result, camera, camera_info, stage_ms)
            self._outbox_ready.notify()

    # -- publisher thread ------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            with self._outbox_ready:
                self._outbox_ready.wait_for(lambda: self._outbox is not None or self._stopping)
                if self._outbox is None:  # stopping, nothing left to send
                    return
                outputs, self._outbox = self._outbox, None
            try:
                self._send(outputs)
            except Exception as exc:  # a failed publish (e.g. context shut down) must not end the thread
                self.get_logger().error(f"publishing failed: {exc!r}", throttle_duration_sec=WARN_THROTTLE_S)
                self._stats.rejected(f"publishing failed: {exc!r}")

    def _send(self, outputs: _Outputs) -> None:
        header, result = outputs.header, outputs.result
        started = time.perf_counter()
        self._publish(header, result, outputs.camera, outputs.camera_info)
        self._stats.stages({**outputs.stage_ms, "publish": (time.perf_counter() - started) * 1e3})
        stamp = Time.from_msg(header.stamp)
        latency_ms = None
        if stamp.nanoseconds == 0:
            # A latency from stamp 0 would be decades: keep it out of the statistics and say why.
            self._stats.zero_stamp()
            self.get_logger().warning(
                "input header stamp is 0 (the camera driver does not stamp its images): outputs carry "
                "stamp 0, latency cannot be measured, and stereo sync cannot tell frames apart",
                throttle_duration_sec=WARN_THROTTLE_S,
            )
        else:
            latency_ms = (self.get_clock().now() - stamp).nanoseconds / 1e6
        self._stats.published(
            latency_ms, result.timings.get("infer_ms", float("nan")), steering=result.steering is not None
        )

    def _camera_for(self, width: int, height: int) -> tuple[CameraModel, CameraInfo]:
        """CameraModel for the pipeline and the camera_info of the image the outputs align with."""
        if self.mode == "stereo":
            left, right = self._camera_info.get("left"), self._camera_info.get("right")
            if left is None or right is None:
                raise InvalidMessageError(
                    "no camera_info received yet on left/camera_info and right/camera_info"
                )
            intrinsics = stereo_intrinsics(left, right)
            reference = left
        else:
            reference = self._camera_info.get("mono")
            if reference is None:
                raise InvalidMessageError("no camera_info received yet on camera_info")
            intrinsics = intrinsics_from_camera_info(reference)
        if (intrinsics.width, intrinsics.height) != (width, height):
            raise InvalidMessageError(
                f"camera_info is {intrinsics.width}x{intrinsics.height} but the image is {width}x{height}"
            )
        return CameraModel(intrinsics.fx, intrinsics.baseline, intrinsics.principal_offset), reference

    def _reject(self, reason: str) -> None:
        self.get_logger().warning(f"skipping frame: {reason}", throttle_duration_sec=WARN_THROTTLE_S)
        self._stats.rejected(reason)

    # -- outputs ---------------------------------------------------------------------------------

    def _publish(
        self, header: Header, result: PipelineResult, camera: CameraModel, camera_info: CameraInfo
    ) -> None:
        # The maps are published as the pipeline made them (validity policy included): no
        # node-only transformation, so replay and Python users see what subscribers see.
        out_h, out_w = result.semantic.shape
        self._pub_semantic.publish(numpy_to_image(result.semantic, "mono8", header))
        if self._pub_semantic_color.get_subscription_count() > 0:
            self._pub_semantic_color.publish(numpy_to_image(result.semantic_color(), "rgb8", header))
        if result.semantic_uncertainty is not None:
            self._pub_semantic_uncertainty.publish(
                numpy_to_image(result.semantic_uncertainty, "32FC1", header)
            )
        # Calibration tools (replay's reliability diagram) want it; nobody else pays for it.
        confidence = result.semantic_confidence
        if confidence is not None and self._pub_semantic_confidence.get_subscription_count() > 0:
            self._pub_semantic_confidence.publish(numpy_to_image(confidence, "32FC1", header))
        if result.disparity is not None and self._pub_disparity is not None:
            self._pub_disparity.publish(
                disparity_image(
                    result.disparity,
                    header,
                    focal_length=camera.fx * result.scale_x,
                    baseline=camera.baseline,
                    # The frame's own range: the policy may have changed since it was inferred.
                    min_disparity=result.min_disparity,
                    max_disparity=result.max_disparity,
                    delta_d=DELTA_D,
                )
            )
        if result.depth is not None:
            self._pub_depth.publish(numpy_to_image(result.depth, "32FC1", header))
            self._pub_depth_info.publish(scaled_camera_info(camera_info, out_w, out_h, header))
            if result.depth_uncertainty is not None:
                self._pub_depth_uncertainty.publish(numpy_to_image(result.depth_uncertainty, "32FC1", header))
        if result.steering is not None:
            self._pub_steering.publish(steering_message(header, result.steering))
            self._pub_steering_marker.publish(steering_marker(header, result.steering))

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=[self._stats.to_status()])
        array.header.stamp = self.get_clock().now().to_msg()
        self._pub_diagnostics.publish(array)

    # -- parameters and pause --------------------------------------------------------------------

    def _check_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        _, problem = apply_changes(self._params, changes)
        return SetParametersResult(successful=problem is None, reason=problem or "")

    def _apply_parameters(self, changes: list[Parameter]) -> None:
        self._params, _ = apply_changes(self._params, changes)
        self._pipeline.policy = output_policy(self._params)
        self._pipeline.steering_max_gap = self._params.steering_max_gap_seconds or None
        self._sync.configure(
            approximate=self._params.approximate_sync,
            tolerance_s=self._params.approximate_sync_tolerance_seconds,
        )
        self._stats.stale_after_s = self._params.input_timeout_seconds
        if self._stats.paused != (not self._params.enable):
            self._stats.set_paused(not self._params.enable)
            if not self._params.enable:
                # A pause is a gap in the stream: steering must not mix frames from before it, nor
                # may an image from before it pair with one from after (counted as unmatched).
                with self._work_ready:
                    if self._pending is not None:  # accepted but never inferred: count it
                        self._stats.dropped()
                    self._pending = None
                    self._reset_steering = "paused"
                self._sync.flush()
            self.get_logger().info("resumed" if self._params.enable else "paused")

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        outcome = self.set_parameters([Parameter("enable", value=bool(request.data))])[0]
        response.success = outcome.successful
        response.message = ("enabled" if request.data else "paused") if outcome.successful else outcome.reason
        return response

    # -- introspection and shutdown --------------------------------------------------------------

    @property
    def parameters(self) -> NodeParameters:
        """The parameter values in effect."""
        return self._params

    @property
    def statistics(self) -> NodeStatistics:
        """Frame counters and rolling rates (the numbers behind `/diagnostics`)."""
        return self._stats

    def destroy_node(self) -> None:
        """Stop the worker, release the backend, then destroy the ROS node.

        Idempotent: on SIGINT rclpy's context shutdown destroys every node of the context, and the
        caller's own clean-up then destroys it again (its log could no longer reach /rosout).
        """
        if self._destroyed:
            return
        self._destroyed = True
        with self._work_ready:
            self._stopping = True
            self._work_ready.notify_all()
        self._worker.join(timeout=10.0)
        with self._outbox_ready:  # the last inferred frame is still sent, then the thread ends
            self._outbox_ready.notify_all()
        self._publisher.join(timeout=10.0)
        # Close the books: a frame still waiting for the worker was dropped, and stereo images still
        # waiting for a partner are unmatched, so the summary's buckets add up to what came in.
        with self._work_ready:
            if self._pending is not None:
                self._stats.dropped()
                self._pending = None
        self._sync.flush()
        summary = f"{self._stats.summary()}; {format_stages(self._stats.stage_percentiles())}"
        self._close_backends()
        logger_name = self.get_logger().name
        super().destroy_node()
        # Logged once the node is gone: after a SIGINT the context is already shut down, and a node
        # logger would fail to reach /rosout; this one only goes to the console and the log file.
        get_logger(logger_name).info(summary)

    def _abandon(self) -> None:
        """Undo a failed construction; a later destroy_node (context shutdown) then does nothing."""
        self._destroyed = True
        super().destroy_node()

    def _close_backends(self) -> None:
        self._pipeline.backend.close()
        if self._pipeline.steering_backend is not None:
            self._pipeline.steering_backend.close()
