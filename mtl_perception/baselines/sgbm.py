"""OpenCV semi-global matching: the one SGBM baseline that `evaluate` scores and `benchmark` times.

Torch-free (numpy + OpenCV) and fed uint8 RGB images, so the README's SGBM accuracy row and its
SGBM speed row are the same matcher with the same settings on the same kind of input.
"""

from __future__ import annotations

import cv2
import numpy as np

BLOCK_SIZE = 5
CHANNELS = 3  # RGB input: P1/P2 below scale with the channel count
# StereoSGBM returns int16 disparity in fixed point with 4 fractional bits (value = d * 16).
FIXED_POINT_SCALE = 16.0


def num_disparities(max_disparity: float) -> int:
    """The search range SGBM is given: ``max_disparity`` rounded up to a multiple of 16 (its rule)."""
    return max(16, int(np.ceil(max_disparity / 16.0)) * 16)


def sgbm_matcher(max_disparity: float, block_size: int = BLOCK_SIZE) -> cv2.StereoSGBM:
    """StereoSGBM tuned for ~512x256 RGB driving images (3-way, smoothness P1/P2 per OpenCV's guide)."""
    return cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=num_disparities(max_disparity),
        blockSize=block_size,
        P1=8 * CHANNELS * block_size**2,
        P2=32 * CHANNELS * block_size**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        preFilterCap=63,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )


def sgbm_disparity(matcher: cv2.StereoSGBM, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """HxW float32 disparity in pixels of the left view; NaN where SGBM found none.

    ``left`` and ``right`` are HxWx3 uint8 RGB of the same size. OpenCV marks a pixel without a
    match (left border, occlusion, failed uniqueness or left-right check, speckle) with
    ``(minDisparity - 1) * 16``; that becomes NaN here, never a disparity of -1/16 or -1.
    """
    for name, image in (("left", left), ("right", right)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != CHANNELS:
            raise ValueError(f"{name}: expected HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} differ in size")
    raw = matcher.compute(np.ascontiguousarray(left), np.ascontiguousarray(right))
    invalid = raw < matcher.getMinDisparity() * FIXED_POINT_SCALE
    disparity = raw.astype(np.float32) / FIXED_POINT_SCALE
    disparity[invalid] = np.nan
    return disparity
