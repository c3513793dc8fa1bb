"""Known answers of the self-supervised stereo losses: the warp, the masks, the right-view disparity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception.data.procedural import ProceduralConfig, layered_pair
from mtl_perception.training.self_supervised import (
    StereoLossOptions,
    flip,
    in_view,
    masked_mean,
    pair_disparities,
    photometric_error,
    stereo_terms,
    warp_horizontal,
)

SIZE = (64, 128)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def left_reconstruction_error(
    left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor
) -> float:
    return float(masked_mean(photometric_error(warp_horizontal(right, disparity, -1), left), mask))


@pytest.mark.parametrize("seed", range(4))
def test_photometric_error_is_far_lowest_at_the_true_disparity(seed: int) -> None:
    """Procedural pairs are an exact warp of the left view by a known disparity: reconstructing the
    left view with it must beat the truth + 4 px and the disparity-0 guess by a wide margin."""
    left, right, truth = layered_pair(
        ProceduralConfig(size=SIZE, max_disparity=16.0), np.random.default_rng(seed)
    )
    left, right = as_tensor(left), as_tensor(right)
    disparity = torch.from_numpy(truth)[None, None]
    mask = in_view(disparity, -1)
    at_truth = left_reconstruction_error(left, right, disparity, mask)
    shifted = left_reconstruction_error(left, right, disparity + 4.0, mask)
    zero = left_reconstruction_error(left, right, torch.zeros_like(disparity), mask)
    assert at_truth < 0.5 * min(shifted, zero), (at_truth, shifted, zero)


def test_warp_moves_content_by_the_disparity_in_the_stated_direction() -> None:
    """right(x) = left(x + d) for a constant d: warping right by -d gives left back (inside the view)."""
    texture = torch.rand(1, 3, 16, 40, generator=torch.Generator().manual_seed(0))
    left, right = texture[..., :32], texture[..., 5:37]  # right(x) = texture(x + 5) = left(x + 5)
    left_from_right = warp_horizontal(right, torch.full((1, 1, 16, 32), 5.0), -1)
    torch.testing.assert_close(left_from_right[..., 5:], left[..., 5:])
    right_from_left = warp_horizontal(left, torch.full((1, 1, 16, 32), 5.0), +1)
    torch.testing.assert_close(right_from_left[..., :27], right[..., :27])
    assert not in_view(torch.full((1, 1, 16, 32), 5.0), -1)[..., :5].any()
    assert in_view(torch.full((1, 1, 16, 32), 5.0), -1)[..., 5:].all()


def occluder_pair(background: float = 2.0, foreground: float = 10.0, start: int = 60, stop: int = 90):
    """A textured wall at ``background`` px and a textured board at ``foreground`` px covering left
    columns [start, stop); exact views and both true disparities (integer shifts, no interpolation)."""
    height, width = SIZE
    generator = torch.Generator().manual_seed(1)
    wall = torch.rand(3, height, width + 16, generator=generator)
    board = torch.rand(3, height, width + 16, generator=generator)
    xs = torch.arange(width)
    on_board_left = (xs >= start) & (xs < stop)
    on_board_right = (xs + foreground >= start) & (xs + foreground < stop)
    b, f = int(background), int(foreground)
    left = torch.where(on_board_left, board[..., :width], wall[..., :width])
    right = torch.where(on_board_right, board[..., f : f + width], wall[..., b : b + width])
    disparity_left = torch.where(on_board_left, foreground, background).float().expand(1, 1, height, width)
    disparity_right = torch.where(on_board_right, foreground, background).float().expand(1, 1, height, width)
    return left[None], right[None], disparity_left.clone(), disparity_right.clone()


def test_the_band_hidden_from_the_right_camera_fails_the_left_right_check() -> None:
    """Left of the board, (foreground - background) columns of wall are hidden from the right camera:
    exactly those fail the check at the true disparities, and their reconstruction is wrong, so
    leaving them out is what keeps the photometric loss honest."""
    left, right, disparity_left, disparity_right = occluder_pair()
    _, (left_view, right_view) = stereo_terms(
        left, right, disparity_left, disparity_right, StereoLossOptions()
    )
    occluded = torch.zeros(SIZE[1], dtype=torch.bool)
    occluded[52:60] = True  # wall columns 52..59 land on the board's right-view position
    border = torch.arange(SIZE[1]) < 2  # their match lies left of the right image
    failed = ~left_view.consistent[0, 0]
    assert torch.equal(failed.all(dim=0), occluded)
    assert torch.equal(failed.any(dim=0), occluded)
    assert torch.equal(~left_view.visible[0, 0].all(dim=0), border)
    assert torch.equal(left_view.mask[0, 0].all(dim=0), ~occluded & ~border)
    # The occluded band is the only part the truth cannot reconstruct.
    error = left_view.error[0, 0].mean(dim=0)
    clean = torch.ones(SIZE[1], dtype=torch.bool)
    clean[:3] = clean[51:61] = False  # SSIM's 3x3 window reaches one column past the band and border
    assert error[53:59].min() > 5 * error[clean].max()
    # The right view's occlusion is on the board's right side (wall seen only by the right camera).
    assert (~right_view.consistent[0, 0].all(dim=0)).nonzero().flatten().tolist() == list(range(80, 88))


def test_consistency_term_is_zero_at_the_truth_and_grows_with_disagreement() -> None:
    left, right, disparity_left, disparity_right = occluder_pair()
    opts = StereoLossOptions()
    at_truth, _ = stereo_terms(left, right, disparity_left, disparity_right, opts)
    off, views = stereo_terms(left, right, disparity_left, disparity_right + 3.0, opts)
    assert float(at_truth["lr_consistency"]) < 0.01  # only the occluded bands disagree
    assert float(off["lr_consistency"]) > float(at_truth["lr_consistency"]) + 2.0 / SIZE[1]
    assert not views[0].consistent.any()  # 3 px apart everywhere: every pixel fails the 1 px check
    # At the truth, what is left of the photometric loss is mostly the occluded bands: masking them
    # removes most of it (the rest: SSIM windows that reach into a band).
    unmasked, _ = stereo_terms(
        left, right, disparity_left, disparity_right, StereoLossOptions(occlusion_mask=False)
    )
    assert float(at_truth["photometric"]) < 0.3 * float(unmasked["photometric"])


class ShiftOracle(torch.nn.Module):
    """A 'network' whose disparity is the mean of its left input's first channel times 10 per column:
    enough to see which view pair_disparities hands it and how the answer comes back."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"disparity": 10 * left[:, :1].mean(dim=2, keepdim=True).expand_as(left[:, :1])}


def test_right_disparity_comes_from_the_mirrored_swapped_pair() -> None:
    left, right = torch.rand(2, 1, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    outputs, disparity_right = pair_disparities(ShiftOracle(), left, right)
    expected_left = ShiftOracle()(left, right)["disparity"]
    expected_right = flip(ShiftOracle()(flip(right), flip(left))["disparity"])
    torch.testing.assert_close(outputs["disparity"], expected_left)
    torch.testing.assert_close(disparity_right, expected_right)
