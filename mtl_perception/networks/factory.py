"""``build_model``: the one place a config becomes a network."""

from __future__ import annotations

from torch import nn

from mtl_perception.networks.config import ModelConfig, MonoNetConfig, StereoNetConfig


def build_model(config: ModelConfig) -> nn.Module:
    """Stereo or mono multi-task network for ``config`` (pretrained backbone per its fields)."""
    if isinstance(config, StereoNetConfig):
        from mtl_perception.networks.stereo import StereoMultiTaskNet

        return StereoMultiTaskNet(config)
    if isinstance(config, MonoNetConfig):
        from mtl_perception.networks.mono import MonoMultiTaskNet

        return MonoMultiTaskNet(config)
    raise TypeError(f"build_model needs a StereoNetConfig or MonoNetConfig, got {type(config).__name__}")
