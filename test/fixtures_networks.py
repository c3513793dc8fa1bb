"""Tiny network configs and inputs shared by the networks tests (real timm backbone, small widths)."""

from __future__ import annotations

import dataclasses

import torch

from mtl_perception.networks import MonoNetConfig, StereoNetConfig

TINY_SIZE = (64, 128)


def tiny_stereo_config(**overrides: object) -> StereoNetConfig:
    """Untrained stereo net at 64x128 with narrow decoders."""
    config = StereoNetConfig(
        pretrained=False,
        input_size=TINY_SIZE,
        decoder_channels=16,
        matching_channels=8,
        aggregation_channels=4,
        refine_channels=8,
        max_disparity=16,
    )
    return dataclasses.replace(config, **overrides)


def tiny_mono_config(**overrides: object) -> MonoNetConfig:
    """Untrained mono net at 64x128 with narrow decoders."""
    config = MonoNetConfig(pretrained=False, input_size=TINY_SIZE, decoder_channels=16)
    return dataclasses.replace(config, **overrides)


def random_images(count: int, batch: int = 2, size: tuple[int, int] = TINY_SIZE, seed: int = 0):
    """``count`` deterministic Nx3xHxW RGB batches in 0..1."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 3, *size, generator=generator) for _ in range(count))
