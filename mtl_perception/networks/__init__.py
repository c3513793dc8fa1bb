"""Backbone, stereo and mono multi-task networks, heads, deploy wrapper and checkpoints."""

from mtl_perception.networks.checkpoint import load_checkpoint, save_checkpoint
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
    "model_config_from_dict",
    "save_checkpoint",
]
