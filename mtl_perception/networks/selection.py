"""Sharp depth edges at 1/2 resolution: each pixel picks one of the disparities around it.

The 1/4-resolution matching (``matching.py``) smears disparity across an object's outline: its
features and the 1/8 aggregation see both sides of it, and the refinement's residual is bounded to a
few pixels, so it cannot carry a pixel across a depth jump. On random-dot stereograms, where only
matching shows an outline, that band held nearly all the errors (61 % wrong within 4 px of an
outline, 19 % at 8-16 px, 0.6 % beyond; ``benchmarks/random_dot_edges.py``). Yet a pixel a little
further inside the pixel's own surface holds the right disparity.

So every 1/2-resolution pixel, after the refinement, scores K hypotheses: its own disparity and
those of the pixels 4 and 8 away along each axis (2 and 4 cells of the 1/4 matching). A hypothesis
scores by how well the right view agrees with it there: zero-normalised cross-correlation (ZNCC) of
1/2-resolution intensity windows, left against right warped by the hypothesis. ZNCC is written here
because no library op computes it on a per-pixel disparity map; it has no weights, so training
cannot bend it toward colour edges, and it ignores gain and offset between the views. A small
network, shared by all hypotheses, turns the ZNCC at two window sizes, the hypothesis' distance
from the pixel's own disparity, how unlike the pixel the neighbour it comes from looks, the local
texture and the match's spread and peak into one logit per hypothesis, so it can keep the pixel's
own answer where the image has too little texture to judge.

The pick is a hard argmax: a soft mix of foreground and background hypotheses is the smear again (a
softmax-weighted version, reverted in 6e9b808, was wrong on 90 % of the pixels it was meant to fix).
The choice is trained by its own loss (``training/losses.py``, ``disparity_choice``). It comes
after the refinement, which sees no match of its own and smoothed picked edges back toward the
smear (+1.0 to +1.6 points of random-dot D1 when it came after the pick). Every hypothesis is a
disparity the cost volume matched, so the pick cannot produce a disparity from the left view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks.heads import upsample

# (dy, dx) in 1/2-resolution pixels: the pixel itself, then 4 and 8 away along each axis (the smeared
# band reaches 8-16 input px, i.e. 4-8 of these pixels, from an outline).
HYPOTHESIS_OFFSETS = ((0, 0), (0, -4), (0, 4), (-4, 0), (4, 0), (0, -8), (0, 8), (-8, 0), (8, 0))
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

    Whole pixels, so one GatherElements (ONNX) does it: the score is taken at the nearest whole
    shift, the picked hypothesis keeps its sub-pixel value. Columns left of the image read its first
    column (those pixels have no match).
    """
    width = right.shape[-1]
    columns = torch.arange(width, device=right.device).view(1, 1, 1, width)
    index = (columns - torch.round(disparity).long()).clamp(0, width - 1)
    return torch.gather(right.expand_as(disparity), 3, index)


def source_difference(left: torch.Tensor) -> torch.Tensor:
    """How unlike each pixel the pixel each hypothesis comes from looks: NxKxHxW mean absolute RGB
    difference (0 for the pixel's own). A neighbour of another colour is likely another surface,
    whose disparity the pixel should take only on strong evidence: next to a pole, the sky's
    plain ZNCC window lines up the pole's edge and prefers the pole's disparity."""
    return torch.stack(
        [(shift_map(left, dy, dx) - left).abs().mean(dim=1) for dy, dx in HYPOTHESIS_OFFSETS], 1
    )


def window_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over each pixel's ``window`` x ``window`` neighbourhood (the part inside the image)."""
    return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)


def zncc(left: torch.Tensor, warped: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-normalised cross-correlation of ``window`` x ``window`` neighbourhoods, per channel, in
    [-1, 1] (0 where either window is flat). ``left`` broadcasts over ``warped``'s channels."""
    left_mean, warped_mean = window_mean(left, window), window_mean(warped, window)
    covariance = window_mean(left * warped, window) - left_mean * warped_mean
    variance = (window_mean(left * left, window) - left_mean.square()) * (
        window_mean(warped * warped, window) - warped_mean.square()
    )
    return covariance / variance.clamp_min(1e-8).sqrt()


# A bilinear upsample that moves a pixel further than this (output pixels) from its nearest source
# pixel is interpolating across a depth jump.
FLYING_PIXEL_PX = 1.0


def upsample_keeping_edges(disparity: torch.Tensor, factor: int) -> torch.Tensor:
    """x ``factor`` upsampling of a disparity map (values scaled to the output's pixels) that is
    bilinear on surfaces and nearest across depth jumps.

    Bilinear interpolation across a jump invents disparities between the two surfaces ("flying
    pixels": points floating in free space in a cloud or costmap, and a D1 error at every outline
    pixel). Where the bilinear value strays from the nearest source value by more than
    ``FLYING_PIXEL_PX`` the nearest one is kept; on slanted surfaces the two agree within a pixel.
    """
    smooth = upsample(disparity, factor) * factor
    nearest = F.interpolate(disparity, scale_factor=float(factor), mode="nearest") * factor
    return torch.where((smooth - nearest).abs() > FLYING_PIXEL_PX, nearest, smooth)


def pick_log_scale(
    log_scale: torch.Tensor,
    hypotheses: torch.Tensor,
    logits: torch.Tensor,
    picked: torch.Tensor,
    distribution: str,
) -> torch.Tensor:
    """The disparity's log scale with the pick's own doubt added: the refinement's scale (Laplace b
    or Gaussian sigma, Nx1xHxW log) widened by how far the choice distribution (softmax of the
    logits) lies from the picked value: b + E|h - pick|, or sqrt(sigma^2 + E(h - pick)^2), as for a
    mixture. The refinement's scale was learned for the disparity before the pick; where the pick
    moved a pixel 4-8 px on a near-tie, that scale alone was far too small (validation NLL: stage 4
    0.18, a picking model 4.27 without this, 0.54 with it; AUROC of sigma for D1 errors 0.81 -> 0.91).
    The caller divides the logits by a temperature fitted on the validation split
    (benchmarks/pick_temperature.py), since the choice loss spreads mass over near-right hypotheses.
    The logits are detached: the choice loss alone trains the pick."""
    probabilities = logits.detach().softmax(dim=1)
    distance = (hypotheses - picked).abs()
    if distribution == "laplace":
        return torch.log(log_scale.exp() + (probabilities * distance).sum(dim=1, keepdim=True))
    variance = (probabilities * distance.square()).sum(dim=1, keepdim=True)
    return 0.5 * torch.log((2.0 * log_scale).exp() + variance)


class HypothesisSelection(nn.Module):
    """1/2-res disparity + both views at 1/2 res -> (hypotheses, logits), each NxKxHxW.

    Hypotheses are in 1/2-resolution pixels. The caller picks ``hypotheses`` at ``logits.argmax(1)``.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.num_hypotheses = len(HYPOTHESIS_OFFSETS)
        # Per hypothesis: ZNCC at each window, the distance from the pixel's own disparity and how
        # unlike the pixel the one it came from looks; shared by all: the left window's contrast, the
        # match's spread and peak. 1x1 convolutions: the ZNCC windows already give the spatial
        # support, and 1/2 res x K slices is the largest map.
        features = len(ZNCC_WINDOWS) + 2 + 3
        self.score = nn.Sequential(
            nn.Conv2d(features, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(
        self,
        disparity: torch.Tensor,
        left: torch.Tensor,
        right: torch.Tensor,
        match_quality: torch.Tensor,
        disparity_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """disparity: Nx1xHxW in pixels of this resolution; left, right: Nx3xHxW, 0..1; match_quality:
        Nx2xHxW (spread and peak, already scaled); ``disparity_scale`` maps pixels to about 0..1 over
        the range."""
        hypotheses = torch.cat([shift_map(disparity, dy, dx) for dy, dx in HYPOTHESIS_OFFSETS], 1)
        left_gray, right_gray = left.mean(dim=1, keepdim=True), right.mean(dim=1, keepdim=True)
        warped = warp_right(right_gray, hypotheses)
        costs = [zncc(left_gray, warped, window) for window in ZNCC_WINDOWS]
        distance = (hypotheses - hypotheses[:, :1]).abs() * disparity_scale
        per_hypothesis = [*costs, distance, source_difference(left) * 4.0]  # x4: ~0..1
        window = ZNCC_WINDOWS[0]
        variance = window_mean(left_gray.square(), window) - window_mean(left_gray, window).square()
        contrast = variance.clamp_min(0.0).sqrt() * 4.0  # image std of ~0.25 -> 1
        shared = torch.cat([contrast, match_quality], dim=1)
        batch, count, height, width = hypotheses.shape
        per_hypothesis = torch.stack(per_hypothesis, dim=2)  # NxKxFxHxW
        slices = torch.cat(
            [per_hypothesis, shared.unsqueeze(1).expand(-1, count, -1, -1, -1)], dim=2
        ).reshape(batch * count, -1, height, width)
        logits = self.score(slices).reshape(batch, count, height, width)
        return hypotheses, logits
