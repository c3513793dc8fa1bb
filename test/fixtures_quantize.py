"""A tiny exported model (ONNX + its .pt checkpoint beside it) for the evaluate/quantize tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from fixtures_training import ShiftedStereoDataset, tiny_train_config

from mtl_perception.export.onnx_export import write_onnx
from mtl_perception.networks import DeployModel, load_checkpoint
from mtl_perception.networks.deploy import describe_deploy_model
from mtl_perception.training.trainer import FINAL_NAME, Trainer


def export_tiny_model(root: Path, mode: str = "stereo", train_steps: int = 0) -> Path:
    """``root/tiny.onnx`` (+ ``root/tiny.pt``): a 64x128 net trained ``train_steps`` CPU steps.

    A few dozen steps on ``ShiftedStereoDataset`` give varied class maps and disparities (an
    untrained net predicts one class everywhere), which quantization drift tests need.
    """
    config = tiny_train_config(root / "train", mode=mode, max_steps=max(train_steps, 1))
    data = ShiftedStereoDataset(8)
    Trainer(config, train_set=data, val_set=data).train()
    checkpoint = shutil.copy(root / "train" / FINAL_NAME, root / "tiny.pt")
    model, model_config, _ = load_checkpoint(checkpoint)
    deploy = DeployModel(model)
    return write_onnx(deploy, describe_deploy_model(deploy, model_config), root / "tiny.onnx")
