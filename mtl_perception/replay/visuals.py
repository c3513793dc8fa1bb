"""Report panels: maps rendered as colour images and inlined as base64 PNG."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from mtl_perception.data.labels import colorize

# Pipeline encodings -> cv2 conversion to BGR (what cv2.imencode expects).
_TO_BGR = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
    "mono8": cv2.COLOR_GRAY2BGR,
}


def png_base64(bgr: np.ndarray) -> str:
    """``data:`` URI of a BGR (or mono) uint8 image as PNG."""
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {bgr.shape} as PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def input_bgr(image: np.ndarray, encoding: str) -> np.ndarray:
    """The camera image as BGR for display."""
    conversion = _TO_BGR.get(encoding)
    return image if conversion is None else cv2.cvtColor(image, conversion)


def classes_bgr(labels: np.ndarray) -> np.ndarray:
    """Class ids in the label table's colours (ignore = black)."""
    return cv2.cvtColor(colorize(labels), cv2.COLOR_RGB2BGR)


def heatmap_bgr(
    values: np.ndarray, low: float, high: float, colormap: int = cv2.COLORMAP_TURBO
) -> np.ndarray:
    """Continuous map scaled [low, high] -> colormap; NaN and non-positive-range pixels are black."""
    span = max(high - low, 1e-6)
    finite = np.isfinite(values)
    scaled = np.clip((np.where(finite, values, low) - low) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), colormap)
    bgr[~finite] = 0
    return bgr


def valid_range(*maps: np.ndarray | None, percentile: float = 99.0) -> tuple[float, float]:
    """A shared colour range (0, high percentile of valid values) for maps shown side by side."""
    values = [m[np.isfinite(m) & (m > 0)] for m in maps if m is not None]
    values = [v for v in values if v.size]
    if not values:
        return 0.0, 1.0
    return 0.0, float(np.percentile(np.concatenate(values), percentile))
