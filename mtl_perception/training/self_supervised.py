"""Self-supervised stereo losses: reconstruct each view from the other through the predicted disparity.

Conventions (rectified pair, DESIGN.md "Geometry"): the left pixel x shows the point the right view
shows at x - d_left(x); the right pixel x shows the point the left view shows at x + d_right(x).
Disparities are N x 1 x H x W in pixels of the images they are applied to.

The photometric error is Monodepth2's (Godard et al., ICCV 2019): alpha * (1 - SSIM) / 2 +
(1 - alpha) * L1 with alpha = 0.85 and SSIM over 3x3 windows written with ``avg_pool2d`` as there
(kornia is not a dependency and the dozen lines below are all of it). Smoothness is Monodepth2's
edge-aware first-order term on mean-normalised disparity; the left-right consistency term is
Monodepth's (Godard et al., CVPR 2017), with disparities as a fraction of the image width as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# Smoothness divides by the mean disparity; an all-far image (mean ~0 px) would blow it up.
MIN_MEAN_DISPARITY = 1.0


def warp_horizontal(image: Tensor, disparity: Tensor, direction: int) -> Tensor:
    """``image`` sampled at (x + direction * disparity, y), bilinear, edges repeated.

    ``direction`` -1 reconstructs the left view from the right one with the left disparity
    (right(x - d_left)); +1 the right view from the left one with the right disparity.
    """
    height, width = image.shape[-2:]
    xs = torch.arange(width, device=image.device, dtype=image.dtype).view(1, 1, width)
    ys = torch.arange(height, device=image.device, dtype=image.dtype).view(1, height, 1)
    source_x = xs + direction * disparity[:, 0]
    grid = torch.stack(
        (2.0 * source_x / (width - 1) - 1.0, (2.0 * ys / (height - 1) - 1.0).expand_as(source_x)), dim=-1
    )
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def in_view(disparity: Tensor, direction: int) -> Tensor:
    """N x 1 x H x W bool: the pixel's match (x + direction * d) lies inside the other image."""
    width = disparity.shape[-1]
    xs = torch.arange(width, device=disparity.device, dtype=disparity.dtype).view(1, 1, 1, width)
    source_x = xs + direction * disparity
    return (source_x >= 0) & (source_x <= width - 1)


def ssim_distance(x: Tensor, y: Tensor) -> Tensor:
    """(1 - SSIM) / 2 per pixel and channel over 3x3 windows (reflection-padded), in [0, 1]."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(prediction: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """N x 1 x H x W: alpha * (1 - SSIM) / 2 + (1 - alpha) * L1, averaged over channels."""
    l1 = (prediction - target).abs().mean(1, keepdim=True)
    return alpha * ssim_distance(prediction, target).mean(1, keepdim=True) + (1 - alpha) * l1


def lr_difference(disparity: Tensor, other: Tensor, direction: int) -> Tensor:
    """|d(x) - d_other(x + direction * d(x))| in pixels: how far the two views' disparities disagree."""
    return (disparity - warp_horizontal(other, disparity, direction)).abs()


def lr_consistent(difference: Tensor, disparity: Tensor, pixels: float, relative: float) -> Tensor:
    """The left-right check: the disagreement is within ``pixels`` or ``relative`` * d, whichever is larger.

    A pixel that fails it sees a surface the other camera does not (an occlusion) or is mismatched.
    """
    return difference <= torch.clamp(relative * disparity, min=pixels)


def edge_aware_smoothness(disparity: Tensor, image: Tensor) -> Tensor:
    """Monodepth2's smoothness: |grad of d / mean(d)| weighted by exp(-|image gradient|)."""
    mean = disparity.mean(dim=(2, 3), keepdim=True).clamp_min(MIN_MEAN_DISPARITY)
    normalised = disparity / mean
    grad_x = (normalised[..., :, :-1] - normalised[..., :, 1:]).abs()
    grad_y = (normalised[..., :-1, :] - normalised[..., 1:, :]).abs()
    image_x = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    image_y = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (grad_x * torch.exp(-image_x)).mean() + (grad_y * torch.exp(-image_y)).mean()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; an exact zero still connected to ``values`` when none is."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


@dataclass(frozen=True)
class StereoLossOptions:
    """Options of ``stereo_terms`` (the adapt config's ``loss`` section carries them)."""

    ssim_alpha: float = 0.85
    lr_check_pixels: float = 1.0
    lr_check_relative: float = 0.05
    occlusion_mask: bool = True  # leave out pixels that fail the left-right check
    automask: bool = False  # Monodepth2's identity mask; see ``view_terms`` for why it is off


@dataclass
class ViewTerms:
    """One view's reconstruction: per-pixel error, the mask it is averaged over, the LR disagreement."""

    error: Tensor  # N1HW photometric error of the reconstruction
    identity_error: Tensor  # N1HW error of the other view unwarped (disparity 0 everywhere)
    visible: Tensor  # N1HW bool: match inside the other image
    consistent: Tensor  # N1HW bool: passes the left-right check
    mask: Tensor  # N1HW bool: pixels the photometric loss averages over
    lr_difference: Tensor  # N1HW pixels


def view_terms(
    target: Tensor, source: Tensor, disparity: Tensor, other: Tensor, direction: int, opts: StereoLossOptions
) -> ViewTerms:
    """Reconstruct ``target`` from ``source`` through ``disparity`` and the masks of its loss.

    Masks are computed without gradient, so no pixel is left out *because* leaving it out lowers the
    loss; the consistency loss (not masked) keeps the two disparities from drifting apart instead.

    Auto-masking (Monodepth2) drops pixels the unwarped other view reconstructs better than the warp.
    Monodepth2 built it for *temporal* frames, where such pixels move with the camera and break its
    static-scene model. A synchronised stereo pair has no such pixels: between its views nothing
    moves, and the pixels disparity 0 explains are infinitely far (0 is their right answer, and a
    label here: DESIGN.md) or textureless (no gradient either way), or the model is wrong there,
    e.g. a phantom obstacle in a textured distant skyline, exactly what adaptation should correct and
    the mask would hide. So it is off by default; turn it on for a rig that sees something fixed to
    both cameras that is not a surface in the scene (a lens smudge, a burnt-in overlay).
    """
    reconstruction = warp_horizontal(source, disparity, direction)
    error = photometric_error(reconstruction, target, opts.ssim_alpha)
    identity_error = photometric_error(source, target, opts.ssim_alpha)
    difference = lr_difference(disparity, other, direction)
    with torch.no_grad():
        visible = in_view(disparity, direction)
        consistent = lr_consistent(difference, disparity, opts.lr_check_pixels, opts.lr_check_relative)
        mask = visible & consistent if opts.occlusion_mask else visible
        if opts.automask:
            mask = mask & (error < identity_error)
    return ViewTerms(error, identity_error, visible, consistent, mask, difference)


def stereo_terms(
    left: Tensor, right: Tensor, disparity_left: Tensor, disparity_right: Tensor, opts: StereoLossOptions
) -> tuple[dict[str, Tensor], tuple[ViewTerms, ViewTerms]]:
    """The unweighted self-supervised terms of a pair: ``photometric``, ``smoothness``, ``lr_consistency``.

    Both views are reconstructed (left from right with the left disparity, right from left with the
    right one) and their terms averaged.
    """
    width = left.shape[-1]
    views = (
        view_terms(left, right, disparity_left, disparity_right, -1, opts),
        view_terms(right, left, disparity_right, disparity_left, +1, opts),
    )
    photometric = torch.stack([masked_mean(v.error, v.mask) for v in views]).mean()
    smoothness = (
        edge_aware_smoothness(disparity_left, left) + edge_aware_smoothness(disparity_right, right)
    ) / 2
    # Monodepth's consistency term, disparity as a fraction of the width: 1 px at 512 wide = 0.002.
    consistency = torch.stack([masked_mean(v.lr_difference, v.visible) for v in views]).mean() / width
    return {"photometric": photometric, "smoothness": smoothness, "lr_consistency": consistency}, views


def flip(image: Tensor) -> Tensor:
    """Mirror along the width."""
    return torch.flip(image, dims=(-1,))


def pair_disparities(model: torch.nn.Module, left: Tensor, right: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """(the model's outputs for the pair, the right view's disparity N1HW), in one batched call.

    The network predicts the left view's disparity only; mirrored and swapped, the right view
    becomes a left view (its matches lie to its right, mirrored to its left), so the same network
    gives the right disparity of the flipped pair, mirrored back.
    """
    batch = left.shape[0]
    outputs = model(torch.cat([left, flip(right)]), torch.cat([right, flip(left)]))
    disparity_right = flip(outputs["disparity"][batch:])
    return {name: value[:batch] for name, value in outputs.items()}, disparity_right
