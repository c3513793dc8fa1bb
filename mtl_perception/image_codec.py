"""Decoding of sensor_msgs/CompressedImage payloads (JPEG, PNG, ...) with cv2.imdecode.

ROS-free and torch-free: the node (rclpy messages) and replay (rosbags messages) both pass the
message's ``data`` and ``format`` here, so a compressed stream decodes the same way in both.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def decode_compressed(data: Any, image_format: str) -> tuple[np.ndarray, str]:
    """(array, encoding) of a CompressedImage payload: HxW mono8, HxWx3 bgr8 or HxWx4 bgra8.

    ``image_format`` (the message's ``format`` field) only goes into error messages: imdecode reads
    the codec from the bytes. Raises ValueError for an empty, corrupt or non-8-bit payload.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else np.asarray(data)
    buffer = buffer.astype(np.uint8, copy=False).reshape(-1)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ValueError(f"cannot decode CompressedImage (format {image_format!r}, {buffer.size} bytes)")
    if image.dtype != np.uint8:
        # 16-bit PNG is how compressedDepth carries depth; it is not a camera image the model reads.
        raise ValueError(f"CompressedImage (format {image_format!r}) decodes to {image.dtype}, not 8-bit")
    if image.ndim == 2:
        return image, "mono8"
    if image.shape[2] == 4:
        return image, "bgra8"
    return image, "bgr8"
