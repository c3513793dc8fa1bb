"""Rendering a stereo frame with pybullet's TinyRenderer, and the sensor effects of a real camera."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pybullet as p

from mtl_perception.sim.rig import StereoRig
from mtl_perception.sim.world import World


@dataclass(frozen=True)
class Lighting:
    """Per-sequence sun and sky."""

    direction: tuple[float, float, float]
    color: tuple[float, float, float]
    ambient: float
    diffuse: float
    specular: float
    shadow: bool
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]

    @staticmethod
    def random(rng: np.random.Generator) -> Lighting:
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.3)
        overcast = rng.random() < 0.3
        top = (
            (150, 160, 170)
            if overcast
            else (rng.uniform(40, 90), rng.uniform(100, 150), rng.uniform(190, 240))
        )
        horizon = (
            (205, 210, 215)
            if overcast
            else (rng.uniform(170, 220), rng.uniform(200, 230), rng.uniform(230, 250))
        )
        return Lighting(
            direction=(
                float(np.cos(azimuth) * np.cos(elevation)),
                float(np.sin(azimuth) * np.cos(elevation)),
                float(np.sin(elevation)),
            ),
            color=tuple(float(c) for c in rng.uniform(0.9, 1.0, 3)),
            ambient=float(rng.uniform(0.5, 0.7) if overcast else rng.uniform(0.3, 0.5)),
            diffuse=float(rng.uniform(0.3, 0.5) if overcast else rng.uniform(0.5, 0.7)),
            specular=float(rng.uniform(0.0, 0.1)),
            shadow=bool(not overcast and rng.random() < 0.7),
            sky_top=tuple(float(c) for c in top),
            sky_horizon=tuple(float(c) for c in horizon),
        )


@dataclass(frozen=True)
class CameraEffects:
    """Sensor model applied to each rendered view independently, never to ground truth."""

    gain_sigma: float = 0.04  # per-view exposure gain spread around the frame's exposure
    exposure_range: tuple[float, float] = (0.8, 1.2)
    noise_range: tuple[float, float] = (1.0, 4.0)  # Gaussian read noise, 8-bit units
    blur_range: tuple[float, float] = (0.0, 0.8)  # Gaussian blur sigma, pixels

    def frame_exposure(self, rng: np.random.Generator) -> tuple[float, float]:
        """(exposure, noise sigma) shared by both views of one frame (same scene, synced shutter)."""
        return float(rng.uniform(*self.exposure_range)), float(rng.uniform(*self.noise_range))

    def apply(self, image: np.ndarray, exposure: float, noise: float, rng: np.random.Generator) -> np.ndarray:
        """Gain, blur and Gaussian noise on an HxWx3 uint8 image; returns uint8."""
        gain = exposure * float(rng.normal(1.0, self.gain_sigma))
        out = image.astype(np.float32) * gain
        sigma = float(rng.uniform(*self.blur_range))
        if sigma > 0.3:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StereoFrame:
    """Clean renders and ground truth of one frame (sensor effects not yet applied)."""

    left: np.ndarray  # HxWx3 uint8
    right: np.ndarray  # HxWx3 uint8
    depth: np.ndarray  # HxW float32 metres, +inf far (sky, beyond the rig's far plane)
    disparity: np.ndarray  # HxW float32 pixels, 0 far
    semantic: np.ndarray  # HxW uint8 class ids
    valid: np.ndarray  # HxW bool, False = unknown (nearer than the rig's max_disparity)


def sky_gradient(rig: StereoRig, lighting: Lighting) -> np.ndarray:
    """HxWx3 float sky: horizon colour at the (rolled) horizon line blending to the top colour above it."""
    centre_row = rig.cy + rig.fy * np.tan(np.radians(rig.pitch_deg))
    # Roll with the right side down turns the image the other way: the horizon rises to the right.
    columns = np.arange(rig.width, dtype=np.float32)
    horizon_row = centre_row - (columns - rig.cx) * np.tan(np.radians(rig.roll_deg))
    rows = np.arange(rig.height, dtype=np.float32)[:, None]
    t = np.clip((horizon_row - rows) / max(centre_row, 1.0), 0.0, 1.0)[..., None]
    colour = (1 - t) * np.array(lighting.sky_horizon) + t * np.array(lighting.sky_top)
    return np.broadcast_to(colour, (rig.height, rig.width, 3)).astype(np.float32)


def _render_view(
    world: World, rig: StereoRig, pose, lighting: Lighting, with_segmentation: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    eye, target, up = pose
    view = p.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist(), physicsClientId=world.client)
    flags = 0 if with_segmentation else p.ER_NO_SEGMENTATION_MASK
    _, _, rgba, zbuffer, seg = p.getCameraImage(
        rig.width,
        rig.height,
        view,
        rig.projection_matrix(),
        renderer=p.ER_TINY_RENDERER,
        flags=flags,
        lightDirection=list(lighting.direction),
        lightColor=list(lighting.color),
        lightAmbientCoeff=lighting.ambient,
        lightDiffuseCoeff=lighting.diffuse,
        lightSpecularCoeff=lighting.specular,
        shadow=int(lighting.shadow),
        physicsClientId=world.client,
    )
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(rig.height, rig.width, 4)[..., :3]
    zbuffer = np.asarray(zbuffer, dtype=np.float32).reshape(rig.height, rig.width)
    seg_array = np.asarray(seg, dtype=np.int64).reshape(rig.height, rig.width) if with_segmentation else None
    return rgb, zbuffer, seg_array


def render_stereo(
    world: World, rig: StereoRig, position: np.ndarray, yaw: float, lighting: Lighting
) -> StereoFrame:
    """Render left and right views and the left ground truth from a rig at ``position``, ``yaw``.

    Labels: sky and anything beyond the rig's far plane is "infinitely far" (depth +inf, disparity
    0, valid); pixels nearer than ``rig.max_disparity`` allows are unknown (``valid`` False).
    """
    left_pose, right_pose = rig.camera_poses(position, yaw)
    sky = sky_gradient(rig, lighting)
    left, left_z, seg = _render_view(world, rig, left_pose, lighting, with_segmentation=True)
    right, right_z, _ = _render_view(world, rig, right_pose, lighting, with_segmentation=False)
    depth = rig.depth_from_zbuffer(left_z)
    # Background (nothing drawn, or clipped beyond far) is sky in the image and in the labels.
    far = np.isinf(depth)
    left = np.where(far[..., None], sky, left).astype(np.uint8)
    right = np.where(np.isinf(rig.depth_from_zbuffer(right_z))[..., None], sky, right).astype(np.uint8)
    assert seg is not None
    semantic = world.class_lookup()[np.where(far, -1, seg) + 1]
    disparity = rig.disparity_from_depth(depth)
    return StereoFrame(
        left=left,
        right=right,
        depth=depth,
        disparity=disparity,
        semantic=semantic,
        valid=disparity <= rig.max_disparity,
    )
