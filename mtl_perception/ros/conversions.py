"""sensor_msgs Image / CameraInfo <-> numpy, and the DisparityImage builder.

Hand-written because cv_bridge is not installable from PyPI; the few encodings the node accepts
are plain interleaved layouts, so a strided numpy view covers them (honouring ``step`` padding
and ``is_bigendian``) without a copy where the layout allows.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from mtl_perception.contract import ENCODINGS, INPUT_ENCODINGS, disparity_message_values
from mtl_perception.image_codec import decode_compressed

_HOST_BIG_ENDIAN = sys.byteorder == "big"


class InvalidMessageError(ValueError):
    """A message the node cannot use; the text says why (it goes to the log and diagnostics)."""


def image_to_numpy(msg: Image, allowed: tuple[str, ...] = INPUT_ENCODINGS) -> np.ndarray:
    """View an Image as HxW (one channel) or HxWxC array; raise InvalidMessageError if unusable."""
    if msg.encoding not in allowed:
        raise InvalidMessageError(
            f"unsupported encoding {msg.encoding!r}; publish one of {', '.join(allowed)}"
        )
    if msg.height == 0 or msg.width == 0:
        raise InvalidMessageError(f"zero-size image ({msg.width}x{msg.height})")
    channels, dtype = ENCODINGS[msg.encoding].channels, ENCODINGS[msg.encoding].dtype
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise InvalidMessageError(
            f"step {msg.step} is smaller than width*bytes_per_pixel = {row_bytes} ({msg.encoding})"
        )
    needed = msg.step * msg.height
    data = msg.data
    if len(data) < needed:
        raise InvalidMessageError(f"truncated data: {len(data)} bytes, step*height needs {needed}")
    buffer = np.frombuffer(data, dtype=np.uint8, count=needed).reshape(msg.height, msg.step)
    rows = buffer[:, :row_bytes]
    if dtype.itemsize > 1:
        order = ">" if msg.is_bigendian else "<"
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return rows.reshape(shape)


def compressed_to_numpy(msg: CompressedImage) -> tuple[np.ndarray, str]:
    """(array, encoding) of a CompressedImage: bgr8, bgra8 or mono8, as cv2.imdecode gives them."""
    try:
        return decode_compressed(msg.data, msg.format)
    except ValueError as exc:
        raise InvalidMessageError(str(exc)) from exc


def numpy_to_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Pack an HxW / HxWxC array as an Image with ``header`` (host byte order, no row padding)."""
    channels, dtype = ENCODINGS[encoding].channels, ENCODINGS[encoding].dtype
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"array of shape {array.shape} does not fit encoding {encoding}")
    array = np.ascontiguousarray(array, dtype=dtype)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_BIG_ENDIAN and dtype.itemsize > 1)
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = array.tobytes()
    return msg


@dataclass(frozen=True)
class Intrinsics:
    """What the pipeline needs from CameraInfo: focal length (px) and stereo baseline (m)."""

    width: int
    height: int
    fx: float
    baseline: float  # 0 for a mono or left camera
    principal_offset: float = 0.0  # stereo: right P[0,2] - left P[0,2], px (0 for most rectifications)


def intrinsics_from_camera_info(info: CameraInfo) -> Intrinsics:
    """fx from P[0] (K[0] when P is unset) and baseline from P[3] = -fx * baseline; validated."""
    if info.width == 0 or info.height == 0:
        raise InvalidMessageError(f"camera_info has zero size ({info.width}x{info.height})")
    values = [*info.k, *info.p]
    if not all(math.isfinite(v) for v in values):
        raise InvalidMessageError("camera_info has NaN or infinite entries in K or P")
    fx = float(info.p[0]) or float(info.k[0])
    if fx <= 0.0:
        raise InvalidMessageError(f"camera_info focal length fx = {fx}; calibrate the camera")
    return Intrinsics(int(info.width), int(info.height), fx, -float(info.p[3]) / fx)


def stereo_intrinsics(left: CameraInfo, right: CameraInfo) -> Intrinsics:
    """fx and baseline of a rectified pair (from the right camera's P), checked for use."""
    left_intrinsics = intrinsics_from_camera_info(left)
    right_intrinsics = intrinsics_from_camera_info(right)
    if right_intrinsics.baseline <= 0.0:
        raise InvalidMessageError(
            f"right camera_info P[3] = {right.p[3]} gives baseline {right_intrinsics.baseline:.4g} m; "
            "it must be -fx * baseline with a positive baseline"
        )
    return Intrinsics(
        left_intrinsics.width,
        left_intrinsics.height,
        right_intrinsics.fx,
        right_intrinsics.baseline,
        principal_offset=float(right.p[2]) - float(left.p[2]),
    )


def scaled_camera_info(info: CameraInfo, width: int, height: int, header: Header) -> CameraInfo:
    """CameraInfo for the same camera resampled to ``width`` x ``height`` (K and P rows scaled).

    Follows image_proc's resize: the first row of K/P scales by sx, the second by sy; the
    projection's translation (P[3]) scales with fx so the baseline is preserved.
    """
    sx = width / info.width
    sy = height / info.height
    out = CameraInfo()
    out.header = header
    out.width, out.height = int(width), int(height)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    p = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    k[0] *= sx
    k[1] *= sy
    p[0] *= sx
    p[1] *= sy
    out.k = k.ravel().tolist()
    out.p = p.ravel().tolist()
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    return out


def disparity_image(
    disparity: np.ndarray,
    header: Header,
    *,
    focal_length: float,
    baseline: float,
    min_disparity: float,
    max_disparity: float,
    delta_d: float,
) -> DisparityImage:
    """A stereo_msgs/DisparityImage of a published disparity (NaN = invalid, see contract).

    Invalid pixels are written as ``min_disparity - 1`` (the message's convention: below the range
    is invalid). ``valid_window`` is the bounding box of the valid pixels, so consumers can skip
    the blind band on the left where the right view has no overlap.
    """
    msg = DisparityImage()
    msg.header = header
    msg.image = numpy_to_image(disparity_message_values(disparity, min_disparity), "32FC1", header)
    msg.f = float(focal_length)
    msg.t = float(baseline)
    msg.min_disparity = float(min_disparity)
    msg.max_disparity = float(max_disparity)
    msg.delta_d = float(delta_d)
    valid = np.isfinite(disparity) & (disparity >= min_disparity)
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    if rows.size:
        msg.valid_window = RegionOfInterest(
            x_offset=int(cols[0]),
            y_offset=int(rows[0]),
            width=int(cols[-1] - cols[0] + 1),
            height=int(rows[-1] - rows[0] + 1),
        )
    return msg
