"""Backbone, stereo and mono multi-task networks, heads, deploy wrapper and checkpoints."""

from mtl_perception.networks.checkpoint import (
    load_checkpoint,
    load_steering_head,
    save_checkpoint,
    save_steering_head,
)
from mtl_perception.networks.config import (
    ModelConfig,
    MonoNetConfig,
    StereoNetConfig,
    model_config_from_dict,
)
from mtl_perception.networks.deploy import DeployModel
from mtl_perception.networks.factory import build_model
from mtl_perception.networks.heads import SteeringHead

__all__ = [
    "DeployModel",
    "ModelConfig",
    "MonoNetConfig",
    "SteeringHead",
    "StereoNetConfig",
    "build_model",
    "load_checkpoint",
    "load_steering_head",
    "model_config_from_dict",
    "save_checkpoint",
    "save_steering_head",
]
