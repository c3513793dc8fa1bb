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
from mtl_perception.networks.heads import SteeringHead

CHECKPOINT_FORMAT = "mtl_perception.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, **meta: Any) -> Path:
    """Write ``model``'s weights with its config; ``meta`` must be plain data (numbers, str, lists, dicts)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    return _save_atomically(path, payload)


def _save_atomically(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to a temporary name, then rename: a crash mid-save never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_payload(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """The object a torch file holds (tensors only: ``weights_only``); ``UserError`` naming ``what``
    (checkpoint, steering head, ...) when it is missing or unreadable."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserError(f"cannot read {what} {path} (corrupt or not a torch file): {exc}") from exc


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Read a checkpoint -> (model in eval mode, config, meta); a bad file raises ``UserError``."""
    path = Path(path)
    payload = read_payload(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an mtl_perception checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint version {payload.get('version')} is not supported")
    stored_config, state_dict = dict(payload["model_config"]), payload["state_dict"]
    if "embedding_dim" in stored_config:
        # Checkpoints from before the grid embedding carry an untrained projection (it never got a
        # gradient: the steering head was never trained); the grid embedding replaces it.
        del stored_config["embedding_dim"]
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("embedding.")}
    try:
        config = model_config_from_dict(stored_config, where=f"{path.name}:model_config")
    except ConfigError as exc:
        raise UserError(f"{path}: stored model config is invalid: {exc}") from exc
    # The weights come from the checkpoint, so the pretrained backbone file is never needed here.
    model = build_model(dataclasses.replace(config, pretrained=False))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the stored model config: {exc}") from exc
    return model.to(map_location).eval(), config, dict(payload.get("meta", {}))


STEERING_FORMAT = "mtl_perception.steering_head"


def save_steering_head(path: str | Path, head: SteeringHead, **meta: Any) -> Path:
    """Write a steering head: its sizes, weights and plain-data ``meta`` (what it was trained on)."""
    payload = {
        "format": STEERING_FORMAT,
        "version": CHECKPOINT_VERSION,
        "hparams": dict(head.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "meta": meta,
    }
    return _save_atomically(path, payload)


def load_steering_head(path: str | Path) -> tuple[SteeringHead, dict[str, Any]]:
    """Read a file written by ``save_steering_head`` -> (head in eval mode, meta); UserError if not one."""
    path = Path(path)
    payload = read_payload(path, "steering head")
    if not isinstance(payload, dict) or payload.get("format") != STEERING_FORMAT:
        raise UserError(
            f"{path} is not a steering head written by `mtl-perception train` (a steering config)"
        )
    try:
        head = SteeringHead(**payload["hparams"])
        head.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise UserError(f"{path}: steering head weights do not match its sizes: {exc}") from exc
    return head.eval(), dict(payload.get("meta", {}))
