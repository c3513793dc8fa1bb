"""Inference backends (TensorRT / ONNX Runtime / PyTorch) and the ROS-free pipeline.

Public API: ``create_backend`` -> ``Backend``; ``Pipeline(backend).process(...)`` -> ``PipelineResult``.
"""

from mtl_perception.model_info import ModelFileError, ModelInfo, read_model_info
from mtl_perception.runtime.backend import BACKEND_KINDS, Backend, BackendUnavailableError, create_backend
from mtl_perception.runtime.pipeline import CameraModel, InputError, Pipeline, PipelineResult

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "BackendUnavailableError",
    "CameraModel",
    "InputError",
    "ModelFileError",
    "ModelInfo",
    "Pipeline",
    "PipelineResult",
    "create_backend",
    "read_model_info",
]
