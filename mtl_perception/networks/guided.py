"""Pseudo-label teachers: the mono network with a second input that is fused into its features.

Training-only (``mtl-perception pseudo-label``): a teacher reads a label the student lacks on some
frames (depth to label semantics, or semantics to label depth), so it can never run where the
student runs; nothing here is exported or loaded by the runtime.

The image path is ``MonoMultiTaskNet`` unchanged (backbone, FPN decoders, heads). A light conv
branch encodes the guidance map to the same four strides and a zero-initialised 1x1 convolution
per level adds it to the backbone features, so an untrained guided teacher computes exactly what
the image-only teacher (``guidance="none"``: the same class without the branch) computes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.errors import UserError
from mtl_perception.networks.config import MonoNetConfig, model_config_from_dict
from mtl_perception.networks.heads import ConvBNReLU
from mtl_perception.networks.mono import MonoMultiTaskNet

GUIDANCES = ("none", "depth", "semantic")
MAX_BRANCH_CHANNELS = 64


def guidance_channels(guidance: str, num_classes: int) -> int:
    """Input channels of a guidance map: inverse depth + validity, or classes + unknown."""
    return {"none": 0, "depth": 2, "semantic": num_classes + 1}[guidance]


def guidance_map(guidance: str, batch: dict[str, Any], config: MonoNetConfig) -> torch.Tensor | None:
    """The teacher's second input from a sample batch (at the batch's size), or None without guidance.

    depth: [min_depth / z, valid] with z the depth brought to the network's canonical camera
    (z * focal_length / fx), so 1 = nearest, 0 = far (+inf) or unknown; the validity channel tells
    those two apart (DESIGN.md "Sample"). semantic: one-hot class ids and an "unknown" channel.
    """
    if guidance == "none":
        return None
    if guidance == "depth":
        depth = batch["depth"].float()
        valid = batch["depth_valid"].bool() & batch["has_depth"].view(-1, 1, 1).bool()
        canonical = depth * (config.focal_length / batch["fx"].float()).view(-1, 1, 1)
        inverse = (config.min_depth / canonical.clamp_min(config.min_depth)).nan_to_num(0.0)
        inverse = torch.where(valid & torch.isfinite(canonical), inverse, torch.zeros_like(inverse))
        return torch.stack([inverse, valid.float()], dim=1)
    if guidance == "semantic":
        labels = batch["semantic"].long()
        known = (labels != IGNORE_INDEX) & batch["has_semantic"].view(-1, 1, 1).bool()
        # Classes beyond the table (never in a valid dataset) count as unknown too.
        known &= labels < config.num_classes
        ids = torch.where(known, labels, torch.full_like(labels, config.num_classes))
        return F.one_hot(ids, config.num_classes + 1).permute(0, 3, 1, 2).float()
    raise ValueError(f"guidance must be one of {GUIDANCES}, got {guidance!r}")


class GuidanceBranch(nn.Module):
    """Guidance map -> one feature per backbone level (strides 4..32), each already projected to
    that level's channels by a zero-initialised 1x1 convolution."""

    def __init__(self, in_channels: int, backbone_channels: list[int], width: int = 16):
        super().__init__()
        widths = [min(width * 2**level, MAX_BRANCH_CHANNELS) for level in range(len(backbone_channels))]
        # Two stride-2 convolutions reach 1/4; each further level halves the resolution once more.
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, widths[0], stride=2), ConvBNReLU(widths[0], widths[0], stride=2)
        )
        self.downs = nn.ModuleList(
            ConvBNReLU(widths[i - 1], widths[i], stride=2) for i in range(1, len(backbone_channels))
        )
        self.fuse = nn.ModuleList(nn.Conv2d(w, c, 1) for w, c in zip(widths, backbone_channels, strict=True))
        for conv in self.fuse:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, guidance: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(guidance)
        encoded = [x]
        for down in self.downs:
            x = down(x)
            encoded.append(x)
        return [fuse(e) for fuse, e in zip(self.fuse, encoded, strict=True)]


class GuidedTeacherNet(MonoMultiTaskNet):
    """``MonoMultiTaskNet`` + an optional guidance branch; ``forward(image, guidance)``."""

    def __init__(self, config: MonoNetConfig, guidance: str = "none", branch_width: int = 16):
        super().__init__(config)
        if guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {GUIDANCES}, got {guidance!r}")
        self.guidance = guidance
        channels = guidance_channels(guidance, config.num_classes)
        self.guide = GuidanceBranch(channels, self.backbone.channels, branch_width) if channels else None

    def forward(  # type: ignore[override]
        self,
        image: torch.Tensor,
        guidance: torch.Tensor | None = None,
        *,
        upsample_semantic_logits: bool = True,
    ) -> dict[str, torch.Tensor]:
        features = self.backbone(image)
        if self.guide is not None:
            if guidance is None:
                raise ValueError(f"this teacher reads a {self.guidance} guidance map; none was given")
            if guidance.shape[-2:] != image.shape[-2:]:
                guidance = F.interpolate(guidance, size=image.shape[-2:], mode="nearest")
            features = [f + g for f, g in zip(features, self.guide(guidance), strict=True)]
        return self.decode(features, upsample_semantic_logits=upsample_semantic_logits)


TEACHER_META_KEY = "teacher"


def teacher_meta(net: GuidedTeacherNet, target: str, branch_width: int) -> dict[str, Any]:
    """What ``load_teacher`` needs beside the model config, stored in the checkpoint's meta."""
    return {TEACHER_META_KEY: {"guidance": net.guidance, "target": target, "branch_width": branch_width}}


def load_teacher(path: str | Path) -> tuple[GuidedTeacherNet, dict[str, Any]]:
    """A teacher checkpoint (written by ``mtl-perception pseudo-label``) -> (net in eval mode, meta)."""
    from mtl_perception.networks.checkpoint import CHECKPOINT_FORMAT, read_payload

    path = Path(path)
    payload = read_payload(path, "teacher checkpoint")
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    if payload.get("format") != CHECKPOINT_FORMAT or TEACHER_META_KEY not in meta:
        raise UserError(
            f"{path} is not a pseudo-label teacher (train one with `mtl-perception pseudo-label`)"
        )
    config = model_config_from_dict(dict(payload["model_config"]), where=f"{path.name}:model_config")
    if not isinstance(config, MonoNetConfig):
        raise UserError(f"{path}: a teacher is a mono network, this one is {config.mode}")
    info = meta[TEACHER_META_KEY]
    net = GuidedTeacherNet(
        dataclasses.replace(config, pretrained=False), info["guidance"], info["branch_width"]
    )
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the stored teacher config: {exc}") from exc
    return net.eval(), dict(meta)
