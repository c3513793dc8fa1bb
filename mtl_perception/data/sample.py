"""The numpy form of one stereo sample, as loaders read it and augmentation transforms it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mtl_perception.data.labels import IGNORE_INDEX


@dataclass(frozen=True)
class StereoArrays:
    """One rectified stereo frame and its labels as numpy arrays (before tensor conversion).

    Missing labels are already filled (``semantic`` with ignore, ``disparity``/``depth`` with 0,
    masks all False) and flagged by ``has_semantic`` / ``has_depth``, so every transform treats all
    samples alike.

    Geometry labels (DESIGN.md "Sample"): ``disparity_valid`` / ``depth_valid`` are True where the
    pixel is labelled, *including* "infinitely far" (sky, beyond range), which is a real label:

    - measured: valid True, disparity d > 0 px, depth z > 0 m (finite);
    - far:      valid True, disparity 0,        depth +inf;
    - unknown:  valid False, disparity 0,       depth 0.

    So "valid and disparity == 0" (or "depth == +inf") means far; never read 0 as "unknown" without
    the mask. Sources without a far label (KITTI, Middlebury) have no far pixels.
    """

    left: np.ndarray  # HxWx3 uint8 RGB
    right: np.ndarray  # HxWx3 uint8 RGB
    semantic: np.ndarray  # HxW uint8 class ids, IGNORE_INDEX = unlabelled
    disparity: np.ndarray  # HxW float32 pixels of this image, 0 where far or unknown
    depth: np.ndarray  # HxW float32 meters, +inf where far, 0 where unknown
    disparity_valid: np.ndarray  # HxW bool, True where labelled (far included)
    depth_valid: np.ndarray  # HxW bool, True where labelled (far included)
    fx: float  # focal length in pixels of this image (scales with horizontal resizing)
    baseline: float  # meters
    has_semantic: bool
    has_depth: bool
    # Principal-point offset cx_right - cx_left in pixels of this image (scales like fx): depth is
    # fx * B / (d + doffs). 0 for rigs rectified to one principal point (all but Middlebury).
    doffs: float = 0.0
    # The part of the frame as stored that this image shows, as fractions of its width and height
    # (left, top, right, bottom): zoom and crop move it, so maps computed once on the stored frame (a
    # distillation teacher's outputs) can be brought to the augmented image.
    source_region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return self.left.shape[0], self.left.shape[1]

    def replace(self, **changes: object) -> StereoArrays:
        """A copy with some fields replaced (the dataclass is frozen so transforms stay pure)."""
        return dataclasses.replace(self, **changes)


def empty_semantic(height: int, width: int) -> np.ndarray:
    """An all-ignore label map for frames without semantic ground truth."""
    return np.full((height, width), IGNORE_INDEX, dtype=np.uint8)


def depth_from_disparity(
    disparity: np.ndarray, fx: float, baseline: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """Metric depth fx * B / d where d > 0; +inf where ``valid`` and d == 0 (far); 0 elsewhere.

    For rigs with doffs = 0 (Middlebury's loader computes its own depth). Without ``valid`` every
    d <= 0 is unknown (the KITTI convention, no far label).
    """
    depth = np.zeros_like(disparity, dtype=np.float32)
    measured = disparity > 0
    depth[measured] = fx * baseline / disparity[measured]
    if valid is not None:
        depth[valid & ~measured] = np.inf
    return depth
