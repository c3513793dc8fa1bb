"""Fixed corruption recipes: deterministic, and each changes the image the way its name says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception.data.corruptions import RECIPES, corrupt, corrupt_pair, frame_seed
from mtl_perception.errors import UserError


def _scene(seed: int = 0) -> np.ndarray:
    """A 64x128 RGB image with smooth shading, hard edges and fine texture (like a rendered frame)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:64, 0:128].astype(np.float32)
    base = 60.0 + 100.0 * cols / 127.0 + 30.0 * np.sin(rows / 6.0)
    base += 50.0 * ((rows // 8 + cols // 8) % 2)  # checkerboard edges
    texture = cv2.GaussianBlur(rng.normal(0.0, 12.0, (64, 128)).astype(np.float32), (0, 0), 0.7)
    image = (base + texture)[..., None] * np.array([1.0, 0.9, 0.75], dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _high_frequency(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image: the energy at the finest scale."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float((cv2.Laplacian(grey, cv2.CV_32F) ** 2).mean())


def test_recipes_are_deterministic_and_keep_shape() -> None:
    image = _scene()
    for name in RECIPES:
        out = corrupt(image, name, seed=7)
        assert out.dtype == np.uint8 and out.shape == image.shape, name
        np.testing.assert_array_equal(corrupt(image, name, seed=7), out, err_msg=name)
        assert np.abs(out.astype(np.int16) - image).mean() > 1.0, name  # it changed the image
    # Only noise depends on the seed.
    assert not np.array_equal(corrupt(image, "gaussian_noise", 7), corrupt(image, "gaussian_noise", 8))
    np.testing.assert_array_equal(corrupt(image, "gaussian_blur", 7), corrupt(image, "gaussian_blur", 8))


def test_noise_raises_and_blur_lowers_high_frequency_energy() -> None:
    image = _scene()
    clean = _high_frequency(image)
    noisy = corrupt(image, "gaussian_noise", seed=1)
    assert _high_frequency(noisy) > 3.0 * clean
    # Added noise has the recipe's sigma (20) and zero mean where nothing clips.
    residual = noisy.astype(np.float32) - image
    inside = (image > 70) & (image < 185)
    assert residual[inside].std() == pytest.approx(20.0, rel=0.05)
    assert abs(residual[inside].mean()) < 0.5
    assert _high_frequency(corrupt(image, "gaussian_blur", seed=1)) < 0.2 * clean


def test_darkness_lowers_brightness_and_keeps_order() -> None:
    image = _scene()
    dark = corrupt(image, "darkness")
    assert dark.mean() < 0.6 * image.mean()
    # -2 EV in linear light: sRGB mid-grey 128 (0.216 linear) -> 0.054 linear -> sRGB 66.
    assert corrupt(np.full((2, 2, 3), 128, np.uint8), "darkness")[0, 0, 0] == 66
    levels = corrupt(np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3), "darkness")[0, :, 0]
    assert (
        (np.diff(levels.astype(int)) >= 0).all() and levels[0] == 0 and levels[-1] == 137
    )  # white: 0.25 linear


def test_jpeg_leaves_block_artefacts() -> None:
    image = _scene()
    out = corrupt(image, "jpeg").astype(np.float32)
    grey = out.mean(axis=2)
    # Steps between columns 7|8, 15|16, ... (8x8 block edges) exceed those inside the blocks.
    steps = np.abs(np.diff(grey - image.mean(axis=2), axis=1)).mean(axis=0)
    at_edges = steps[7::8].mean()
    inside = np.delete(steps, np.s_[7::8]).mean()
    assert at_edges > 1.3 * inside, (at_edges, inside)


def test_pair_gets_one_corruption_with_noise_drawn_per_view() -> None:
    image = _scene()
    for name in ("gaussian_blur", "darkness", "jpeg"):
        left, right = corrupt_pair(image, image, name, seed=3)
        np.testing.assert_array_equal(left, right, err_msg=name)
    left, right = corrupt_pair(image, image, "gaussian_noise", seed=3)
    np.testing.assert_array_equal(left, corrupt(image, "gaussian_noise", seed=3))
    independent = (left.astype(np.float32) - image) - (right.astype(np.float32) - image)
    assert independent.std() > 20.0  # two independent sigma-20 draws: ~28


def test_bad_inputs_are_refused_and_frame_seeds_are_stable() -> None:
    with pytest.raises(UserError, match="unknown corruption"):
        corrupt(_scene(), "fog")
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_scene().astype(np.float32), "darkness")
    with pytest.raises(ValueError, match="HxWx3"):
        corrupt_pair(_scene(), _scene()[..., 0], "darkness")
    # Fixed values: the same on every machine and in every process.
    assert frame_seed("test_0000", 3) == 4207697388
    assert frame_seed("test_0000", 3) != frame_seed("test_0001", 3)
