"""The numpy form of one stereo sample, as loaders read it and augmentation transforms it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mtl_perception.data.labels import IGNORE_INDEX


@dataclass(frozen=True)
class StereoArrays:
    """One rectified stereo frame and its labels as numpy arrays (before tensor conversion).

    Missing labels are already filled (``semantic`` with ignore, ``disparity``/``depth`` with 0)
    and flagged by ``has_semantic`` / ``has_depth``, so every transform treats all samples alike.
    """

    left: np.ndarray  # HxWx3 uint8 RGB
    right: np.ndarray  # HxWx3 uint8 RGB
    semantic: np.ndarray  # HxW uint8 class ids, IGNORE_INDEX = unlabelled
    disparity: np.ndarray  # HxW float32 pixels of this image, 0 = invalid
    depth: np.ndarray  # HxW float32 meters, 0 = invalid
    fx: float  # focal length in pixels of this image (scales with horizontal resizing)
    baseline: float  # meters
    has_semantic: bool
    has_depth: bool

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


def depth_from_disparity(disparity: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """Metric depth fx * B / d where the disparity is valid (> 0), 0 elsewhere."""
    depth = np.zeros_like(disparity, dtype=np.float32)
    valid = disparity > 0
    depth[valid] = fx * baseline / disparity[valid]
    return depth
