"""Procedural stereo pairs with exact disparity and no monocular cue (in the spirit of FlyingThings).

Each pair is a stack of textured layers (a backdrop and random shapes) at random disparities, on
random slanted planes, painted back to front into both views: the left view at the layer's own
coordinates, the right view where each point lands after its shift. Depth order follows disparity
(nearer layers occlude), so occlusions are real. Where a layer sits, what it looks like and how far
away it is are drawn independently: nothing in the left view alone tells its disparity, so a
network can only solve these pairs by matching. They cost a few milliseconds each on a CPU core
and need no files, which makes them the first training stage and a standing part of the mix that
keeps the right view indispensable.

Textures mix multi-scale colour noise, stripes and crops of real photographs
(``data.real_photos.texture_photos``, never images of a stereo benchmark); some layers are nearly
flat, as real walls and skies are. A backdrop at disparity 0 is "infinitely far" (a real label).
Semantics are unlabelled (ignore) and there is no metric depth (``depth_valid`` all False).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mtl_perception.data.augment import AugmentConfig, augment_stereo
from mtl_perception.data.base import to_sample
from mtl_perception.data.frames import value_noise
from mtl_perception.data.sample import StereoArrays, empty_semantic

SEQUENCE_NAME = "procedural"
# The training config's data.kind for procedural pairs alone.
PROCEDURAL_KIND = "procedural"


@dataclass(frozen=True)
class ProceduralConfig:
    """What the layered scenes look like. Disparities are in pixels of ``size``."""

    size: tuple[int, int] = (256, 512)  # [H, W]
    max_disparity: float = 90.0  # the nearest layer's disparity stays below this
    layers: tuple[int, int] = (4, 12)  # shapes per scene, [min, max]
    far_backdrop_probability: float = 0.25  # backdrop at disparity 0 ("infinitely far")
    flat_texture_probability: float = 0.1  # nearly uniform layers: matching must fill them in
    photo_probability: float = 0.4  # layer textured by a photo crop (when photos are available)
    # Scenes whose layers all wear one fine-grained noise look: no edge in the left view marks
    # where a layer ends, so its outline must come from matching (as in a random-dot stereogram,
    # the probe that caught the net smearing disparity across outlines it could not see).
    camouflage_probability: float = 0.0
    max_slant: float = 0.08  # |d(disparity)/dx| and |d(disparity)/dy| of a slanted layer's plane


def _texture(
    height: int, width: int, rng: np.random.Generator, photos: list[np.ndarray], config: ProceduralConfig
) -> np.ndarray:
    """HxWx3 float32 0..1: photo crop, colour noise, stripes or a nearly flat colour."""
    draw = rng.random()
    if draw < config.flat_texture_probability:
        base = rng.random(3, dtype=np.float32)
        return np.clip(base + 0.03 * value_noise(height, width, ((4, 1.0),), rng) - 0.015, 0, 1)
    if photos and draw < config.flat_texture_probability + config.photo_probability:
        photo = photos[rng.integers(len(photos))]
        scale = rng.uniform(0.3, 1.5)
        crop_h = min(photo.shape[0], max(8, round(height * scale)))
        crop_w = min(photo.shape[1], max(8, round(width * scale)))
        y = rng.integers(photo.shape[0] - crop_h + 1)
        x = rng.integers(photo.shape[1] - crop_w + 1)
        crop = photo[y : y + crop_h, x : x + crop_w]
        return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    if draw < 0.85:
        cells = sorted(rng.choice([2, 4, 8, 16, 32, 64, 128], size=3, replace=False))
        levels = tuple((int(c), float(rng.uniform(0.2, 1.0))) for c in cells)
        texture = value_noise(height, width, levels, rng)
        # Stretch contrast around the mean so textures range from faint to strong.
        return np.clip(0.5 + (texture - 0.5) * rng.uniform(0.5, 3.0), 0, 1).astype(np.float32)
    period = rng.uniform(4, 40)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    wave = 0.5 + 0.5 * np.sin(phase)[..., None]
    colours = rng.random((2, 3), dtype=np.float32)
    return colours[0] * wave + colours[1] * (1 - wave)


def _camouflage(height: int, width: int, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A fine-grained noise look (grain of 1/32..1/256 of the width, grey or colour, one contrast);
    each call paints a fresh texture of it, so layers differ in content but not in appearance."""
    cells = sorted(rng.choice([32, 64, 128, 256], size=2, replace=False))
    levels = tuple((int(c), float(rng.uniform(0.3, 1.0))) for c in cells)
    contrast = rng.uniform(1.0, 3.0)
    grey = rng.random() < 0.5

    def paint() -> np.ndarray:
        texture = value_noise(height, width, levels, rng)
        if grey:
            texture = np.repeat(texture.mean(axis=2, keepdims=True), 3, axis=2)
        return np.clip(0.5 + (texture - 0.5) * contrast, 0, 1).astype(np.float32)

    return paint


def _shape_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """HxW uint8 mask of one random ellipse, rectangle or polygon."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
    size = rng.uniform(0.05, 0.45) * width
    kind = rng.integers(3)
    if kind == 0:
        axes = (max(2, round(size * rng.uniform(0.3, 1.0))), max(2, round(size * rng.uniform(0.3, 1.0))))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        corners = 4 if kind == 1 else int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, corners)) if kind == 2 else np.arange(4) * math.pi / 2
        angles = angles + rng.uniform(0, math.pi)
        radii = size * rng.uniform(0.4, 1.0, corners)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def _plane(
    size: tuple[int, int], disparity: float, slant: float, max_disparity: float, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(a, b, c) of d(x, y) = a + b x + c y in left-view pixels: ``disparity`` at a random point, half
    the layers slanted; a plane leaving [0, max_disparity) anywhere in the image is made fronto-parallel."""
    height, width = size
    if rng.random() < 0.5:
        return disparity, 0.0, 0.0
    b, c = rng.uniform(-slant, slant, 2)
    a = disparity - b * rng.uniform(0, width) - c * rng.uniform(0, height)
    corners = [a + b * x + c * y for x in (0, width) for y in (0, height)]
    if min(corners) < 0 or max(corners) >= max_disparity:
        return disparity, 0.0, 0.0
    return a, b, c


def layered_pair(
    config: ProceduralConfig, rng: np.random.Generator, photos: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right HxWx3 uint8, left disparity HxW float32) of one random layered scene."""
    photos = photos or []
    height, width = config.size
    count = int(rng.integers(config.layers[0], config.layers[1] + 1))
    far = rng.random() < config.far_backdrop_probability
    backdrop = 0.0 if far else rng.uniform(0.5, 0.3 * config.max_disparity)
    disparities = np.sort(rng.uniform(backdrop, config.max_disparity, count))
    # The backdrop covers everything; shapes follow back to front (larger disparity = nearer).
    layers = [(np.ones((height, width), np.uint8), backdrop, 0.0 if far else config.max_slant)]
    layers += [(_shape_mask(height, width, rng), d, config.max_slant) for d in disparities]

    left = np.zeros((height, width, 3), np.float32)
    right = np.zeros((height, width, 3), np.float32)
    truth = np.zeros((height, width), np.float32)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    # Drawn only when enabled, so scenes without camouflage stay those of earlier versions.
    camouflaged = config.camouflage_probability > 0 and rng.random() < config.camouflage_probability
    paint = _camouflage(height, width, rng) if camouflaged else None
    for mask, disparity, slant in layers:
        a, b, c = _plane(config.size, disparity, slant, config.max_disparity, rng)
        texture = paint() if paint is not None else _texture(height, width, rng, photos, config)
        inside = mask.astype(bool)
        np.copyto(left, texture, where=inside[..., None])
        np.copyto(truth, a + b * cols + c * rows if b or c else np.float32(a), where=inside)
        # Right pixel x_r shows left point x_l = x_r + d(x_l); for a plane d = a + b x + c y that is
        # x_l = (x_r + a + c y) / (1 - b), exact (no approximation of the shift).
        source_x = ((cols + a + c * rows) / (1.0 - b)).astype(np.float32)
        warped_mask = cv2.remap(mask, source_x, rows, cv2.INTER_NEAREST, borderValue=0).astype(bool)
        warped = cv2.remap(texture, source_x, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        np.copyto(right, warped, where=warped_mask[..., None])
    left, right = (np.clip(view * 255.0 + 0.5, 0, 255).astype(np.uint8) for view in (left, right))
    return left, right, truth


class ProceduralStereoDataset(Dataset):
    """``length`` layered pairs as the DESIGN.md sample dicts every loader gives: disparity labelled
    everywhere (far included), semantics ignored, no depth.

    Without ``seed`` every read draws a fresh scene from torch's generator (like the loaders'
    augmentation: a run repeats under ``torch.manual_seed``, workers differ); with ``seed`` index i
    is always the same scene (validation).
    """

    def __init__(
        self,
        length: int,
        config: ProceduralConfig | None = None,
        augment: AugmentConfig | None = None,
        photos: list[np.ndarray] | None = None,
        seed: int | None = None,
    ) -> None:
        from mtl_perception.data.real_photos import texture_photos

        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = length
        self.config = config or ProceduralConfig()
        self.augment = augment
        self.photos = texture_photos() if photos is None else photos
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def arrays(self, rng: np.random.Generator) -> StereoArrays:
        left, right, disparity = layered_pair(self.config, rng, self.photos)
        height, width = self.config.size
        return StereoArrays(
            left=left,
            right=right,
            semantic=empty_semantic(height, width),
            disparity=disparity,
            depth=np.zeros((height, width), np.float32),
            disparity_valid=np.ones((height, width), bool),
            depth_valid=np.zeros((height, width), bool),
            fx=float(width) / 2.0,  # nominal: the pairs have no metric scale
            baseline=1.0,
            has_semantic=False,
            # Geometry is labelled (disparity everywhere); depth_valid is all False: no metric scale.
            has_depth=True,
        )

    def __getitem__(self, index: int) -> dict:
        if self.seed is not None:
            rng = np.random.default_rng((self.seed, index))
        else:
            rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
        arrays = self.arrays(rng)
        if self.augment is not None:
            arrays = augment_stereo(arrays, self.augment, rng)
        return to_sample(arrays, SEQUENCE_NAME, index, math.nan)
