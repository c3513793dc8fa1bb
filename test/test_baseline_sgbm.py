"""The SGBM baseline against known disparities: fixed-point scaling, invalid pixels, input checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception.baselines.sgbm import num_disparities, sgbm_disparity, sgbm_matcher

HEIGHT, WIDTH = 64, 160
MAX_DISPARITY = 32.0


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB value noise with a few-pixel grain: matchable, with sub-pixel gradients."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 2, width // 2, 3), dtype=np.float32)
    return (cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(
        np.uint8
    )


def shifted_pair(disparity: float) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) with right(x) = left(x + disparity) everywhere: a wall at one known disparity.

    Half-pixel shifts are exact: both views are cut from a texture at twice the resolution,
    ``2 * disparity`` pixels apart, then halved the same way.
    """
    steps = round(2 * disparity)
    assert steps == 2 * disparity, "whole or half pixels only"
    wide = texture(2 * HEIGHT, 2 * WIDTH + steps)

    def halve(view: np.ndarray) -> np.ndarray:
        return cv2.resize(view, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)

    return halve(wide[:, : 2 * WIDTH]), halve(wide[:, steps : steps + 2 * WIDTH])


@pytest.mark.parametrize("disparity", [7.0, 12.5])
def test_known_shift_is_measured_in_pixels(disparity: float) -> None:
    left, right = shifted_pair(disparity)
    result = sgbm_disparity(sgbm_matcher(MAX_DISPARITY), left, right)
    assert result.shape == (HEIGHT, WIDTH) and result.dtype == np.float32
    # Interior: past the columns whose whole search range is not in the right view, off the rows
    # the matching block overhangs.
    interior = result[8:-8, num_disparities(MAX_DISPARITY) + 8 : -8]
    found = np.isfinite(interior)
    assert found.mean() > 0.9
    # A wrong fixed-point scale (raw int16 = d * 16) would put this median at 2 d, d / 2 or 16 d.
    assert np.median(interior[found]) == pytest.approx(disparity, abs=0.25)


def test_invalid_pixels_are_nan_never_a_negative_disparity() -> None:
    left, right = shifted_pair(7.0)
    matcher = sgbm_matcher(MAX_DISPARITY)
    result = sgbm_disparity(matcher, left, right)
    raw = matcher.compute(left, right)
    # OpenCV's "no match" code is (minDisparity - 1) * 16 = -16: those pixels, and only those, are NaN.
    assert (raw == -16).any()
    np.testing.assert_array_equal(np.isnan(result), raw < 0)
    assert np.nanmin(result) >= 0.0 and np.nanmax(result) <= num_disparities(MAX_DISPARITY)
    # The left-most columns see nothing of their match in the right view: all unmatched.
    assert np.isnan(result[:, :7]).all()


def test_search_range_is_rounded_up_to_multiples_of_16() -> None:
    assert [num_disparities(d) for d in (1.0, 16.0, 16.5, 96.0, 100.0)] == [16, 16, 32, 96, 112]
    assert sgbm_matcher(100.0).getNumDisparities() == 112


def test_refuses_other_than_uint8_rgb_pairs_of_one_size() -> None:
    left, right = shifted_pair(7.0)
    matcher = sgbm_matcher(MAX_DISPARITY)
    with pytest.raises(ValueError, match="uint8 RGB"):
        sgbm_disparity(matcher, left.astype(np.float32), right)
    with pytest.raises(ValueError, match="uint8 RGB"):
        sgbm_disparity(matcher, left, cv2.cvtColor(right, cv2.COLOR_RGB2GRAY))
    with pytest.raises(ValueError, match="differ"):
        sgbm_disparity(matcher, left, right[:, :-1])
