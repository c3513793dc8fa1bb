"""Joint augmentation of a stereo sample: geometry shared by both views and all labels.

Geometric steps (zoom, crop) move left, right and every label map together, and a zoom by s
multiplies disparity by s (disparity is in pixels of the image); depth keeps its metric values.
There is deliberately no horizontal flip: mirroring a rectified pair only stays a valid stereo pair
if the views are also swapped, which would turn the right camera into the model's reference view and
break the left-referenced disparity and semantic labels.

Colour jitter is written with numpy/OpenCV rather than taken from torchvision because it must run
on uint8 numpy arrays before tensor conversion, draw from a numpy Generator (determinism), and share
or not share its parameters between the two views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mtl_perception.contract import resize_image
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.sample import StereoArrays


@dataclass(frozen=True)
class AugmentConfig:
    """The training YAML's ``augmentation:`` section.

    Jitter amounts are half-widths of uniform ranges around "unchanged": a factor is drawn from
    [1 - amount, 1 + amount]; ``hue`` shifts by up to that fraction of the colour circle.
    """

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    gamma: float = 0.1
    # False draws jitter per view: real stereo cameras differ in exposure and white balance.
    same_on_both_views: bool = False
    blur_probability: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    # [H, W] of the output; None keeps the input size (zoom-in crops, zoom-out pads).
    crop_size: tuple[int, int] | None = None
    # Zoom factor drawn log-uniformly from [min, max]; (1, 1) disables zoom.
    zoom_range: tuple[float, float] = (1.0, 1.0)
    # Right view only (labels are the left view's): a rectangle of other right-view pixels pasted
    # over it (a surface only one camera sees; the net must fall back on context there, not on a
    # wrong match), and a small vertical offset (real rectification is never exact). 0 disables.
    right_occlusion_probability: float = 0.0
    max_vertical_shift: float = 0.0  # pixels, drawn uniformly in [-max, max]

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "gamma"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0.0 <= self.blur_probability <= 1.0:
            raise ValueError(f"blur_probability must be in [0, 1], got {self.blur_probability}")
        if len(self.blur_sigma) != 2 or not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be [min, max] with 0 < min <= max, got {self.blur_sigma}")
        if len(self.zoom_range) != 2 or not 0.0 < self.zoom_range[0] <= self.zoom_range[1]:
            raise ValueError(f"zoom_range must be [min, max] with 0 < min <= max, got {self.zoom_range}")
        if not 0.0 <= self.right_occlusion_probability <= 1.0:
            raise ValueError(
                f"right_occlusion_probability must be in [0, 1], got {self.right_occlusion_probability}"
            )
        if not 0.0 <= self.max_vertical_shift <= 4.0:
            raise ValueError(f"max_vertical_shift must be in [0, 4] px, got {self.max_vertical_shift}")
        if self.crop_size is not None and (
            len(self.crop_size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.crop_size)
        ):
            raise ValueError(f"crop_size must be [height, width] of positive integers, got {self.crop_size}")


# -- geometry ------------------------------------------------------------------------------------


def resize_stereo(arrays: StereoArrays, size: tuple[int, int]) -> StereoArrays:
    """Resize a sample to ``size`` = (H, W): images as the runtime resizes camera frames
    (``contract.resize_image``, so evaluation sees the pixels a deployed model sees), labels nearest,
    disparity and fx * sx.

    Depth keeps its values; nearest sampling never mixes an unknown 0 or a far +inf into a
    neighbour, and the validity masks are sampled at the same pixels as their labels.
    """
    height, width = size
    if (height, width) == arrays.size:
        return arrays
    scale_x = width / arrays.size[1]

    def nearest(label: np.ndarray) -> np.ndarray:
        # NEAREST_EXACT samples pixel centres like the image resize (NEAREST is off by half a pixel).
        return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)

    def nearest_mask(mask: np.ndarray) -> np.ndarray:
        return nearest(mask.astype(np.uint8)).astype(bool)

    return arrays.replace(
        left=resize_image(arrays.left, width, height),
        right=resize_image(arrays.right, width, height),
        semantic=nearest(arrays.semantic),
        disparity=nearest(arrays.disparity) * np.float32(scale_x),
        depth=nearest(arrays.depth),
        disparity_valid=nearest_mask(arrays.disparity_valid),
        depth_valid=nearest_mask(arrays.depth_valid),
        fx=arrays.fx * scale_x,
        doffs=arrays.doffs * scale_x,
    )


def _window(length: int, target: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """Source and destination slices of a random crop (length >= target) or pad (length < target)."""
    if length >= target:
        start = int(rng.integers(0, length - target + 1))
        return slice(start, start + target), slice(0, target)
    start = int(rng.integers(0, target - length + 1))
    return slice(0, length), slice(start, start + length)


def crop_or_pad(arrays: StereoArrays, size: tuple[int, int], rng: np.random.Generator) -> StereoArrays:
    """One random window of ``size`` applied to both views and all labels; padding is 0 / ignore /
    unknown (validity masks False).

    The same window on both views keeps the pair rectified, so disparity values stay unchanged.
    """
    (height, width), target = arrays.size, size
    src_y, dst_y = _window(height, target[0], rng)
    src_x, dst_x = _window(width, target[1], rng)
    # The output's edges in this image's pixels (a pad starts before 0), then in the stored frame.
    left, top, right, bottom = arrays.source_region
    x0, y0 = (src_x.start - dst_x.start) / width, (src_y.start - dst_y.start) / height
    x1, y1 = x0 + target[1] / width, y0 + target[0] / height
    region = (
        left + (right - left) * x0,
        top + (bottom - top) * y0,
        left + (right - left) * x1,
        top + (bottom - top) * y1,
    )

    def place(array: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(target + array.shape[2:], fill, dtype=array.dtype)
        out[dst_y, dst_x] = array[src_y, src_x]
        return out

    return arrays.replace(
        left=place(arrays.left, 0),
        right=place(arrays.right, 0),
        semantic=place(arrays.semantic, IGNORE_INDEX),
        disparity=place(arrays.disparity, 0.0),
        depth=place(arrays.depth, 0.0),
        disparity_valid=place(arrays.disparity_valid, False),
        depth_valid=place(arrays.depth_valid, False),
        source_region=region,
    )


def _zoom(arrays: StereoArrays, zoom_range: tuple[float, float], rng: np.random.Generator) -> StereoArrays:
    low, high = zoom_range
    factor = math.exp(rng.uniform(math.log(low), math.log(high)))  # log-uniform: in and out alike
    height, width = arrays.size
    return resize_stereo(arrays, (max(1, round(height * factor)), max(1, round(width * factor))))


# -- photometry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Photometric:
    """Jitter parameters of one view (1.0 / 0.0 = unchanged)."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    gamma: float
    blur_sigma: float


def _draw_photometric(config: AugmentConfig, rng: np.random.Generator) -> _Photometric:
    # Every value is always drawn so the random stream does not depend on which steps are enabled.
    brightness = rng.uniform(1 - config.brightness, 1 + config.brightness)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    saturation = rng.uniform(1 - config.saturation, 1 + config.saturation)
    hue = rng.uniform(-config.hue, config.hue)
    gamma = rng.uniform(1 - config.gamma, 1 + config.gamma)
    blur = rng.uniform() < config.blur_probability
    sigma = rng.uniform(*config.blur_sigma)
    return _Photometric(brightness, contrast, saturation, hue, gamma, sigma if blur else 0.0)


def _apply_photometric(image: np.ndarray, p: _Photometric) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    x *= p.brightness
    gray = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2GRAY)
    x = (x - gray.mean()) * p.contrast + gray.mean()
    gray = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2GRAY)[..., None]
    x = np.clip((x - gray) * p.saturation + gray, 0.0, 1.0)
    if p.hue != 0.0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float32 input: hue in degrees [0, 360)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * p.hue) % 360.0
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    x = np.power(x, p.gamma)
    if p.blur_sigma > 0.0:
        x = cv2.GaussianBlur(x, (0, 0), p.blur_sigma)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def jitter_colors(arrays: StereoArrays, config: AugmentConfig, rng: np.random.Generator) -> StereoArrays:
    """Photometric jitter and blur of the two images (labels untouched)."""
    left_params = _draw_photometric(config, rng)
    right_params = left_params if config.same_on_both_views else _draw_photometric(config, rng)
    return arrays.replace(
        left=_apply_photometric(arrays.left, left_params),
        right=_apply_photometric(arrays.right, right_params),
    )


# -- right view only ------------------------------------------------------------------------------


def occlude_right(arrays: StereoArrays, probability: float, rng: np.random.Generator) -> StereoArrays:
    """With ``probability``, paste a random rectangle of the right view over another place in it."""
    draw, fy, fx, hy, hx, sy, sx = rng.random(7)
    if draw >= probability:
        return arrays
    height, width = arrays.size
    box_h, box_w = max(1, round(height * (0.05 + 0.2 * fy))), max(1, round(width * (0.05 + 0.2 * fx)))
    y, x = round((height - box_h) * hy), round((width - box_w) * hx)
    src_y, src_x = round((height - box_h) * sy), round((width - box_w) * sx)
    right = arrays.right.copy()
    right[y : y + box_h, x : x + box_w] = arrays.right[src_y : src_y + box_h, src_x : src_x + box_w]
    return arrays.replace(right=right)


def shift_right_vertically(arrays: StereoArrays, max_shift: float, rng: np.random.Generator) -> StereoArrays:
    """Move the right view up or down by up to ``max_shift`` px (sub-pixel, edge rows repeated)."""
    shift = rng.uniform(-max_shift, max_shift)
    if max_shift == 0.0:
        return arrays
    height, width = arrays.size
    matrix = np.float32([[1, 0, 0], [0, 1, shift]])
    right = cv2.warpAffine(
        arrays.right, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return arrays.replace(right=right)


def augment_stereo(arrays: StereoArrays, config: AugmentConfig, rng: np.random.Generator) -> StereoArrays:
    """Zoom, crop/pad to ``config.crop_size`` (default: input size), right-view occlusion and vertical
    offset, then colour jitter (per view unless ``same_on_both_views``).

    Deterministic given ``rng``. Geometry runs first so jitter only processes the cropped pixels.
    """
    target = config.crop_size or arrays.size
    arrays = _zoom(arrays, config.zoom_range, rng)
    arrays = crop_or_pad(arrays, tuple(target), rng)
    arrays = occlude_right(arrays, config.right_occlusion_probability, rng)
    arrays = shift_right_vertically(arrays, config.max_vertical_shift, rng)
    return jitter_colors(arrays, config, rng)
