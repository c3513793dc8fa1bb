"""Sharp depth edges at 1/2 resolution: each pixel picks one of the matched disparities around it.

The 1/4-resolution matching (``matching.py``) smears disparity across an object's outline: its
features and the 1/8 aggregation see both sides of it, and the refinement's residual is bounded to a
few pixels, so it cannot carry a pixel across a depth jump. On random-dot stereograms, where only
matching shows an outline, that band held nearly all the errors (61 % wrong within 4 px of an
outline, 19 % at 8-16 px, 0.6 % beyond; ``benchmarks/random_dot_edges.py``). Yet a 1/4 cell a few
cells further inside the pixel's own surface holds the right disparity.

So every 1/2-resolution pixel scores K hypotheses: the matched disparity of its own 1/4 cell and of
the cells 2 and 4 away along each axis. The score of a hypothesis is how well the right view agrees
with it there: zero-normalised cross-correlation (ZNCC) of 1/2-resolution intensity windows, left
against right warped by the hypothesis. ZNCC is written here because no library op computes it on a
per-pixel disparity map; it has no weights, so training cannot bend it toward colour edges, and it
ignores gain and offset between the views. A small network, shared by all hypotheses, turns the
ZNCC at two window sizes, the hypothesis' distance from the pixel's own match, the local texture and
the match's spread and peak into one logit per hypothesis, so it can keep the pixel's own match
where the image has too little texture to judge.

The pick is a hard argmax: a soft mix of foreground and background hypotheses is the smear again (a
softmax-weighted version, reverted in 6e9b808, was wrong on 90 % of the pixels it was meant to fix).
The choice is trained by its own loss (``training/losses.py``, ``disparity_choice``). Every hypothesis
is a disparity the cost volume matched, so the pick cannot produce a disparity from the left view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks.heads import upsample

# (dy, dx) in 1/4-resolution cells: the pixel's own cell, then 2 and 4 cells away along each axis
# (the smeared band reaches 8-16 input px, i.e. 2-4 cells, from an outline).
HYPOTHESIS_OFFSETS = ((0, 0), (0, -2), (0, 2), (-2, 0), (2, 0), (0, -4), (0, 4), (-4, 0), (4, 0))
ZNCC_WINDOWS = (5, 9)  # 1/2-resolution pixels: 10 and 18 input px


def shift_map(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, the border replicated where that falls outside."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")
    top, left = abs(dy) + dy, abs(dx) + dx
    return padded[..., top : top + height, left : left + width]


def warp_right(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """Right view Nx1xHxW sampled where each left pixel's disparity map (NxKxHxW, pixels of this
    resolution) says it matches: ``out[n, k, y, x] = right[n, 0, y, x - round(d[n, k, y, x])]``.

    Whole pixels, so one GatherElements (ONNX) does it; the refinement after the pick adds the
    sub-pixel part. Columns left of the image read its first column (those pixels have no match).
    """
    width = right.shape[-1]
    columns = torch.arange(width, device=right.device).view(1, 1, 1, width)
    index = (columns - torch.round(disparity).long()).clamp(0, width - 1)
    return torch.gather(right.expand_as(disparity), 3, index)


def zncc(left: torch.Tensor, warped: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-normalised cross-correlation of ``window`` x ``window`` neighbourhoods, per channel, in
    [-1, 1] (0 where either window is flat). ``left`` broadcasts over ``warped``'s channels."""

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)

    left_mean, warped_mean = mean(left), mean(warped)
    covariance = mean(left * warped) - left_mean * warped_mean
    variance = (mean(left * left) - left_mean.square()) * (mean(warped * warped) - warped_mean.square())
    return covariance / variance.clamp_min(1e-8).sqrt()


class HypothesisSelection(nn.Module):
    """1/4-res matched disparity + both views at 1/2 res -> (hypotheses, logits), each NxKxHxW at 1/2 res.

    Hypotheses are in 1/2-resolution pixels. The caller picks ``hypotheses`` at ``logits.argmax(1)``.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.num_hypotheses = len(HYPOTHESIS_OFFSETS)
        # Per hypothesis: ZNCC at each window and the distance from the pixel's own match; shared by
        # all: the left window's contrast, the match's spread and peak. 1x1 convolutions: the ZNCC
        # windows already give the spatial support, and 1/2 res x K slices is the largest map here.
        features = len(ZNCC_WINDOWS) + 1 + 3
        self.score = nn.Sequential(
            nn.Conv2d(features, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(
        self,
        coarse_disparity: torch.Tensor,
        left: torch.Tensor,
        right: torch.Tensor,
        match_quality: torch.Tensor,
        disparity_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """coarse_disparity: Nx1x(H/2)x(W/2) in 1/4-res pixels; left, right: Nx3xHxW at 1/2 res, 0..1;
        match_quality: Nx2xHxW (spread and peak, already scaled); ``disparity_scale`` maps 1/2-res
        pixels to about 0..1 over the range."""
        hypotheses = torch.cat(
            [upsample(shift_map(coarse_disparity, dy, dx), 2) * 2 for dy, dx in HYPOTHESIS_OFFSETS], 1
        )
        left_gray, right_gray = left.mean(dim=1, keepdim=True), right.mean(dim=1, keepdim=True)
        warped = warp_right(right_gray, hypotheses)
        costs = [zncc(left_gray, warped, window) for window in ZNCC_WINDOWS]
        distance = (hypotheses - hypotheses[:, :1]).abs() * disparity_scale
        window = ZNCC_WINDOWS[0]
        contrast = F.avg_pool2d(left_gray, window, 1, window // 2, count_include_pad=False)
        contrast = (
            F.avg_pool2d(left_gray.square(), window, 1, window // 2, count_include_pad=False)
            - contrast.square()
        ).clamp_min(0.0).sqrt() * 4.0  # image std of ~0.25 -> 1
        shared = torch.cat([contrast, match_quality], dim=1)
        batch, count, height, width = hypotheses.shape
        per_hypothesis = torch.stack([*costs, distance], dim=2)  # NxKxFxHxW
        slices = torch.cat(
            [per_hypothesis, shared.unsqueeze(1).expand(-1, count, -1, -1, -1)], dim=2
        ).reshape(batch * count, -1, height, width)
        logits = self.score(slices).reshape(batch, count, height, width)
        return hypotheses, logits
