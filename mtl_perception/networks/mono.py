"""Monocular multi-task network: one encoder, a segmentation decoder and a metric depth decoder."""

from __future__ import annotations

import torch
from torch import nn

from mtl_perception.networks.backbone import Backbone
from mtl_perception.networks.config import MonoNetConfig
from mtl_perception.networks.heads import FPNDecoder, SeparableConvBNReLU, grid_embedding, upsample

DECODER_STRIDE = 4  # both decoders predict at 1/4 and upsample to the input size


class MonoMultiTaskNet(nn.Module):
    """Image -> semantic logits, depth (meters) with log scale, frame embedding.

    ``semantic_logits`` are predicted at 1/``SEMANTIC_LOGITS_STRIDE`` and upsampled to the input
    size unless ``forward(..., upsample_semantic_logits=False)``.
    """

    SEMANTIC_LOGITS_STRIDE = DECODER_STRIDE

    def __init__(self, config: MonoNetConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.pretrained, config.pretrained_path)
        channels, width = self.backbone.channels, config.decoder_channels
        self.seg_decoder = FPNDecoder(channels, width)
        self.seg_head = nn.Sequential(
            SeparableConvBNReLU(width, width), nn.Conv2d(width, config.num_classes, 1)
        )
        self.depth_decoder = FPNDecoder(channels, width)
        # Two channels: inverse-depth logit and depth log scale.
        self.depth_head = nn.Sequential(SeparableConvBNReLU(width, width), nn.Conv2d(width, 2, 3, padding=1))
        rows, cols = config.embedding_grid
        self.embedding_dim = channels[-1] * rows * cols

    def forward(
        self, image: torch.Tensor, *, upsample_semantic_logits: bool = True
    ) -> dict[str, torch.Tensor]:
        """Nx3xHxW RGB 0..1 -> dict of training outputs (see DESIGN.md, networks contract).

        ``upsample_semantic_logits=False`` leaves ``semantic_logits`` at their native 1/4 resolution
        (for ``DeployModel``, which takes per-pixel maps such as the entropy there).
        """
        return self.decode(self.backbone(image), upsample_semantic_logits=upsample_semantic_logits)

    def decode(
        self, features: list[torch.Tensor], *, upsample_semantic_logits: bool = True
    ) -> dict[str, torch.Tensor]:
        """The heads on the backbone's 1/4 .. 1/32 features (a guided teacher adds to them first)."""
        semantic_logits = self.seg_head(self.seg_decoder(features))
        if upsample_semantic_logits:
            semantic_logits = upsample(semantic_logits, self.SEMANTIC_LOGITS_STRIDE)
        depth_out = upsample(self.depth_head(self.depth_decoder(features)), DECODER_STRIDE)
        # Sigmoid-scaled inverse depth keeps depth inside [min_depth, max_depth] and spends the
        # output range on near objects, where metric precision matters.
        min_inverse, max_inverse = 1.0 / self.config.max_depth, 1.0 / self.config.min_depth
        inverse_depth = min_inverse + (max_inverse - min_inverse) * torch.sigmoid(depth_out[:, :1])
        return {
            "semantic_logits": semantic_logits,
            "depth": 1.0 / inverse_depth,
            "depth_log_scale": depth_out[:, 1:],
            "embedding": grid_embedding(features[-1], self.config.embedding_grid),
        }
