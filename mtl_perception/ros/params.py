"""The node's ROS parameters: one table of declarations, typed values, and validation.

Parameters that set up the model, the backend, QoS or queues are read-only: changing them live
would need a restart of the node's pipeline, so they are refused with a message saying so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from mtl_perception.runtime.backend import BACKEND_KINDS
from mtl_perception.runtime.pipeline import RESIZE_MODES

QOS_CHOICES = ("sensor_data", "reliable", "best_effort", "default")
MODE_CHOICES = ("auto", "stereo", "mono")
OUTPUT_RESOLUTIONS = ("input", "model")
# image_transport's names: `compressed` subscribes to `<image topic>/compressed` (CompressedImage).
INPUT_TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class NodeParameters:
    """Current parameter values, typed. Field names are the ROS parameter names."""

    model_file_path: str = ""
    engine_file_path: str = ""
    force_engine_update: bool = False
    enable_fp16: bool = True
    backend: str = "auto"
    mode: str = "auto"
    queue_size: int = 5
    approximate_sync: bool = False
    approximate_sync_tolerance_seconds: float = 0.005
    input_qos: str = "sensor_data"
    output_qos: str = "reliable"
    confidence_threshold: float = 0.0
    min_disparity: float = 0.0
    max_disparity: float = 0.0
    output_resolution: str = "input"
    resize_mode: str = "stretch"
    input_transport: str = "raw"
    input_timeout_seconds: float = 3.0
    steering_max_gap_seconds: float = 0.0
    threads: int = 0
    cpu_spin_wait: bool = False
    enable: bool = True


@dataclass(frozen=True)
class _Spec:
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None


SPECS: dict[str, _Spec] = {
    "model_file_path": _Spec(
        "Exported model (.onnx, or .pt for the torch backend); empty = the shipped default for the mode",
        read_only=True,
    ),
    "engine_file_path": _Spec(
        "TensorRT engine file; empty = the engine cache (~/.cache/mtl_perception/engines), "
        "keyed by model hash, GPU and TensorRT version",
        read_only=True,
    ),
    "force_engine_update": _Spec("Rebuild the TensorRT engine even if a cached one matches", read_only=True),
    "enable_fp16": _Spec("Use FP16 kernels where the backend and GPU support them", read_only=True),
    "backend": _Spec("Inference backend; auto tries tensorrt, onnxruntime, torch", True, BACKEND_KINDS),
    "mode": _Spec("stereo or mono; auto = the mode stored in the model file", True, MODE_CHOICES),
    "queue_size": _Spec(
        "Unmatched images kept per camera while waiting for a stereo partner", True, range=(1, 100)
    ),
    "approximate_sync": _Spec("Match stereo images by nearest stamp instead of equal stamps"),
    "approximate_sync_tolerance_seconds": _Spec(
        "Largest stamp difference accepted by approximate sync (s)", range=(0.0, 1.0)
    ),
    "input_qos": _Spec("QoS of the image and camera_info subscriptions", True, QOS_CHOICES),
    "output_qos": _Spec("QoS of the published outputs", True, QOS_CHOICES),
    "confidence_threshold": _Spec(
        "Depth pixels whose uncertainty (m) exceeds this become NaN in `depth`; 0 = keep all",
        range=(0.0, 1000.0),
    ),
    "min_disparity": _Spec(
        "Smallest valid disparity (px, output resolution); smaller values are published as invalid",
        range=(0.0, 1024.0),
    ),
    "max_disparity": _Spec(
        "Largest disparity reported in DisparityImage (px, output resolution); 0 = the model's range",
        range=(0.0, 4096.0),
    ),
    "output_resolution": _Spec(
        "Publish at the input image size or the model's input size", True, OUTPUT_RESOLUTIONS
    ),
    "resize_mode": _Spec(
        "How an image is fitted to the model's input: stretch (both axes scaled to fill it) or "
        "letterbox (aspect kept, padded; outputs cropped back)",
        True,
        RESIZE_MODES,
    ),
    "input_transport": _Spec(
        "raw: sensor_msgs/Image on the image topics; compressed: sensor_msgs/CompressedImage "
        "(JPEG/PNG) on `<image topic>/compressed`, as image_transport publishes it",
        True,
        INPUT_TRANSPORTS,
    ),
    "input_timeout_seconds": _Spec(
        "With no input image for longer than this, /diagnostics says STALE; 0 = never",
        range=(0.0, 3600.0),
    ),
    "steering_max_gap_seconds": _Spec(
        "Longest stamp gap (s) between the frames of one steering window: a longer gap (a missing "
        "frame) or a stamp going back restarts the window, and steering is published again once the "
        "window holds that many new frames; 0 = 1.5 x the median gap of the last 32 frames",
        range=(0.0, 60.0),
    ),
    "threads": _Spec("CPU threads for the backend; 0 = library default", True, range=(0, 256)),
    "cpu_spin_wait": _Spec(
        "ONNX Runtime CPU threads busy-wait between ops: a little faster on dedicated cores, slower "
        "when other processes share them",
        read_only=True,
    ),
    "enable": _Spec("Run inference; false pauses the node (also the `~/enable` SetBool service)"),
}


def _descriptor(name: str, spec: _Spec, default: Any) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


def declare_parameters(node: Node, overrides: NodeParameters | None = None) -> NodeParameters:
    """Declare every parameter on ``node`` and return the values in effect (validated).

    ``overrides`` changes the defaults (the CLI uses it for ``run stereo|mono``); values from a
    parameter file or ``--ros-args -p`` still win. Raises ValueError on a refused value.
    """
    defaults = overrides or NodeParameters()
    for field in dataclasses.fields(NodeParameters):
        default = getattr(defaults, field.name)
        node.declare_parameter(field.name, default, _descriptor(field.name, SPECS[field.name], default))
    values = NodeParameters(
        **{f.name: node.get_parameter(f.name).value for f in dataclasses.fields(NodeParameters)}
    )
    problem = validate(values)
    if problem:
        raise ValueError(problem)
    return values


def apply_changes(current: NodeParameters, changes: list[Parameter]) -> tuple[NodeParameters, str | None]:
    """The values after ``changes`` and the reason to refuse them (None when acceptable)."""
    updates: dict[str, Any] = {}
    for parameter in changes:
        spec = SPECS.get(parameter.name)
        if spec is None:
            return current, f"unknown parameter {parameter.name!r}"
        if spec.read_only:
            return current, f"{parameter.name} is read-only; restart the node to change it"
        updates[parameter.name] = parameter.value
    proposed = dataclasses.replace(current, **updates)
    return proposed, validate(proposed)


def validate(values: NodeParameters) -> str | None:
    """Cross-field and choice checks the descriptors cannot express; None when all is well."""
    for name, spec in SPECS.items():
        value = getattr(values, name)
        if spec.choices and value not in spec.choices:
            return f"{name} = {value!r} is not one of {', '.join(spec.choices)}"
        if spec.range is not None and not (spec.range[0] <= value <= spec.range[1]):
            return f"{name} = {value} is outside [{spec.range[0]}, {spec.range[1]}]"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be finite, got {value}"
    if values.max_disparity and values.min_disparity >= values.max_disparity:
        return (
            f"min_disparity ({values.min_disparity}) must be below max_disparity ({values.max_disparity}); "
            "set max_disparity to 0 to use the model's range"
        )
    return None
