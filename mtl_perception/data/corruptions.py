"""Fixed corruption recipes for out-of-distribution evaluation (issue 12), committed before any run.

Each recipe has one fixed setting, applied to 8-bit RGB frames (HxWx3 uint8) at the size they are
stored at (512x256 for the synthetic data), before any resizing to a model's input:

| recipe           | what                                          | setting                          |
|------------------|-----------------------------------------------|----------------------------------|
| `gaussian_noise` | additive Gaussian noise, clipped to 0..255    | sigma 20 (8-bit units)           |
| `gaussian_blur`  | defocus-like Gaussian blur                    | sigma 2.0 px                     |
| `darkness`       | exposure cut in linear light (sRGB transfer)  | -2 EV (x 0.25 light), requantised|
| `jpeg`           | JPEG re-encoding (blocks, ringing, chroma)    | quality 15                       |

(ImageNet-C's noise of severity 1 is sigma 0.08 x 255 = 20; its JPEG of severity 3 is quality 15.)
A stereo pair gets the same corruption in both views (same blur, darkening and quality, as one lens
setting or one codec would give); only noise is drawn independently per view, as two sensors would.
Deterministic: the same image, recipe and seed give the same bytes; ``frame_seed`` gives a frame
a seed that does not depend on the process (Python's ``hash`` does).

Frames corrupted this way are evaluation-only, like the held-out generator domain
(``mtl_perception.sim.domains``): never train or select models on them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from mtl_perception.errors import UserError

NOISE_SIGMA = 20.0
BLUR_SIGMA = 2.0
DARKNESS_EV = -2.0
JPEG_QUALITY = 15


@dataclass(frozen=True)
class Recipe:
    """A named corruption: ``apply(image, rng)`` maps an HxWx3 uint8 RGB image to another."""

    name: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # rng: only noise draws from it


def _gaussian_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)


# Exposure acts on light, not on the encoded values: a 256-entry table through linear light.
_DARKNESS_LUT = np.rint(
    255.0 * _linear_to_srgb(_srgb_to_linear(np.arange(256) / 255.0) * 2.0**DARKNESS_EV)
).astype(np.uint8)


def _darkness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _DARKNESS_LUT[image]


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # OpenCV encodes BGR: convert so chroma subsampling falls on the real colour channels.
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


RECIPES: dict[str, Recipe] = {
    "gaussian_noise": Recipe("gaussian_noise", _gaussian_noise),
    "gaussian_blur": Recipe("gaussian_blur", _gaussian_blur),
    "darkness": Recipe("darkness", _darkness),
    "jpeg": Recipe("jpeg", _jpeg),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"unknown corruption {name!r}; choose from {list(RECIPES)}")
    return RECIPES[name]


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")


def frame_seed(sequence: str, frame: int) -> int:
    """A frame's corruption seed, the same in every process and on every machine."""
    return zlib.crc32(f"{sequence}/{frame}".encode())


def corrupt(image: np.ndarray, recipe: str, seed: int = 0) -> np.ndarray:
    """``image`` (HxWx3 uint8 RGB) corrupted by the named recipe; deterministic given ``seed``."""
    _check(image)
    return _recipe(recipe).apply(image, np.random.default_rng([seed, 0]))


def corrupt_pair(
    left: np.ndarray, right: np.ndarray, recipe: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A stereo pair corrupted alike (noise drawn per view); ``left`` equals ``corrupt(left, ...)``."""
    _check(left)
    _check(right)
    chosen = _recipe(recipe)
    return (
        chosen.apply(left, np.random.default_rng([seed, 0])),
        chosen.apply(right, np.random.default_rng([seed, 1])),
    )
