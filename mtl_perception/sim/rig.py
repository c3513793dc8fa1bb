"""Rectified stereo rig: intrinsics, exact pybullet projection, camera poses, ROS camera_info.

Conventions: pixel (u, v) = (column, row) with integer coordinates at pixel centres (OpenCV);
world and rig frames follow REP-103 (x forward, y left, z up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEFT_FRAME_ID = "stereo_left_optical_frame"
RIGHT_FRAME_ID = "stereo_right_optical_frame"


@dataclass(frozen=True)
class StereoRig:
    """Geometry of a rectified stereo pair mounted on the ego vehicle."""

    width: int = 512
    height: int = 256
    hfov_deg: float = 90.0
    baseline: float = 0.3
    mount_height: float = 1.5
    pitch_deg: float = 3.0  # positive = looking down
    near: float = 0.1
    far: float = 200.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"image size must be even (centred principal point), got {self.width}x{self.height}"
            )
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {self.hfov_deg}")
        if self.baseline <= 0.0:
            raise ValueError(f"baseline must be positive, got {self.baseline}")
        if self.mount_height <= 0.0:
            raise ValueError(f"camera height must be positive, got {self.mount_height}")
        if not -45.0 < self.pitch_deg < 45.0:
            raise ValueError(f"pitch must be within +-45 degrees, got {self.pitch_deg}")
        if not 0.0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")

    @property
    def fx(self) -> float:
        return self.width / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def fy(self) -> float:
        return self.fx  # square pixels

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    def intrinsics(self) -> np.ndarray:
        """3x3 camera matrix K (same for both rectified views)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def projection_matrix(self) -> list[float]:
        """OpenGL projection (column-major, as pybullet wants) that reproduces K exactly.

        TinyRenderer samples pixel i at window coordinate i (not i + 0.5) and flips rows, so the
        principal-point terms differ from the textbook by half a pixel; measured with edges placed
        at sub-pixel positions, pixel (u, v) then sees exactly the ray of K at (u, v).
        """
        w, h, n, f = self.width, self.height, self.near, self.far
        m = np.array(
            [
                [2 * self.fx / w, 0.0, 1.0 - 2 * self.cx / w, 0.0],
                [0.0, 2 * self.fy / h, 2 * (self.cy + 1.0) / h - 1.0, 0.0],
                [0.0, 0.0, -(f + n) / (f - n), -2 * f * n / (f - n)],
                [0.0, 0.0, -1.0, 0.0],
            ]
        )
        return m.T.reshape(-1).tolist()

    def depth_from_zbuffer(self, zbuffer: np.ndarray) -> np.ndarray:
        """Metric depth along the optical axis from the [0, 1] z-buffer; 0 beyond ``far`` (sky)."""
        z = zbuffer.astype(np.float64)
        depth = self.far * self.near / (self.far - (self.far - self.near) * z)
        depth[z >= 1.0 - 1e-7] = 0.0
        depth[depth >= self.far * 0.999] = 0.0
        return depth.astype(np.float32)

    def disparity_from_depth(self, depth: np.ndarray) -> np.ndarray:
        """Left disparity in pixels, fx * B / Z, 0 where depth is invalid."""
        disparity = np.zeros_like(depth, dtype=np.float32)
        valid = depth > 0
        disparity[valid] = self.fx * self.baseline / depth[valid]
        return disparity

    def camera_poses(
        self, position: np.ndarray, yaw: float
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(eye, target, up) for the left and right camera of a rig at ground ``position`` and ``yaw``.

        Both cameras share the orientation (rectified); the right one sits ``baseline`` along the
        rig's right axis.
        """
        pitch = math.radians(self.pitch_deg)
        forward = np.array(
            [math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)]
        )
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        up = np.cross(right, forward)
        left_eye = np.array([position[0], position[1], self.mount_height])
        right_eye = left_eye + self.baseline * right
        return (left_eye, left_eye + forward, up), (right_eye, right_eye + forward, up)

    def camera_info(self, side: str) -> dict[str, object]:
        """ROS sensor_msgs/CameraInfo fields for ``side`` ('left' or 'right') as plain data."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        k = self.intrinsics()
        tx = -self.fx * self.baseline if side == "right" else 0.0
        p = np.hstack([k, [[tx], [0.0], [0.0]]])
        return {
            "header_frame_id": LEFT_FRAME_ID if side == "left" else RIGHT_FRAME_ID,
            "width": self.width,
            "height": self.height,
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": k.reshape(-1).tolist(),
            "r": np.eye(3).reshape(-1).tolist(),
            "p": p.reshape(-1).tolist(),
        }
