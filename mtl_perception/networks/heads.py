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


def grid_embedding(deepest: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Per-frame latent for the steering head: the deepest features average-pooled onto a grid.

    NxCxHxW -> Nx(C*gh*gw), channel-major (reshape to NxCx(gh*gw) to get one vector per cell). A
    coarse grid rather than one global mean keeps where things are (the road ahead bends left or
    right); it has no weights, so the frozen encoder's latent reaches the steering head unchanged
    and everything the head learns lives in the steering graph.
    """
    return _adaptive_mean(_adaptive_mean(deepest, 2, grid[0]), 3, grid[1]).flatten(1)


def _adaptive_mean(x: torch.Tensor, dim: int, cells: int) -> torch.Tensor:
    """Adaptive average pooling along ``dim`` (bin i spans floor(i*n/cells) .. ceil((i+1)*n/cells),
    as torch.nn.AdaptiveAvgPool does), from differences of a cumulative sum.

    Written out because torch's ONNX export of adaptive pooling needs the grid to divide a size
    fixed at export; here the bin edges follow the traced size, so a graph exported with dynamic
    height and width pools correctly at any input size (a 96x192 input's 3x6 map included).
    """
    size = x.shape[dim]
    index = torch.arange(cells, device=x.device)
    start = torch.div(index * size, cells, rounding_mode="floor")
    end = torch.div((index + 1) * size + cells - 1, cells, rounding_mode="floor")
    cumulative = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim)
    sums = cumulative.index_select(dim, end) - cumulative.index_select(dim, start)
    shape = [1] * x.dim()
    shape[dim] = cells
    return sums / (end - start).to(x.dtype).reshape(shape)


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

    Each frame's embedding (the whole ``grid_embedding``, so where things are in the image stays in
    its token) is normalised, projected to ``width`` and tagged with a learned position for its
    place in the window. ``queries`` learned queries attend over the window's frame tokens (softmax
    over time) and an MLP maps what they gathered, with the newest frame's token, to the angle. The
    newest token has its own path because the learned queries stayed uniform over time when trained
    on a few thousand windows (measured: mean age of the attended frame 7.5 of 15 frames): pooling
    alone answered with the window's average, 0.75 s old at 10 Hz, and a lane keeper that late
    weaves. Attention is written with matmul and softmax rather than ``nn.MultiheadAttention`` so
    the exported graph is a few plain ops that any ONNX Runtime or TensorRT version runs.
    """

    def __init__(
        self,
        embedding_dim: int,
        window: int = 16,
        width: int = 64,
        queries: int = 4,
        hidden: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding_dim, self.window = embedding_dim, window
        self.hparams = {"embedding_dim": embedding_dim, "window": window, "width": width}
        self.hparams |= {"queries": queries, "hidden": hidden, "dropout": dropout}
        self.project = nn.Sequential(
            nn.LayerNorm(embedding_dim), nn.Dropout(dropout), nn.Linear(embedding_dim, width)
        )
        self.position = nn.Parameter(torch.zeros(1, window, width))
        nn.init.normal_(self.position, std=0.02)
        self.queries = nn.Parameter(torch.randn(queries, width) * width**-0.5)
        self.scale = width**-0.5  # scaled dot-product attention
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.regress = nn.Sequential(
            nn.Linear((queries + 1) * width, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    @classmethod
    def for_model(cls, model: nn.Module, **sizes: float) -> SteeringHead:
        """A head sized for ``model``'s per-frame embedding."""
        return cls(model.embedding_dim, **sizes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """NxTxD embeddings (T = window, oldest first) -> N steering angles in radians."""
        tokens = self.project(embeddings) + self.position  # N x T x width
        scores = self.queries @ self.key(tokens).transpose(1, 2) * self.scale  # N x queries x T
        pooled = torch.softmax(scores, dim=-1) @ self.value(tokens)  # N x queries x width
        return self.regress(torch.cat([pooled.flatten(1), tokens[:, -1]], dim=1)).squeeze(-1)
