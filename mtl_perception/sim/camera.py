"""Rendering a stereo frame with pybullet's TinyRenderer, and the sensor effects of a real camera."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    @staticmethod
    def dusk(rng: np.random.Generator) -> Lighting:
        """A low warm sun in a dim sky (the held-out domain): elevation 3-14 deg where training
        draws 17-74 deg, orange light, less ambient light, long shadows, an orange horizon."""
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.25)
        return Lighting(
            direction=(
                float(np.cos(azimuth) * np.cos(elevation)),
                float(np.sin(azimuth) * np.cos(elevation)),
                float(np.sin(elevation)),
            ),
            color=(1.0, float(rng.uniform(0.7, 0.82)), float(rng.uniform(0.45, 0.6))),
            ambient=float(rng.uniform(0.3, 0.4)),
            diffuse=float(rng.uniform(0.6, 0.75)),
            specular=float(rng.uniform(0.05, 0.15)),
            shadow=True,
            sky_top=(float(rng.uniform(30, 60)), float(rng.uniform(45, 75)), float(rng.uniform(95, 135))),
            sky_horizon=(
                float(rng.uniform(215, 245)),
                float(rng.uniform(135, 170)),
                float(rng.uniform(90, 125)),
            ),
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

    def apply_pair(
        self, left: np.ndarray, right: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both views of one frame: shared exposure and noise level, then each view on its own."""
        exposure, noise = self.frame_exposure(rng)
        left = self.apply(left, exposure, noise, rng)
        return left, self.apply(right, exposure, noise, rng)


@dataclass(frozen=True)
class SensorModel:
    """The image chain of a real stereo camera, for the held-out domain (``sim.domains``).

    What ``CameraEffects`` lacks and a robot's cameras have: a white-balance colour cast, lens
    vignetting, motion blur, signal-dependent (shot) noise and a tone curve. Each camera of the pair
    keeps its own small white-balance and vignetting differences for the whole sequence (two real
    cameras never match); exposure and motion blur are shared per frame (synced shutters, one
    vehicle), gain jitter and noise are per view.
    """

    exposure_range: tuple[float, float] = (1.1, 1.4)  # auto-exposure lifting a dim scene
    gain_sigma: float = 0.02  # per view and frame: two auto-exposures never agree exactly
    white_balance: tuple[float, float, float] = (1.06, 1.0, 0.88)  # RGB gains: a warm cast
    white_balance_sigma: float = 0.02  # per camera
    vignetting: float = 0.4  # brightness lost at the image corners
    vignetting_sigma: float = 0.05  # per camera
    centre_sigma: float = 0.02  # per camera offset of the vignetting centre, fraction of width
    motion_blur_px: tuple[float, float] = (0.0, 4.0)  # blur length at 512 px width
    read_noise: tuple[float, float] = (1.5, 3.0)  # Gaussian sigma, 8-bit units
    shot_noise: float = 0.15  # noise variance per 8-bit unit of signal: sigma ~5 at mid-grey
    gamma: float = 1.15  # out = in ** gamma on 0..1: a tone curve that darkens the mid-tones

    def cameras(self, rng: np.random.Generator, height: int, width: int) -> CameraPair:
        """The two cameras of one sequence: per-camera gain maps (white balance x vignetting)."""
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        gains = []
        for _ in range(2):
            cx, cy = (np.array([width, height]) - 1) / 2 + rng.normal(0.0, self.centre_sigma * width, 2)
            r2 = ((cols - cx) ** 2 + (rows - cy) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
            strength = self.vignetting + rng.normal(0.0, self.vignetting_sigma)
            vignette = np.clip(1.0 - strength * r2, 0.0, 1.0)
            balance = np.array(self.white_balance) * rng.normal(1.0, self.white_balance_sigma, 3)
            gains.append((vignette[..., None] * balance).astype(np.float32))
        return CameraPair(self, gains[0], gains[1])


def motion_kernel(length: float, angle: float) -> np.ndarray | None:
    """Normalised line kernel of ``length`` pixels at ``angle`` (rad from horizontal); None under 1 px."""
    if length < 1.0:
        return None
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), dtype=np.float32)
    t = np.linspace(-length / 2, length / 2, 8 * size)
    c = (size - 1) / 2
    np.add.at(
        kernel, (np.rint(c + t * np.sin(angle)).astype(int), np.rint(c + t * np.cos(angle)).astype(int)), 1.0
    )
    return kernel / kernel.sum()


@dataclass(frozen=True)
class CameraPair:
    """One sequence's two cameras of a ``SensorModel`` (per-camera HxWx3 gain maps)."""

    model: SensorModel
    left_gain: np.ndarray
    right_gain: np.ndarray

    def apply_pair(
        self, left: np.ndarray, right: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both views of one frame, uint8 HxWx3 in and out, deterministic given ``rng``."""
        m = self.model
        exposure = float(rng.uniform(*m.exposure_range))
        read = float(rng.uniform(*m.read_noise))
        # Mostly horizontal: the vehicle yaws and moves forward; a little vertical shake.
        length = float(rng.uniform(*m.motion_blur_px)) * left.shape[1] / 512.0
        kernel = motion_kernel(length, float(rng.normal(0.0, 0.3)))
        views = []
        for image, gain_map in ((left, self.left_gain), (right, self.right_gain)):
            out = image.astype(np.float32)
            if kernel is not None:
                out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REFLECT)
            out *= gain_map * (exposure * float(rng.normal(1.0, m.gain_sigma)))
            sigma = np.sqrt(read**2 + m.shot_noise * np.maximum(out, 0.0))
            out += sigma * rng.standard_normal(out.shape, dtype=np.float32)
            out = 255.0 * (np.clip(out, 0.0, 255.0) / 255.0) ** m.gamma
            views.append(np.rint(out).astype(np.uint8))
        return views[0], views[1]


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


def render_frame(
    world: World,
    rig: StereoRig,
    lighting: Lighting,
    t: float,
    position: np.ndarray,
    yaw: float,
    effects: Any = None,
    effects_rng: np.random.Generator | None = None,
) -> tuple[StereoFrame, np.ndarray, np.ndarray]:
    """(clean views + ground truth, left, right) of ``world`` at time ``t`` seen from ``position``,
    ``yaw``: what a dataset frame holds, for every scene family. ``effects`` (an object with
    ``apply_pair(left, right, rng)``, drawn from ``effects_rng``) is applied to the views only."""
    world.set_time(t)
    view = render_stereo(world, rig, position, yaw, lighting)
    if effects is None:
        return view, view.left, view.right
    left, right = effects.apply_pair(view.left, view.right, effects_rng)
    return view, left, right
