"""Shared blocks (dense/separable conv-bn-relu, FPN decoder, upsampling, uncertainty maths), steering head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 (or kxk) convolution, batch norm, ReLU: the unit every decoder here is made of."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1 convolution, batch norm, ReLU.

    About 1/8 of a dense 3x3's FLOPs at 64 channels: the decoders run at 1/4 input resolution,
    where dense 3x3 convolutions would cost more than the backbone.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by a fixed integer factor.

    A static scale factor (not a target size read from another tensor) keeps the exported graph
    free of shape arithmetic and valid for any input size that divides by 32.
    """
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


class FPNDecoder(nn.Module):
    """Top-down feature-pyramid fusion: deepest level upsampled x2 and added to each finer lateral.

    ``in_channels`` lists the pyramid levels from fine to coarse, each half the previous
    resolution; the output has ``channels`` channels at the finest given level.
    """

    def __init__(self, in_channels: Sequence[int], channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = SeparableConvBNReLU(channels, channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fine-to-coarse feature list -> fused map at the finest level."""
        fused = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[:-1]), strict=True):
            fused = upsample(fused, 2) + lateral(feature)
        return self.smooth(fused)


def global_embedding(deepest: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
    """Per-frame latent for the steering head: global average pool of the deepest features, projected."""
    return projection(deepest.mean(dim=(2, 3)))


def softmax_confidence(logits: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-class probability, entropy / log(C)) of softmax(logits) over dim 1: NxCxHxW -> NxHxW each.

    The top-class probability is what ECE bins; the normalised entropy (0..1) ranks uncertainty.
    ``num_classes`` is passed in (not read from the shape) so a trace records a constant.
    """
    log_p = F.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    confidence = log_p.max(dim=1).values.exp()
    return confidence, (entropy / math.log(num_classes)).clamp(0.0, 1.0)


def log_scale_to_std(log_scale: torch.Tensor, distribution: str) -> torch.Tensor:
    """Standard deviation from a predicted log scale: sigma (Gaussian) or sqrt(2) * b (Laplace)."""
    std = log_scale.exp()
    return std * math.sqrt(2.0) if distribution == "laplace" else std


def std_to_log_scale(std: torch.Tensor, distribution: str) -> torch.Tensor:
    """The inverse of ``log_scale_to_std``: the log scale whose distribution has this standard deviation."""
    log_std = std.clamp_min(1e-12).log()
    return log_std - 0.5 * math.log(2.0) if distribution == "laplace" else log_std


class SteeringHead(nn.Module):
    """Attentive pooling over the last ``window`` frame embeddings -> steering angle (radians).

    Each frame's score comes from an MLP over (embedding + learned position embedding); a softmax
    over time weights the frames and an MLP maps the weighted sum to the angle. Frame order matters
    only through the position embeddings (with them zero the head is permutation invariant).
    """

    def __init__(self, embedding_dim: int, window: int = 16, hidden: int = 64):
        super().__init__()
        self.window = window
        self.position = nn.Parameter(torch.zeros(1, window, embedding_dim))
        nn.init.normal_(self.position, std=0.02)
        self.score = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.regress = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """NxTxD embeddings (T = window, oldest first) -> N steering angles in radians."""
        frames = embeddings + self.position
        weights = torch.softmax(self.score(frames), dim=1)  # NxTx1
        pooled = (weights * frames).sum(dim=1)
        return self.regress(pooled).squeeze(-1)
