"""Tiny in-memory stereo data and a tiny training config for the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mtl_perception.training.config import TrainConfig, train_config_from_dict

HEIGHT, WIDTH = 64, 128
NUM_CLASSES = 10


class ShiftedStereoDataset(Dataset):
    """Random textures seen by a rectified pair at a per-sample constant disparity.

    Semantic labels are horizontal bands (learnable from position); every third sample lacks
    semantic labels and every fourth lacks depth, so masking is exercised in every run.
    """

    def __init__(self, length: int = 8, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.samples = [self._make(i, generator) for i in range(length)]

    @staticmethod
    def _make(index: int, generator: torch.Generator) -> dict[str, Any]:
        disparity_px = 4 + index % 5
        texture = torch.rand(3, HEIGHT, WIDTH + disparity_px, generator=generator)
        # Rectified pair: left pixel x shows up at x - d in the right view, right(x) = left(x + d).
        left = texture[:, :, :WIDTH]
        right = texture[:, :, disparity_px:]
        bands = (torch.arange(HEIGHT) * 4 // HEIGHT).view(-1, 1).expand(HEIGHT, WIDTH)
        semantic = bands.clone().to(torch.int64)
        semantic[:, :4] = 255
        disparity = torch.full((HEIGHT, WIDTH), float(disparity_px))
        disparity[:, :disparity_px] = 0.0  # no match at the left border
        fx, baseline = 50.0, 0.5
        depth = torch.where(
            disparity > 0, fx * baseline / disparity.clamp_min(1e-6), torch.zeros_like(disparity)
        )
        return {
            "left": left.contiguous(),
            "right": right.contiguous(),
            "semantic": semantic,
            "disparity": disparity,
            "depth": depth,
            "has_semantic": index % 3 != 2,
            "has_depth": index % 4 != 3,
            "steering": torch.tensor(0.0),
            "fx": torch.tensor(fx),
            "baseline": torch.tensor(baseline),
        }

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def tiny_model_dict(mode: str = "stereo") -> dict[str, Any]:
    """A small, untrained (no weight files) network at 64x128."""
    model: dict[str, Any] = {
        "mode": mode,
        "backbone": "mobilenetv3_small_050",
        "pretrained": False,
        "input_size": [HEIGHT, WIDTH],
        "decoder_channels": 16,
    }
    if mode == "stereo":
        model |= {
            "matching_channels": 8,
            "aggregation_channels": 4,
            "refine_channels": 8,
            "max_disparity": 32,
        }
    return model


def tiny_train_config(output_dir: Path, mode: str = "stereo", **train: Any) -> TrainConfig:
    """A TrainConfig for a few CPU steps on ``ShiftedStereoDataset``."""
    return train_config_from_dict(
        {
            "data": {"batch_size": 2, "workers": 0},
            "model": tiny_model_dict(mode),
            "optim": {"lr": 2e-3, "warmup_steps": 1},
            "train": {
                "max_steps": 3,
                "eval_every": 1000,
                "eval_batches": 1,
                "log_every": 1,
                "image_every": 2,
                "output_dir": str(output_dir),
            }
            | train,
            "checkpoints": {"every_steps": 1000},
        }
    )


def tiny_checkpoints(folder: Path, count: int, mode: str = "stereo") -> list[str]:
    """``count`` untrained tiny networks (seeds 0..count-1) saved as ``folder/m<seed>.pt``."""
    from mtl_perception.networks import build_model, model_config_from_dict, save_checkpoint

    config = model_config_from_dict(tiny_model_dict(mode))
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        paths.append(str(save_checkpoint(folder / f"m{seed}.pt", build_model(config), config)))
    return paths
