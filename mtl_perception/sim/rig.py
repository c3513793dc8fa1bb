"""Rectified stereo rig: intrinsics, exact pybullet projection, camera poses, ROS camera_info.

Conventions: pixel (u, v) = (column, row) with integer coordinates at pixel centres (OpenCV);
world and rig frames follow REP-103 (x forward, y left, z up).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

LEFT_FRAME_ID = "stereo_left_optical_frame"
RIGHT_FRAME_ID = "stereo_right_optical_frame"

# The largest disparity the models handle, at 512 px image width (scales with the width).
MAX_DISPARITY_AT_512 = 96.0
# "Infinitely far" starts where the disparity drops under this many pixels (or at FAR_PLANE_MIN).
FAR_DISPARITY = 0.25
FAR_PLANE_MIN = 200.0


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
    far: float = 200.0  # renderer far plane = the far limit: anything beyond is "infinitely far"
    roll_deg: float = 0.0  # about the optical axis, positive = the rig's right side down

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
        if not -30.0 < self.roll_deg < 30.0:
            raise ValueError(f"roll must be within +-30 degrees, got {self.roll_deg}")
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

    @property
    def max_disparity(self) -> float:
        """The largest disparity labelled (pixels at this width); nearer pixels are unknown."""
        return MAX_DISPARITY_AT_512 * self.width / 512.0

    def far_limit(self) -> float:
        """Depth (m) where the disparity drops under ``FAR_DISPARITY``, at least ``FAR_PLANE_MIN``."""
        return max(FAR_PLANE_MIN, self.fx * self.baseline / FAR_DISPARITY)

    def with_far_limit(self) -> StereoRig:
        """This rig with its far plane at ``far_limit()`` (what the generator renders with)."""
        return dataclasses.replace(self, far=self.far_limit())

    def nearest_ground_depth(self) -> float:
        """Smallest optical-axis depth (m) of flat ground at z = 0 seen by the left camera (inf if none).

        The bottom image corners see the nearest ground (the ground's depth is monotonic in the pixel
        coordinates), so only those two rays are checked.
        """
        (eye, target, up), _ = self.camera_poses(np.zeros(2), 0.0)
        forward = target - eye
        right = np.cross(forward, up)
        nearest = math.inf
        for u in (0.0, self.width - 1.0):
            ray = forward + (u - self.cx) / self.fx * right - (self.height - 1.0 - self.cy) / self.fy * up
            if ray[2] < 0:  # the ray's depth along the optical axis is 1 per unit of ``ray``
                nearest = min(nearest, eye[2] / -ray[2])
        return nearest

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
        """Metric depth along the optical axis from the [0, 1] z-buffer; +inf where nothing was
        drawn or beyond ``far`` (sky: "infinitely far")."""
        z = zbuffer.astype(np.float64)
        depth = self.far * self.near / (self.far - (self.far - self.near) * z)
        depth[z >= 1.0 - 1e-7] = np.inf
        depth[depth >= self.far * 0.999] = np.inf
        return depth.astype(np.float32)

    def disparity_from_depth(self, depth: np.ndarray) -> np.ndarray:
        """Left disparity in pixels, fx * B / Z: 0 where depth is +inf (far) or not positive."""
        disparity = np.zeros_like(depth, dtype=np.float32)
        valid = (depth > 0) & np.isfinite(depth)
        disparity[valid] = self.fx * self.baseline / depth[valid]
        return disparity

    def camera_poses(
        self, position: np.ndarray, yaw: float
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(eye, target, up) for the left and right camera of a rig at ground ``position`` and ``yaw``.

        Both cameras share the orientation (rectified); the right one sits ``baseline`` along the
        rig's (rolled) right axis.
        """
        pitch, roll = math.radians(self.pitch_deg), math.radians(self.roll_deg)
        forward = np.array(
            [math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)]
        )
        level_right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        level_up = np.cross(level_right, forward)
        right = math.cos(roll) * level_right - math.sin(roll) * level_up  # roll > 0: right side down
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


@dataclass(frozen=True)
class RigRanges:
    """Ranges a random rig is drawn from, per sequence (so no image position gives away disparity).

    ``pitch_deg`` is positive looking down (the old fixed rig: 3 deg down), ``roll_deg`` positive
    right side down. The baseline is drawn log-uniformly but capped so that flat ground stays under
    ``ground_disparity_share`` of the largest labelled disparity (nearer objects become unknown).
    """

    camera_height: tuple[float, float] = (0.3, 2.5)
    pitch_deg: tuple[float, float] = (-5.0, 10.0)
    roll_deg: tuple[float, float] = (-3.0, 3.0)
    baseline: tuple[float, float] = (0.05, 0.6)
    hfov_deg: tuple[float, float] = (60.0, 110.0)
    ground_disparity_share: float = 0.8


def random_rig(
    rng: np.random.Generator, width: int, height: int, ranges: RigRanges = RigRanges()
) -> StereoRig:
    """A rig drawn from ``ranges`` with ``rng`` (deterministic given its state), far plane at its
    far limit."""
    rig = StereoRig(
        width=width,
        height=height,
        hfov_deg=float(rng.uniform(*ranges.hfov_deg)),
        baseline=ranges.baseline[0],
        mount_height=float(rng.uniform(*ranges.camera_height)),
        pitch_deg=float(rng.uniform(*ranges.pitch_deg)),
        roll_deg=float(rng.uniform(*ranges.roll_deg)),
    )
    # Disparity of the nearest visible ground point = fx * B / z: cap B so it stays in range.
    cap = ranges.ground_disparity_share * rig.max_disparity * rig.nearest_ground_depth() / rig.fx
    low, high = ranges.baseline[0], max(ranges.baseline[0], min(ranges.baseline[1], cap))
    baseline = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return dataclasses.replace(rig, baseline=baseline).with_far_limit()
