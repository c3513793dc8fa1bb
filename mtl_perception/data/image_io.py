"""Reading dataset PNGs with OpenCV, with one clear error per missing or corrupt file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mtl_perception.errors import UserError


def _read(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: file not found; the dataset is incomplete, re-extract or regenerate it")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise UserError(f"{path}: cannot be decoded as an image; the file is corrupt, replace it")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image as HxWx3 uint8 RGB."""
    image = _read(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_uint16(path: Path) -> np.ndarray:
    """A single-channel 16-bit PNG (disparity, depth) as HxW uint16, values untouched."""
    return _read_single_channel(path, np.dtype(np.uint16))


def read_uint8(path: Path) -> np.ndarray:
    """A single-channel 8-bit PNG (label ids) as HxW uint8, values untouched."""
    return _read_single_channel(path, np.dtype(np.uint8))


def _read_single_channel(path: Path, dtype: np.dtype) -> np.ndarray:
    image = _read(path, cv2.IMREAD_UNCHANGED)
    if image.ndim != 2 or image.dtype != dtype:
        raise UserError(
            f"{path}: expected a single-channel {dtype.itemsize * 8}-bit PNG, "
            f"got {image.dtype} with shape {image.shape}"
        )
    return image


def check_size(path: Path, array: np.ndarray, size: tuple[int, int]) -> None:
    """Refuse a file whose height x width differs from the frame's left image."""
    if array.shape[:2] != size:
        raise UserError(
            f"{path}: size {array.shape[0]}x{array.shape[1]} does not match the left image "
            f"({size[0]}x{size[1]}); the files of this frame do not belong together"
        )
