"""Stereo matching by construction: correlation volume -> 3D cost aggregation -> soft-argmin.

Disparity comes out of the matching cost and nothing else can produce it. The aggregation is a
stack of 3D convolutions over (disparity, height, width): translation-equivariant along the
disparity axis, so image features (which are broadcast along that axis as context) can sharpen,
fill and veto matches but cannot write a disparity of their own, except through the ends of the
disparity range, which is how "infinitely far" (d = 0, sky) is learned. A network whose logits
come from 2D convolutions over image features can learn disparity from the left view alone (the
earlier model did, and ignored the right view); this one cannot.

Everything exports to ONNX with static shapes: one MatMul per correlation, pads and reshapes,
3D convolutions and pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks.heads import upsample


def correlation_cost_volume(left: torch.Tensor, right: torch.Tensor, num_disparities: int) -> torch.Tensor:
    """Correlation of left features with right features shifted by 0..D-1 pixels -> NxDxHxW.

    ``cost[:, d, y, x] = mean_c left[:, c, y, x] * right[:, c, y, x - d]``, zero where x - d falls
    outside the image. Hand-written because correlation layers in libraries are custom CUDA ops that
    do not export. One batched MatMul correlates every pair of columns in a row (W x W per row); the
    D diagonals wanted are then read out by padding and reshaping ("skewing"). Per shift slices and
    channel means cost ~10x more in ONNX Runtime on CPU (D strided reductions), although the MatMul
    does W/D times the multiply-adds. Shapes are read with ``.shape`` so a trace records them as
    graph ops and the exported cost volume works at any input size.
    """
    channels, width = left.shape[1], left.shape[-1]
    # rows[n, y, x, x'] = sum_c left[n, c, y, x] * right[n, c, y, x']
    rows = torch.matmul(left.permute(0, 2, 3, 1), right.permute(0, 2, 1, 3))
    # Left-pad each row with D-1 zeros (row length L = W + D - 1): rows[x, x - d] sits at flat index
    # x * (L + 1) + (D - 1 - d), so rows of length L + 1 hold the D diagonals in their first D columns,
    # last shift first; x - d < 0 lands in the zero padding.
    padded = F.pad(rows, (num_disparities - 1, 0)).flatten(2)
    skewed = F.pad(padded, (0, width)).unflatten(2, (width, width + num_disparities))
    diagonals = skewed[..., :num_disparities].flip(-1)  # NxHxWxD, shift 0 first
    return diagonals.permute(0, 3, 1, 2) / channels


def group_correlation_volume(
    left: torch.Tensor, right: torch.Tensor, num_disparities: int, groups: int
) -> torch.Tensor:
    """Group-wise correlation (GwcNet): channels split into ``groups``, one volume each -> NxGxDxHxW.

    Summed over groups it is the full correlation; kept apart it tells the aggregation *which*
    features agree, which a single scalar cannot.
    """
    batch, channels, height, width = left.shape
    per_group = channels // groups
    cost = correlation_cost_volume(
        left.reshape(batch * groups, per_group, height, width),
        right.reshape(batch * groups, per_group, height, width),
        num_disparities,
    )
    return cost.reshape(batch, groups, num_disparities, height, width)


def match_distribution(
    disparity_logits: torch.Tensor, radius: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities NxDxHxW, disparity, standard deviation, peak probability Nx1xHxW) over the D candidates.

    The disparity is the soft-argmin in candidate units: over all candidates (``radius`` 0), or over
    the candidates within ``radius`` of the most probable one. Where the distribution has two modes
    (a pixel beside a depth jump) the full mean lands between them, on neither surface; the windowed
    one stays on the stronger mode. The spread and the peak, always over all candidates, say how
    unambiguous the match is: what the uncertainty head reads.
    """
    probabilities = torch.softmax(disparity_logits, dim=1)
    candidates = torch.arange(
        disparity_logits.shape[1], dtype=probabilities.dtype, device=probabilities.device
    ).view(1, -1, 1, 1)
    mean = (probabilities * candidates).sum(dim=1, keepdim=True)
    variance = (probabilities * (candidates - mean) ** 2).sum(dim=1, keepdim=True)
    peak = probabilities.max(dim=1, keepdim=True).values
    disparity = mean
    if radius > 0:
        mode = disparity_logits.argmax(dim=1, keepdim=True).to(probabilities.dtype)
        near = torch.where(
            (candidates - mode).abs() <= radius, probabilities, torch.zeros_like(probabilities)
        )
        disparity = (near * candidates).sum(dim=1, keepdim=True) / near.sum(dim=1, keepdim=True)
    return probabilities, disparity, variance.clamp_min(1e-6).sqrt(), peak


def interleave_half_candidates(logits: torch.Tensor) -> torch.Tensor:
    """Logits over Dc candidates at 2x the fine step -> over 2*Dc fine candidates (NxDcxHxW -> Nx2DcxHxW).

    Fine candidate 2j is coarse candidate j, 2j + 1 the mean of j and j + 1: exact disparity
    alignment, which a trilinear resize along the disparity axis does not give. The last fine
    candidate, beyond the coarse range, mirrors the one below the last coarse candidate, so a match
    there stays centred on it (repeating the last coarse logit pulled the soft-argmin ~2 px high at
    the top of the range).
    """
    between = (logits[:, :-1] + logits[:, 1:]) * 0.5
    pairs = torch.stack([logits[:, :-1], between], dim=2).flatten(1, 2)
    return torch.cat([pairs, logits[:, -1:], between[:, -1:]], dim=1)


class DisparityConv(nn.Module):
    """3x3x3 convolution over (disparity, height, width) of a volume kept as disparity slices.

    The volume is ``(N*D) x C x H x W`` (each disparity candidate a 2D map); one 2D convolution gives
    each slice's contribution to its disparity neighbours d - k, d, d + k (k = ``dilation``), which
    are then shifted along the disparity axis and summed, zero beyond the range: exactly a Conv3d
    with zero padding. Written this way because PyTorch's CPU Conv3d backward is ~50x slower than
    this (18 s of a 20 s training step, measured), and ONNX Runtime runs 2D convolutions well.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.out_channels = out_channels
        self.dilation = dilation
        self.conv = nn.Conv2d(
            in_channels, 3 * out_channels, 3, padding=dilation, dilation=dilation, bias=False
        )

    def forward(self, slices: torch.Tensor, num_disparities: int) -> torch.Tensor:
        """(N*D)xCinxHxW -> (N*D)xCoutxHxW."""
        height, width = slices.shape[-2:]
        taps = self.conv(slices).reshape(-1, num_disparities, 3, self.out_channels, height, width)
        k = self.dilation
        # Output slice d sums tap 0 of input d - k, tap 1 of input d and tap 2 of input d + k.
        from_below = F.pad(taps[:, : num_disparities - k, 0], (0, 0, 0, 0, 0, 0, k, 0))
        from_above = F.pad(taps[:, k:, 2], (0, 0, 0, 0, 0, 0, 0, k))
        return (from_below + taps[:, :, 1] + from_above).reshape(-1, self.out_channels, height, width)


class DisparityConvBNReLU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.conv = DisparityConv(in_channels, out_channels, dilation)
        # Per-channel statistics over (N, D, H, W): BatchNorm3d's, on the slices.
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, slices: torch.Tensor, num_disparities: int) -> torch.Tensor:
        return F.relu(self.norm(self.conv(slices, num_disparities)))


class CostAggregation(nn.Module):
    """Matching volumes -> disparity logits at 1/4 over D candidates 4 px apart (NxDxHxW).

    The 3D convolutions (``DisparityConv``) run on a group-correlation volume of 1/8-resolution
    features (D/2 candidates 8 px apart: an eighth of the 1/4 volume's voxels, which the CPU budget
    needs) with ``context_channels`` of image context broadcast along the disparity axis. Their
    logits are brought to 1/4 and D candidates and added to the raw 1/4 correlation (scaled by a
    learned gain), which keeps the fine matches the coarse volume cannot resolve.
    """

    def __init__(self, groups: int, context_in: int, channels: int, context_channels: int = 4):
        super().__init__()
        self.context = nn.Sequential(
            nn.Conv2d(context_in, context_channels, 1, bias=False),
            nn.BatchNorm2d(context_channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            [
                DisparityConvBNReLU(groups + context_channels, channels),
                DisparityConvBNReLU(channels, channels, dilation=2),
                DisparityConvBNReLU(channels, channels),
            ]
        )
        # No bias: a constant added to every candidate's logit changes nothing after the softmax.
        self.classifier = DisparityConv(channels, 1)
        # The raw correlation is a cosine in [-1, 1]; a gain of 10 makes a clean match a
        # confident softmax peak from the first step.
        self.raw_gain = nn.Parameter(torch.tensor(10.0))

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """fine: NxDxHxW correlation at 1/4; coarse: NxGx(D/2)x(H/2)x(W/2) group correlation at 1/8;
        context: NxCx(H/2)x(W/2) -> NxDxHxW logits."""
        groups, num_disparities, height, width = coarse.shape[1:]
        context = self.context(context)
        slices = torch.cat(
            [
                coarse.transpose(1, 2).reshape(-1, groups, height, width),
                context.unsqueeze(1)
                .expand(-1, num_disparities, -1, -1, -1)
                .reshape(-1, context.shape[1], height, width),
            ],
            dim=1,
        )
        for block in self.blocks:
            slices = block(slices, num_disparities)
        aggregated = self.classifier(slices, num_disparities).reshape(-1, num_disparities, height, width)
        return interleave_half_candidates(upsample(aggregated, 2)) + self.raw_gain * fine
