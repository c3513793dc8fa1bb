"""AdamW with a linear warm-up followed by cosine or polynomial decay (one LambdaLR)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl_perception.errors import UserError
from mtl_perception.training.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW; the pretrained backbone may get a smaller lr; no weight decay on norms and biases."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (name.startswith("backbone."), param.ndim <= 1)
            groups.setdefault(key, []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": config.lr * (config.backbone_lr_ratio if is_backbone else 1.0),
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (is_backbone, no_decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)


def freeze_except(model: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Module]:
    """Stop the gradient of every parameter not named ``<prefix>...``; returns the modules to hold in
    eval mode during training (none of their parameters train and no trainable module is inside
    them), so their batch-norm statistics stay as loaded too."""
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name, _ in model.named_parameters()):
            raise UserError(f"optim.trainable: no parameter is named {prefix}*")
    for name, param in model.named_parameters():
        if not any(name.startswith(prefix) for prefix in prefixes):
            param.requires_grad_(False)  # never on: what another rule froze stays frozen

    def trains(name: str) -> bool:  # the module is, is inside, or holds a trainable one
        return any(name.startswith(prefix) or prefix.startswith(f"{name}.") for prefix in prefixes)

    return [module for name, module in model.named_modules() if name and not trains(name)]


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_steps = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    if config.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = (1.0 - progress) ** config.poly_power
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule (call ``step()`` after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
