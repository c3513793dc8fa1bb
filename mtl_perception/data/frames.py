"""Real-looking stereo frames for parity checks and benchmarks: a synthetic dataset or procedural."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.contract import resize_image
from mtl_perception.data import layout
from mtl_perception.errors import UserError
from mtl_perception.model_info import ModelInfo

StereoPair = tuple[np.ndarray, np.ndarray]  # (left, right) HxWx3 uint8 RGB


def dataset_frames(root: str | Path, count: int) -> list[StereoPair]:
    """The first ``count`` stereo pairs (sorted by path) of a synthetic-layout dataset at ``root``."""
    from mtl_perception.data.image_io import read_rgb

    root = Path(root)
    lefts = sorted(root.glob(f"*/*/{layout.LEFT_DIR}/*.png"))[:count]
    if not lefts:
        raise UserError(
            f"{root}: no <split>/<seq>/left/*.png frames; pass a `mtl-perception generate` output"
        )
    return [(read_rgb(p), read_rgb(p.parent.parent / layout.RIGHT_DIR / p.name)) for p in lefts]


def value_noise(
    height: int, width: int, levels: Sequence[tuple[int, float]], rng: np.random.Generator
) -> np.ndarray:
    """HxWx3 float32 in 0..1: weighted mean of colour noise grids ``levels`` = (cells across, weight),
    each upsampled bicubically (coarse cells give blobs, fine ones grain)."""
    texture = np.zeros((height, width, 3), np.float32)
    for cells, weight in levels:
        noise = rng.random((max(2, height * cells // width), cells, 3), dtype=np.float32)
        texture += weight * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return texture / sum(weight for _, weight in levels)


def procedural_frames(size: tuple[int, int], count: int, seed: int = 0) -> list[StereoPair]:
    """Deterministic textured stereo pairs of a ground plane and a sky band.

    The right view is the left view warped by a disparity that grows towards the bottom rows (as a
    road does), so stereo networks see real correspondences rather than noise.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    pairs = []
    rows = np.arange(height, dtype=np.float32)[:, None]
    horizon = 0.4 * height
    disparity = np.clip((rows - horizon) / (height - horizon), 0.0, 1.0) * (0.1 * width)
    map_x = np.arange(width, dtype=np.float32)[None, :] + disparity
    map_y = np.repeat(rows, width, axis=1)
    for _ in range(count):
        # Multi-scale value noise: coarse blobs plus fine grain, coloured, with a sky band on top.
        texture = value_noise(height, width, ((4, 1.0), (16, 1.0), (64, 1.0)), rng)
        sky = rows < horizon
        texture[np.repeat(sky, width, axis=1)] = (0.45, 0.6, 0.85)
        left = np.clip(texture * 255, 0, 255).astype(np.uint8)
        right = cv2.remap(left, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        pairs.append((left, right))
    return pairs


def stereo_frames(size: tuple[int, int], count: int, data_root: str | Path | None = None) -> list[StereoPair]:
    """``count`` frames of ``size`` (H, W): from ``data_root`` when given (resized to ``size``, as a
    camera of that resolution would deliver them), else procedural ones."""
    if not data_root:
        return procedural_frames(size, count)
    height, width = size
    return [
        (resize_image(left, width, height), resize_image(right, width, height))
        for left, right in dataset_frames(data_root, count)
    ]


def frame_feeds(pairs: Sequence[StereoPair], info: ModelInfo) -> list[dict[str, np.ndarray]]:
    """Graph inputs (float32 1x3xHxW, 0..1) for each frame, stretched to the model's input size
    with the runtime's own resize (so parity, calibration and benchmarks feed what a robot feeds)."""
    height, width = info.input_size

    def tensor(view: np.ndarray) -> np.ndarray:
        resized = resize_image(view, width, height)
        return (resized.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)

    # Mono models take the left view only: zip stops at the graph's inputs.
    return [{name: tensor(view) for name, view in zip(info.inputs, pair, strict=False)} for pair in pairs]
