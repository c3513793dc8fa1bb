"""The output contract: graph names, units, image encodings and the validity policy, in one place.

Torch- and ROS-free, so the runtime pipeline, the node, replay, export, evaluation and the tests
share one copy (DESIGN.md, "Output policy"). The pipeline applies the policy; everything downstream
only converts its maps:

* ``disparity``: float32 pixels of the output image; NaN where unknown (non-finite network output)
  and where below ``min_disparity`` (the stereo_msgs/DisparityImage convention: below the range is
  invalid; a DisparityImage carries such pixels as ``min_disparity - 1``).
* ``depth``: float32 meters, REP-118: +Inf where the disparity is finite but at or below the
  range (too far: ``max(min_disparity, 0)``), NaN where unknown or where its standard deviation
  exceeds ``confidence_threshold`` (when that is > 0). Never a finite depth for a too-far pixel.
* ``*_uncertainty``: standard deviations in the unit of their map; NaN where the map is not finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# -- graph signature (DESIGN.md, "Exported model") -------------------------------------------------

STEREO_INPUTS = ("left", "right")
MONO_INPUTS = ("image",)
SEMANTIC_OUTPUTS = ("semantic", "semantic_uncertainty", "semantic_confidence")
STEREO_OUTPUTS = (*SEMANTIC_OUTPUTS, "disparity", "disparity_uncertainty", "embedding")
MONO_OUTPUTS = (*SEMANTIC_OUTPUTS, "depth", "depth_uncertainty", "embedding")
STEERING_INPUT = "embeddings"
STEERING_OUTPUT = "steering"


@dataclass(frozen=True)
class OutputSpec:
    """Unit and meaning of one output map or value."""

    unit: str
    description: str


OUTPUTS: dict[str, OutputSpec] = {
    "semantic": OutputSpec("class id", "uint8 class ids of the model's class table"),
    "semantic_uncertainty": OutputSpec("1", "normalised predictive entropy, 0 (certain) .. 1"),
    "semantic_confidence": OutputSpec("1", "top-class softmax probability (what ECE bins)"),
    "disparity": OutputSpec("px", "disparity in pixels of the output image; NaN = invalid"),
    "disparity_uncertainty": OutputSpec("px", "standard deviation of the disparity"),
    "depth": OutputSpec("m", "REP-118 depth: NaN unknown, +Inf too far"),
    "depth_uncertainty": OutputSpec("m", "standard deviation of the depth"),
    "embedding": OutputSpec("1", "pooled latent of the frame, the steering head's input"),
    "steering": OutputSpec("rad", "front-wheel angle, positive = left"),
}

# -- image encodings (sensor_msgs/Image names) ----------------------------------------------------


@dataclass(frozen=True)
class ImageEncoding:
    """Memory layout of one encoding and, for those the network reads, the cv2 conversion to RGB."""

    channels: int
    dtype: np.dtype
    to_rgb: int | None = None  # cv2.cvtColor code; None when already RGB or not an input encoding


ENCODINGS: dict[str, ImageEncoding] = {
    "rgb8": ImageEncoding(3, np.dtype(np.uint8)),
    "bgr8": ImageEncoding(3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),
    "rgba8": ImageEncoding(4, np.dtype(np.uint8), cv2.COLOR_RGBA2RGB),
    "bgra8": ImageEncoding(4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    "mono8": ImageEncoding(1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "mono16": ImageEncoding(1, np.dtype(np.uint16)),
    "32FC1": ImageEncoding(1, np.dtype(np.float32)),
}
# What the pipeline, the node and replay accept as camera images (8-bit only: the network's input
# normalisation assumes 0..255, and a 16-bit camera's bit depth is not in the message).
INPUT_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


def to_rgb(image: np.ndarray, encoding: str, dst: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB of a camera image in one of ``INPUT_ENCODINGS`` (the array itself if rgb8)."""
    if encoding not in INPUT_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(INPUT_ENCODINGS)}")
    conversion = ENCODINGS[encoding].to_rgb
    if conversion is None:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), conversion, dst=dst)


def resize_image(image: np.ndarray, width: int, height: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Resize a camera image to the model size; the runtime and evaluation both resize through
    here, so a model sees the same pixels in both.

    Shrinking is anti-aliased: a bilinear step to the nearest integer multiple k of the target,
    then a k x k box average (cv2's INTER_AREA fast path). cv2's INTER_AREA at a non-integer ratio
    gives nearly the same pixels but costs about 3x as much (6 ms per 1280x720 view here).
    Growing is bilinear.
    """
    in_h, in_w = image.shape[:2]
    if width > in_w or height > in_h:
        return cv2.resize(image, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
    k = min(in_w // width, in_h // height)
    if k >= 2 and (in_w, in_h) != (k * width, k * height):
        image = cv2.resize(image, (k * width, k * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), dst=dst, interpolation=cv2.INTER_AREA)


# -- validity policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPolicy:
    """What the published maps keep (the node's ``min_disparity`` / ``confidence_threshold``)."""

    min_disparity: float = 0.0  # px of the output image; below it a pixel is too far (depth +Inf)
    confidence_threshold: float = 0.0  # m; a depth sigma above it makes the depth unknown; 0 = off
    max_disparity: float = 0.0  # px of the output image reported as the range; 0 = the model's

    def __post_init__(self) -> None:
        if not self.min_disparity >= 0.0:
            raise ValueError(f"min_disparity must be >= 0, got {self.min_disparity}")
        if not self.confidence_threshold >= 0.0:
            raise ValueError(f"confidence_threshold must be >= 0, got {self.confidence_threshold}")
        if not self.max_disparity >= 0.0:
            raise ValueError(f"max_disparity must be >= 0, got {self.max_disparity}")
        if self.max_disparity and self.min_disparity >= self.max_disparity:
            raise ValueError(
                f"min_disparity ({self.min_disparity}) must be below max_disparity ({self.max_disparity}); "
                "set max_disparity to 0 to use the model's range"
            )


def stereo_maps(
    disparity: np.ndarray,
    disparity_uncertainty: np.ndarray | None,
    focal_baseline: float | None,
    policy: OutputPolicy,
    principal_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(disparity, depth, depth_uncertainty) as published, from the raw output-size disparity.

    depth = f*B / (d + o), with o = cx_right - cx_left (``principal_offset``, output pixels; 0 when
    rectification gave both views one principal point, as stereo_image_proc's Q matrix has it);
    sigma_Z = Z^2/(f*B) * sigma_d (first-order propagation). ``focal_baseline`` None (no
    calibration) gives no depth. The inputs are not modified.
    """
    # Written as in-place passes with masks reused: at 1280x720 this is the largest post-processing
    # cost, and each full-size temporary costs about as much as the arithmetic.
    published = disparity.astype(np.float32, copy=True)
    np.copyto(published, np.float32(np.nan), where=disparity < policy.min_disparity)  # NaN stays NaN
    if focal_baseline is None or not focal_baseline > 0:
        return published, None, None
    too_far = disparity <= max(policy.min_disparity, 0.0)  # False for NaN: unknown stays unknown
    shifted = disparity
    if principal_offset:
        shifted = disparity + np.float32(principal_offset)
        too_far |= shifted <= 0.0
    depth = np.empty(disparity.shape, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(np.float32(focal_baseline), shifted, out=depth)
    np.copyto(depth, np.float32(np.inf), where=too_far)
    depth_uncertainty = None
    if disparity_uncertainty is not None:
        depth_uncertainty = np.multiply(depth, depth)
        depth_uncertainty *= disparity_uncertainty
        depth_uncertainty *= np.float32(1.0 / focal_baseline)
        np.copyto(depth_uncertainty, np.float32(np.nan), where=too_far)  # NaN depth gave NaN already
        _mask_unconfident(depth, depth_uncertainty, policy)
    return published, depth, depth_uncertainty


def mono_maps(
    depth: np.ndarray,
    depth_uncertainty: np.ndarray | None,
    policy: OutputPolicy,
    focal_ratio: float = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(depth, depth_uncertainty) as published from a mono network's raw metric depth: scaled by
    ``focal_ratio`` (this camera's focal length over the one the model learned, DESIGN Geometry),
    NaN where not positive (or NaN), +Inf kept (too far). The inputs are not modified."""
    depth = np.multiply(depth, np.float32(focal_ratio), dtype=np.float32)
    np.copyto(depth, np.float32(np.nan), where=~(depth > 0))
    if depth_uncertainty is not None:
        depth_uncertainty = np.multiply(depth_uncertainty, np.float32(focal_ratio), dtype=np.float32)
        np.copyto(depth_uncertainty, np.float32(np.nan), where=~np.isfinite(depth))
        _mask_unconfident(depth, depth_uncertainty, policy)
    return depth, depth_uncertainty


def _mask_unconfident(depth: np.ndarray, depth_uncertainty: np.ndarray, policy: OutputPolicy) -> None:
    """Depths whose sigma exceeds the threshold become unknown (NaN), in place; the sigma is NaN
    wherever the depth is not finite, so a too-far +Inf is never turned into unknown."""
    if policy.confidence_threshold > 0:
        np.copyto(depth, np.float32(np.nan), where=depth_uncertainty > policy.confidence_threshold)


# -- stereo_msgs/DisparityImage values ------------------------------------------------------------


def disparity_message_values(disparity: np.ndarray, min_disparity: float) -> np.ndarray:
    """The DisparityImage pixel values of a published disparity: invalid (NaN) -> min_disparity - 1,
    the value stereo_image_proc and OpenCV's SGBM use, since consumers test ``d < min_disparity``.
    """
    return np.where(np.isfinite(disparity), disparity, np.float32(min_disparity - 1.0)).astype(
        np.float32, copy=False
    )


def disparity_from_message_values(values: np.ndarray, min_disparity: float) -> np.ndarray:
    """Inverse of ``disparity_message_values``: pixels below ``min_disparity`` (or non-finite) -> NaN."""
    values = np.asarray(values, np.float32)
    return np.where(np.isfinite(values) & (values >= min_disparity), values, np.float32(np.nan))
