"""Procedural textures (numpy noise) written to PNG files that pybullet's ``loadTexture`` reads.

Hand-written because the point is a few cheap, seedable patterns (asphalt grain, grass, paving,
facades with windows, foliage); no texture library ships those without assets.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TEXTURE_SIZE = 128


def value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Tileable-looking multi-octave value noise in [0, 1], shape (size, size)."""
    out = np.zeros((size, size), dtype=np.float32)
    total = 0.0
    for octave in range(octaves):
        cells = 4 * 2**octave
        grid = rng.random((cells, cells), dtype=np.float32)
        layer = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight = 0.5**octave
        out += weight * layer
        total += weight
    return np.clip(out / total, 0.0, 1.0)


def _tint(noise: np.ndarray, base: np.ndarray, contrast: float) -> np.ndarray:
    img = base[None, None, :] * (1.0 + contrast * (noise[..., None] - 0.5))
    return np.clip(img, 0, 255).astype(np.uint8)


def asphalt(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(60, 110)
    base = np.array([grey, grey, grey * rng.uniform(0.97, 1.05)])
    noise = 0.6 * value_noise(rng, TEXTURE_SIZE) + 0.4 * rng.random((TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(noise, base, 0.5)


def grass(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(70, 120), rng.uniform(120, 170), rng.uniform(40, 80)])
    noise = 0.7 * value_noise(rng, TEXTURE_SIZE) + 0.3 * rng.random((TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(noise, base, 0.8)


def paving(rng: np.random.Generator) -> np.ndarray:
    """Grey slabs with darker joints."""
    grey = rng.uniform(140, 200)
    img = _tint(value_noise(rng, TEXTURE_SIZE), np.array([grey, grey * 0.97, grey * 0.93]), 0.3)
    step = TEXTURE_SIZE // 4
    img[::step, :] = img[::step, :] * 0.6
    img[:, ::step] = img[:, ::step] * 0.6
    return img


def facade(rng: np.random.Generator) -> np.ndarray:
    """Wall colour with a grid of windows."""
    wall = rng.uniform(90, 220, size=3)
    img = _tint(value_noise(rng, TEXTURE_SIZE), wall, 0.3)
    glass = rng.uniform(30, 90, size=3)
    rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    ch, cw = TEXTURE_SIZE // rows, TEXTURE_SIZE // cols
    for r in range(rows):
        for c in range(cols):
            y0, x0 = r * ch + ch // 4, c * cw + cw // 4
            img[y0 : y0 + ch // 2, x0 : x0 + cw // 2] = glass
    return img


def foliage(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(30, 80), rng.uniform(80, 140), rng.uniform(20, 60)])
    return _tint(
        rng.random((TEXTURE_SIZE, TEXTURE_SIZE)) * 0.5 + value_noise(rng, TEXTURE_SIZE) * 0.5, base, 1.0
    )


def bark(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(70, 110), rng.uniform(50, 75), rng.uniform(30, 50)])
    stripes = cv2.resize(rng.random((1, 16), dtype=np.float32), (TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(0.5 * stripes + 0.5 * value_noise(rng, TEXTURE_SIZE), base, 0.7)


def clothing(rng: np.random.Generator) -> np.ndarray:
    return _tint(value_noise(rng, TEXTURE_SIZE, octaves=2), rng.uniform(20, 230, size=3), 0.4)


TEXTURE_KINDS = {
    "asphalt": asphalt,
    "grass": grass,
    "paving": paving,
    "facade": facade,
    "foliage": foliage,
    "bark": bark,
    "clothing": clothing,
}


def write_texture(image: np.ndarray, path: Path) -> Path:
    """Write an RGB texture to ``path`` (PNG) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write texture {path}")
    return path
