"""The flying scene family: random textured objects tumbling in front of a random backdrop.

In the spirit of the FlyingThings3D part of SceneFlow (Mayer et al., 2016). Each sequence draws a
stereo rig (the driving family's ranges, ``GeneratorConfig.sequence_rig``), a textured backdrop at
a random depth and tilt (sometimes covering only part of the view, sometimes absent, so the sky
behind it is "infinitely far"), and 10-30 objects (boxes, spheres, cylinders, capsules, crosses and
meshes shipped in pybullet_data) with random sizes, orientations and textures: ``sim.textures``
kinds repainted in random colours, colour noise, and crops of real photographs
(``data.real_photos.TEXTURE_PHOTOS`` only: never the street scenes kept for evaluation nor stereo
benchmark images). Objects sit in the left camera's view at depths drawn as disparities (a share in
the upper half of the labelled range) and move and spin at constant rates; the camera slides
sideways and yaws, so consecutive frames differ.

Views and labels come from ``camera.render_stereo`` exactly as for the driving scenes: disparity
everywhere, 0 (valid) where nothing is drawn or beyond the far limit, unknown where nearer than the
rig's largest disparity.

Semantics: no class of the table fits a tumbling textured object or a backdrop, so those pixels are
255 (ignore). Where nothing is drawn the views show the sky gradient that the driving scenes label
``sky``; it keeps that label, so the same pixels mean the same in both families and the semantic
head is taught nothing contradictory (a sky class it must also find behind floating objects).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pybullet as p
import pybullet_data

from mtl_perception.sim import textures
from mtl_perception.sim.world import Builder, Part, Pose, World

if TYPE_CHECKING:
    from mtl_perception.sim.camera import Lighting, StereoFrame
    from mtl_perception.sim.generator import FlyingRanges, GeneratorConfig
    from mtl_perception.sim.rig import StereoRig

PHOTO_TEXTURE_SIZE = 256
# Meshes of pybullet_data and whether they carry texture coordinates (those without are painted).
MESHES: tuple[tuple[str, bool], ...] = (
    ("duck.obj", True),
    ("soccerball.obj", True),
    ("sphere_smooth.obj", True),
    ("bunny.obj", False),
    ("teddy2_VHACD_CHs.obj", False),
    ("random_urdfs/000/000.obj", False),
    ("random_urdfs/001/001.obj", False),
    ("random_urdfs/002/002.obj", False),
)
SHAPES = ("box", "sphere", "cylinder", "capsule", "cross")
# Objects keep this many near-plane distances in front of the camera (no geometry is clipped).
NEAR_CLEARANCE = 2.0


@dataclass
class Tumbler:
    """An object moving and spinning at constant rates (position and rotation vector linear in t)."""

    body: int
    position: np.ndarray  # world, at t = 0
    velocity: np.ndarray  # m/s, world
    orientation: np.ndarray  # quaternion x y z w at t = 0
    spin: np.ndarray  # rotation vector per second, world frame

    def pose(self, t: float) -> Pose:
        turn = _axis_angle_quat(self.spin * t)
        return (self.position + self.velocity * t).tolist(), tuple(_quat_mul(turn, self.orientation).tolist())


@dataclass(frozen=True)
class CameraPath:
    """The rig's ground position and yaw over time: a sideways slide along the first view's right
    axis (never forward, so the camera never reaches an object) and a slow turn."""

    yaw0: float
    yaw_rate: float  # rad/s
    slide: float  # m/s along the rig's right axis at t = 0

    def at(self, t: float) -> tuple[np.ndarray, float]:
        right = np.array([math.sin(self.yaw0), -math.cos(self.yaw0)])
        return right * self.slide * t, self.yaw0 + self.yaw_rate * t


@dataclass(frozen=True)
class FlyingScene:
    """One seed's flying world as the generator renders it (the driving ``Scene``'s counterpart)."""

    config: GeneratorConfig
    seed: int
    rig: StereoRig
    world: World
    lighting: Lighting
    effects: Any  # apply_pair(left, right, frame_rng): the camera effects
    camera: CameraPath
    texture_sources: tuple[str, ...]  # per texture: "photo:<name>", "noise" or a sim.textures kind

    def render(self, frame: int, xy: np.ndarray, yaw: float) -> tuple[StereoFrame, np.ndarray, np.ndarray]:
        """(clean views + ground truth, left, right) of ``frame`` from the rig at ``xy``, ``yaw``."""
        from mtl_perception.sim.camera import render_frame

        effects = self.effects if self.config.camera_effects else None
        rng = np.random.default_rng([self.seed, 2, frame])
        return render_frame(
            self.world, self.rig, self.lighting, frame / self.config.rate_hz, xy, yaw, effects, rng
        )

    def texture_counts(self) -> dict[str, int]:
        """How many textures came from photos, noise and procedural kinds (for the manifest)."""
        counts = Counter(source.split(":")[0] for source in self.texture_sources)
        return {
            "photo": counts["photo"],
            "noise": counts["noise"],
            "procedural": sum(counts.values()) - counts["photo"] - counts["noise"],
        }


@functools.cache
def texture_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """``data.real_photos.named_texture_photos()``, loaded once per process (every scene draws from them)."""
    from mtl_perception.data.real_photos import named_texture_photos

    return tuple(named_texture_photos())


def build_flying_scene(
    config: GeneratorConfig, seed: int, client: int, texture_dir: Path, frames: int
) -> FlyingScene:
    """Build the flying world of ``seed`` in pybullet ``client`` for a sequence of ``frames``.

    Deterministic given the seed, the config and the installed texture photos.
    """
    from mtl_perception.sim.camera import Lighting

    rig = config.sequence_rig(seed)
    rng = np.random.default_rng(seed)
    p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
    builder = Builder(client, None, rng, texture_dir)
    sources: list[str] = []
    ranges = config.flying
    photos = texture_photos()
    duration = max(frames - 1, 1) / config.rate_hz
    camera = CameraPath(
        yaw0=float(rng.uniform(-math.pi, math.pi)),
        yaw_rate=float(rng.uniform(-0.05, 0.05)),
        slide=float(rng.uniform(-1.0, 1.0) * rig.baseline),  # at most a baseline per second
    )
    view = _View.of(rig, camera.yaw0)
    backdrop_disparity = _add_backdrop(builder, rig, view, ranges, photos, sources)
    count = max(1, round(int(rng.integers(ranges.objects[0], ranges.objects[1] + 1)) * config.density))
    for _ in range(count):
        _add_object(builder, rig, view, ranges, photos, sources, backdrop_disparity, duration)
    return FlyingScene(
        config=config,
        seed=seed,
        rig=rig,
        world=builder.world,
        lighting=Lighting.random(rng),
        effects=config.domain_preset.camera_effects(seed, rig),
        camera=camera,
        texture_sources=tuple(sources),
    )


@dataclass(frozen=True)
class _View:
    """The left camera at t = 0: eye and unit axes (world), tangents of the half fields of view."""

    eye: np.ndarray
    forward: np.ndarray
    right: np.ndarray
    up: np.ndarray
    tan_x: float
    tan_y: float

    @staticmethod
    def of(rig: StereoRig, yaw: float) -> _View:
        (eye, target, up), _ = rig.camera_poses(np.zeros(2), yaw)
        forward = target - eye
        return _View(eye, forward, np.cross(forward, up), up, rig.width / 2 / rig.fx, rig.height / 2 / rig.fy)

    def point(self, x: float, y: float, depth: float) -> np.ndarray:
        """World point at ``depth`` along the axis, ``x``/``y`` in units of the half view (right, up)."""
        return self.eye + depth * (self.forward + x * self.tan_x * self.right + y * self.tan_y * self.up)


def random_texture(
    rng: np.random.Generator, photos: tuple[tuple[str, np.ndarray], ...], ranges: FlyingRanges
) -> tuple[np.ndarray, str]:
    """(RGB uint8 texture, its source): a photo crop, colour noise or a recoloured procedural kind."""
    draw = rng.random()
    if photos and draw < ranges.photo_share:
        name, photo = photos[int(rng.integers(len(photos)))]
        return photo_crop(rng, photo), f"photo:{name}"
    if draw < ranges.photo_share + ranges.noise_share:
        size = textures.TEXTURE_SIZE
        octaves = int(rng.integers(2, 6))
        # Smooth noise plus per-texel grain: something to match at every scale.
        noise = np.stack(
            [
                0.7 * textures.value_noise(rng, size, octaves) + 0.3 * rng.random((size, size))
                for _ in range(3)
            ],
            axis=-1,
        )
        lo, hi = rng.uniform(0, 120, 3), rng.uniform(130, 255, 3)
        return np.clip(lo + (hi - lo) * noise, 0, 255).astype(np.uint8), "noise"
    kind = sorted(textures.TEXTURE_KINDS)[int(rng.integers(len(textures.TEXTURE_KINDS)))]
    image = textures.TEXTURE_KINDS[kind](rng)
    # Keep the kind's light/dark detail, repaint it: a grass pattern in any colour.
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = lum / max(float(lum.mean()), 1.0)
    colour, contrast = rng.uniform(30, 230, 3), float(rng.uniform(0.6, 1.6))
    return np.clip(colour * (1.0 + contrast * (detail[..., None] - 1.0)), 0, 255).astype(np.uint8), kind


def photo_crop(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A random crop (a quarter of the photo up to all of it: never magnified much), turned, resized,
    gained and, for grey photos, tinted: PHOTO_TEXTURE_SIZE square RGB uint8."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    ch, cw = side, min(w, int(side * rng.uniform(0.6, 1.6)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    size = PHOTO_TEXTURE_SIZE
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (size, size), interpolation=cv2.INTER_AREA)
    crop = np.rot90(crop, int(rng.integers(4))).astype(np.float32)
    gain = rng.uniform(0.7, 1.3, 3) if np.ptp(photo[::8, ::8], axis=2).max() == 0 else rng.uniform(0.8, 1.2)
    return np.ascontiguousarray(np.clip(crop * gain, 0, 255).astype(np.uint8))


def _texture(builder: Builder, ranges: FlyingRanges, photos, sources: list[str]) -> tuple[int, int]:
    """(texture id, texture width in texels) of a new random texture; its source goes to ``sources``."""
    image, source = random_texture(builder.rng, photos, ranges)
    sources.append(source)
    return builder.image_texture(image, source.split(":")[0]), image.shape[1]


def _add_backdrop(
    builder: Builder, rig: StereoRig, view: _View, ranges: FlyingRanges, photos, sources: list[str]
) -> float:
    """A textured, tilted quad facing the camera (or none); returns its centre disparity (0: none)."""
    rng = builder.rng
    draw = rng.random()
    if draw < ranges.backdrop_none:
        return 0.0
    fb = rig.fx * rig.baseline
    if draw < ranges.backdrop_none + ranges.backdrop_partial:
        cover, centre = float(rng.uniform(0.3, 0.8)), rng.uniform(-0.6, 0.6, 2)
    else:  # the whole view with a margin for the camera's slide and turn
        cover, centre = 1.6, np.zeros(2)
    # Disparity log-uniform from just inside the far limit to a fifth of the labelled range.
    low, high = fb / (0.9 * rig.far), 0.2 * rig.max_disparity
    disparity = float(math.exp(rng.uniform(math.log(low), math.log(max(high, low)))))
    depth = fb / disparity
    # Tilts keep the nearest corner at least half the centre depth away.
    reach_x = view.tan_x * (cover + abs(centre[0]))
    reach_y = view.tan_y * (cover + abs(centre[1]))
    yaw = float(rng.uniform(-1, 1)) * min(math.atan(0.5 / reach_x), 1.0)
    pitch = float(rng.uniform(-1, 1)) * min(math.atan(0.5 / reach_y), 1.0)
    e1 = math.cos(yaw) * view.right + math.sin(yaw) * view.forward
    e2 = math.cos(pitch) * view.up + math.sin(pitch) * view.forward
    e2 -= (e2 @ e1) * e1
    e2 /= np.linalg.norm(e2)
    normal = np.cross(e2, e1)  # towards the camera: (right x up) = -forward, see rig.camera_poses
    half_w = depth * view.tan_x * cover / math.cos(yaw)
    half_h = depth * view.tan_y * cover / math.cos(pitch)
    middle = view.point(float(centre[0]), float(centre[1]), depth)
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    vertices = [(middle + a * half_w * e1 + b * half_h * e2).tolist() for a, b in corners]
    texture, texels = _texture(builder, ranges, photos, sources)
    # Tile so that a texel covers 1-2.5 pixels at the centre: a stretched texture would be a blur.
    repeats = max(1.0, round(cover * rig.width / (texels * float(rng.uniform(1.0, 2.5)))))
    uvs = [[(a + 1) / 2 * repeats, (b + 1) / 2 * repeats * half_h / half_w] for a, b in corners]
    builder.mesh(None, (vertices, [0, 1, 2, 0, 2, 3], uvs, [normal.tolist()] * 4), texture=texture)
    return disparity


def _add_object(
    builder: Builder,
    rig: StereoRig,
    view: _View,
    ranges: FlyingRanges,
    photos,
    sources: list[str],
    backdrop_disparity: float,
    duration: float,
) -> None:
    rng = builder.rng
    fb = rig.fx * rig.baseline
    top = rig.max_disparity
    if rng.random() < ranges.near_share:
        disparity = float(rng.uniform(0.5, 1.0)) * top
    else:  # log-uniform in front of the backdrop, down to far_fraction of the far limit
        low = max(fb / (ranges.far_fraction * rig.far), 1.05 * backdrop_disparity)
        disparity = float(math.exp(rng.uniform(math.log(low), math.log(0.5 * top))))
    depth = fb / disparity
    x, y = rng.uniform(-1.1, 1.1, 2)
    size = float(rng.uniform(*ranges.size)) * view.tan_x  # bounding radius per metre of depth
    depth_rate = float(np.clip(rng.uniform(-1, 1) * ranges.depth_speed, -0.3 / duration, 0.3 / duration))
    # Nearest the object's surface gets over the sequence stays clear of the near plane.
    reach = max(1.0 + min(depth_rate * duration, 0.0) - size, 0.05)
    depth = max(depth, NEAR_CLEARANCE * rig.near / reach)
    radius = size * depth
    lateral = rng.uniform(-1, 1, 2) * ranges.speed * depth * np.array([view.tan_x, view.tan_y])
    velocity = lateral[0] * view.right + lateral[1] * view.up + depth_rate * depth * view.forward
    quat = rng.normal(size=4)
    axis = rng.normal(size=3)
    spin = axis / np.linalg.norm(axis) * rng.uniform(0.0, ranges.spin)
    texture, _ = _texture(builder, ranges, photos, sources)
    tint = (*tuple(float(c) for c in rng.uniform(0.6, 1.0, 3)), 1.0)
    if rng.random() < ranges.mesh_share:
        name, has_uv = MESHES[int(rng.integers(len(MESHES)))]
        paint = tint if has_uv else (*tuple(float(c) for c in rng.uniform(0.1, 1.0, 3)), 1.0)
        body = builder.mesh_file(None, name, radius / _mesh_radius(name), paint, texture if has_uv else -1)
    else:
        body = builder.compound(
            None, _parts(rng, SHAPES[int(rng.integers(len(SHAPES)))], radius, texture, tint), (0, 0, 0)
        )
    builder.world.actors.append(
        Tumbler(body, view.point(float(x), float(y), depth), velocity, quat / np.linalg.norm(quat), spin)
    )


def _parts(rng: np.random.Generator, shape: str, radius: float, texture: int, tint) -> list[Part]:
    """The primitives of one object of ``shape``, all inside a sphere of ``radius`` about the origin."""
    if shape == "box":
        half = rng.uniform(0.2, 1.0, 3)
        return [Part(p.GEOM_BOX, tuple(radius * half / np.linalg.norm(half)), (0, 0, 0), tint, texture)]
    if shape == "sphere":
        return [Part(p.GEOM_SPHERE, (radius * rng.uniform(0.6, 1.0),), (0, 0, 0), tint, texture)]
    if shape == "cylinder":
        angle = rng.uniform(0.2, 1.37)
        return [
            Part(
                p.GEOM_CYLINDER,
                (radius * math.cos(angle), 2 * radius * math.sin(angle)),
                (0, 0, 0),
                tint,
                texture,
            )
        ]
    if shape == "capsule":  # a cylinder capped by two spheres
        r = radius * rng.uniform(0.2, 0.5)
        half = radius - r
        return [
            Part(p.GEOM_CYLINDER, (r, 2 * half), (0, 0, 0), tint, texture),
            Part(p.GEOM_SPHERE, (r,), (0, 0, half), tint, texture),
            Part(p.GEOM_SPHERE, (r,), (0, 0, -half), tint, texture),
        ]
    # cross: two perpendicular bars
    width = rng.uniform(0.1, 0.3)
    length = math.sqrt(1.0 - 2 * width**2)
    bars = [(length, width, width), (width, length, width)]
    return [Part(p.GEOM_BOX, tuple(radius * np.array(bar)), (0, 0, 0), tint, texture) for bar in bars]


@functools.cache
def _mesh_radius(name: str) -> float:
    """Largest vertex distance from the mesh origin (what a scale of 1 gives as bounding radius)."""
    vertices = [
        [float(v) for v in line.split()[1:4]]
        for line in (Path(pybullet_data.getDataPath()) / name).read_text().splitlines()
        if line.startswith("v ")
    ]
    return float(np.linalg.norm(np.array(vertices), axis=1).max())


def _axis_angle_quat(rotation: np.ndarray) -> np.ndarray:
    """Quaternion (x y z w) of a rotation vector (axis * angle)."""
    angle = float(np.linalg.norm(rotation))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    return np.concatenate([rotation / angle * math.sin(angle / 2), [math.cos(angle / 2)]])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions stored x y z w (apply b, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )
