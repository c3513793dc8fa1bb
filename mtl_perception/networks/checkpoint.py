"""Checkpoint files: model config + weights + free-form metadata, readable with weights_only=True."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtl_perception.config import ConfigError, to_dict
from mtl_perception.errors import UserError
from mtl_perception.networks.config import ModelConfig, model_config_from_dict
from mtl_perception.networks.factory import build_model

CHECKPOINT_FORMAT = "mtl_perception.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, **meta: Any) -> Path:
    """Write ``model``'s weights with its config; ``meta`` must be plain data (numbers, str, lists, dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    # Write then rename so a crash mid-save never leaves a truncated checkpoint behind.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Read a checkpoint -> (model in eval mode, config, meta); a bad file raises ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserError(f"cannot read checkpoint {path} (corrupt or not a torch file): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an mtl_perception checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint version {payload.get('version')} is not supported")
    try:
        config = model_config_from_dict(payload["model_config"], where=f"{path.name}:model_config")
    except ConfigError as exc:
        raise UserError(f"{path}: stored model config is invalid: {exc}") from exc
    # The weights come from the checkpoint, so the pretrained backbone file is never needed here.
    model = build_model(dataclasses.replace(config, pretrained=False))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the stored model config: {exc}") from exc
    return model.to(map_location).eval(), config, dict(payload.get("meta", {}))
