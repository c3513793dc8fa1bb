"""Build one random driving scene in a pybullet client and move its actors between frames.

Every body belongs to exactly one class of ``mtl_perception.data.labels``: the segmentation
buffer's object id then maps straight to a class id (lane markings are part of ``road``, curbs of
``sidewalk``, as in Cityscapes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pybullet as p
import pybullet_data

from mtl_perception.data.labels import CLASS_ID, IGNORE_INDEX
from mtl_perception.sim import textures
from mtl_perception.sim.road import Road

IDENTITY_QUAT = (0.0, 0.0, 0.0, 1.0)
# (texture kind, training-style texture) -> the texture to use instead (a domain's texture family).
Restyle = Callable[[str, np.ndarray], np.ndarray]
PARKING_WIDTH = 2.2  # parking strip on each side of the two lanes, labelled road
CURB_HEIGHT = 0.15
SURFACE_Z = 0.02  # road surface above the terrain so the two never z-fight
MARKING_Z = 0.03


@dataclass(frozen=True)
class Part:
    """One visual primitive of a compound body, in the body frame."""

    shape: int  # p.GEOM_BOX / GEOM_SPHERE / GEOM_CYLINDER
    size: tuple[float, ...]  # box half extents, (radius,) or (radius, length)
    position: tuple[float, float, float]
    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: int = -1
    orientation: tuple[float, float, float, float] = IDENTITY_QUAT


Pose = tuple[list[float], tuple[float, ...]]  # (position, quaternion x y z w)


class Actor(Protocol):
    """A body whose pose is a function of time alone (``World.set_time`` places every one)."""

    body: int

    def pose(self, t: float) -> Pose: ...


@dataclass
class Mover:
    """An actor moving along the road: arc length and lateral offset are linear in time."""

    body: int
    s0: float
    lateral0: float
    speed_along: float  # m/s along the road direction (negative = oncoming)
    speed_lateral: float  # m/s to the left (pedestrians crossing)
    z: float = 0.0

    def pose(self, road: Road, t: float) -> Pose:
        s = self.s0 + self.speed_along * t
        xy, heading = road.point(s, self.lateral0 + self.speed_lateral * t)
        yaw = heading + math.atan2(self.speed_lateral, self.speed_along)
        return [float(xy[0]), float(xy[1]), self.z], tuple(p.getQuaternionFromEuler((0.0, 0.0, yaw)))


@dataclass
class World:
    """A built scene: the client, the road (None in a scene without one, e.g. the flying family),
    the class of every body and what moves: ``movers`` along the road, ``actors`` on their own."""

    client: int
    road: Road | None = None
    body_class: dict[int, int] = field(default_factory=dict)
    movers: list[Mover] = field(default_factory=list)
    actors: list[Actor] = field(default_factory=list)

    def class_lookup(self) -> np.ndarray:
        """Array mapping segmentation object id -> class id (index 0 is reserved for id -1 = sky)."""
        table = np.full(max(self.body_class, default=0) + 2, CLASS_ID["sky"], dtype=np.uint8)
        for body, class_id in self.body_class.items():
            table[body + 1] = class_id
        return table

    def set_time(self, t: float) -> None:
        """Place every moving body at time ``t`` seconds."""
        if self.movers and self.road is None:
            raise ValueError("road movers need the world's road")
        placed = [(mover.body, mover.pose(self.road, t)) for mover in self.movers]
        placed += [(actor.body, actor.pose(t)) for actor in self.actors]
        for body, (position, orientation) in placed:
            p.resetBasePositionAndOrientation(body, position, orientation, physicsClientId=self.client)


def class_id(class_name: str | None) -> int:
    """The class id of a body; None = no class fits (ignore), e.g. the objects of a flying scene."""
    return IGNORE_INDEX if class_name is None else CLASS_ID[class_name]


class Builder:
    """Creates bodies in one client and records their classes."""

    def __init__(
        self,
        client: int,
        road: Road | None,
        rng: np.random.Generator,
        texture_dir: Path,
        restyle: Restyle | None = None,
    ) -> None:
        self.client = client
        self.rng = rng
        self.texture_dir = texture_dir
        self.restyle = restyle
        self.world = World(client=client, road=road)
        self._texture_count = 0

    def texture(self, kind: str) -> int:
        # The training texture is always drawn, so the layout draws that follow see the same rng state.
        image = textures.TEXTURE_KINDS[kind](self.rng)
        if self.restyle is not None:
            image = self.restyle(kind, image)
        return self.image_texture(image, kind)

    def image_texture(self, image: np.ndarray, name: str) -> int:
        """Load an RGB uint8 image as a texture of this client (written to ``texture_dir`` first)."""
        path = textures.write_texture(image, self.texture_dir / f"{self._texture_count:04d}_{name}.png")
        self._texture_count += 1
        return p.loadTexture(str(path), physicsClientId=self.client)

    def mesh(
        self, class_name: str | None, mesh: tuple[list, list, list, list], rgba=(1, 1, 1, 1), texture=-1
    ) -> int:
        vertices, indices, uvs, normals = mesh
        shape = p.createVisualShape(
            p.GEOM_MESH,
            vertices=vertices,
            indices=indices,
            uvs=uvs,
            normals=normals,
            physicsClientId=self.client,
        )
        body = p.createMultiBody(0, -1, shape, physicsClientId=self.client)
        p.changeVisualShape(
            body, -1, rgbaColor=list(rgba), textureUniqueId=texture, physicsClientId=self.client
        )
        self.world.body_class[body] = class_id(class_name)
        return body

    def compound(self, class_name: str | None, parts: list[Part], position, yaw: float = 0.0) -> int:
        """One body made of several primitives (a car, a person, a tree), all of one class."""
        shapes = [self._visual(part) for part in parts]
        n = len(parts) - 1
        body = p.createMultiBody(
            baseMass=0,
            baseVisualShapeIndex=shapes[0],
            basePosition=list(position),
            baseOrientation=p.getQuaternionFromEuler((0.0, 0.0, yaw)),
            linkMasses=[0.0] * n,
            linkCollisionShapeIndices=[-1] * n,
            linkVisualShapeIndices=shapes[1:],
            linkPositions=[[0.0, 0.0, 0.0]] * n,
            linkOrientations=[IDENTITY_QUAT] * n,
            linkInertialFramePositions=[[0.0, 0.0, 0.0]] * n,
            linkInertialFrameOrientations=[IDENTITY_QUAT] * n,
            linkParentIndices=[0] * n,
            linkJointTypes=[p.JOINT_FIXED] * n,
            linkJointAxis=[[0.0, 0.0, 1.0]] * n,
            physicsClientId=self.client,
        )
        for link, part in zip(range(-1, n), parts, strict=True):
            p.changeVisualShape(
                body,
                link,
                rgbaColor=list(part.rgba),
                textureUniqueId=part.texture,
                physicsClientId=self.client,
            )
        self.world.body_class[body] = class_id(class_name)
        return body

    def mesh_file(
        self, class_name: str | None, file_name: str, scale: float, rgba=(1, 1, 1, 1), texture=-1
    ) -> int:
        """One body from a mesh file (.obj; relative names resolve in pybullet_data), at the origin."""
        shape = p.createVisualShape(
            p.GEOM_MESH, fileName=file_name, meshScale=[scale] * 3, physicsClientId=self.client
        )
        body = p.createMultiBody(0, -1, shape, physicsClientId=self.client)
        p.changeVisualShape(
            body, -1, rgbaColor=list(rgba), textureUniqueId=texture, physicsClientId=self.client
        )
        self.world.body_class[body] = class_id(class_name)
        return body

    def urdf(self, class_name: str, file_name: str, position, yaw: float, scale: float) -> int:
        body = p.loadURDF(
            file_name,
            list(position),
            p.getQuaternionFromEuler((0.0, 0.0, yaw)),
            useFixedBase=True,
            globalScaling=scale,
            physicsClientId=self.client,
        )
        self.world.body_class[body] = CLASS_ID[class_name]
        return body

    def _visual(self, part: Part) -> int:
        kwargs: dict[str, object] = {}
        if part.shape == p.GEOM_BOX:
            kwargs["halfExtents"] = list(part.size)
        elif part.shape == p.GEOM_SPHERE:
            kwargs["radius"] = part.size[0]
        else:
            kwargs["radius"], kwargs["length"] = part.size
        return p.createVisualShape(
            part.shape,
            visualFramePosition=list(part.position),
            visualFrameOrientation=list(part.orientation),
            physicsClientId=self.client,
            **kwargs,
        )


def strip_mesh(
    road: Road,
    lateral: tuple[float, float],
    z: tuple[float, float],
    uv_scale: float,
    s_range: tuple[float, float] | None = None,
) -> tuple[list, list, list, list]:
    """A ribbon following the road between edge A (lateral[0], z[0]) and edge B (lateral[1], z[1]).

    Triangles face along tangent x (B - A): a flat strip with A right of B faces up; a curb face
    faces the road when its top and bottom edges are ordered accordingly.
    """
    mask = (
        np.ones_like(road.s, dtype=bool)
        if s_range is None
        else (road.s >= s_range[0]) & (road.s <= s_range[1])
    )
    s, xy, normal = road.s[mask], road.xy[mask], road.normal()[mask]
    a = np.column_stack([xy + lateral[0] * normal, np.full(len(s), z[0])])
    b = np.column_stack([xy + lateral[1] * normal, np.full(len(s), z[1])])
    tangent = np.column_stack([-normal[:, 1], normal[:, 0], np.zeros(len(s))])
    face = np.cross(tangent, b - a)
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    vertices = np.empty((2 * len(s), 3))
    vertices[0::2], vertices[1::2] = a, b
    normals = np.repeat(face, 2, axis=0)
    width = float(np.linalg.norm(b[0] - a[0]))
    uvs = np.empty((2 * len(s), 2))
    uvs[:, 0] = np.repeat(s / uv_scale, 2)
    uvs[0::2, 1], uvs[1::2, 1] = 0.0, width / uv_scale
    indices = []
    for i in range(len(s) - 1):
        a0, b0, a1, b1 = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
        indices += [a0, a1, b0, b0, a1, b1]
    return vertices.tolist(), indices, uvs.tolist(), normals.tolist()


def merge_meshes(meshes: list[tuple[list, list, list, list]]) -> tuple[list, list, list, list]:
    """Concatenate meshes into one (one pybullet body instead of many)."""
    vertices: list = []
    indices: list = []
    uvs: list = []
    normals: list = []
    for v, i, u, n in meshes:
        offset = len(vertices)
        vertices += v
        indices += [offset + k for k in i]
        uvs += u
        normals += n
    return vertices, indices, uvs, normals


def build_world(
    client: int,
    road: Road,
    rng: np.random.Generator,
    texture_dir: Path,
    density: float = 1.0,
    terrain_margin: float = 150.0,
    restyle: Restyle | None = None,
) -> World:
    """Populate ``client`` with a random street along ``road``; ``density`` scales object counts.

    The terrain reaches ``terrain_margin`` metres beyond the road (the camera's far plane, so the
    ground near the horizon ends where the labels turn "infinitely far", not at a visible edge).
    ``restyle`` replaces every texture (another domain's look); the scene's layout is unchanged.
    """
    p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
    builder = Builder(client, road, rng, texture_dir, restyle)
    _add_ground(builder, road, terrain_margin)
    _add_roadside(builder, road, density)
    _add_traffic(builder, road, density)
    return builder.world


def _add_ground(builder: Builder, road: Road, terrain_margin: float) -> None:
    half = road.lane_width + PARKING_WIDTH
    outer = half + road.sidewalk_width
    builder.mesh(
        "road",
        strip_mesh(road, (-half, half), (SURFACE_Z, SURFACE_Z), 4.0),
        texture=builder.texture("asphalt"),
    )
    paving = builder.texture("paving")
    sidewalks = [
        strip_mesh(road, (-outer, -half), (CURB_HEIGHT, CURB_HEIGHT), 2.0),
        strip_mesh(road, (half, outer), (CURB_HEIGHT, CURB_HEIGHT), 2.0),
        strip_mesh(road, (-half, -half), (CURB_HEIGHT, 0.0), 2.0),  # right curb, facing the road
        strip_mesh(road, (half, half), (0.0, CURB_HEIGHT), 2.0),  # left curb
    ]
    builder.mesh("sidewalk", merge_meshes(sidewalks), texture=paving)
    builder.mesh("road", _lane_markings(road), rgba=(0.95, 0.95, 0.9, 1.0))
    # Terrain: one large textured quad under everything, out to what the camera can see.
    lo = road.xy.min(axis=0) - terrain_margin
    hi = road.xy.max(axis=0) + terrain_margin
    vertices = [[lo[0], lo[1], 0.0], [hi[0], lo[1], 0.0], [hi[0], hi[1], 0.0], [lo[0], hi[1], 0.0]]
    uvs = [[v[0] / 3.0, v[1] / 3.0] for v in vertices]
    builder.mesh(
        "terrain",
        (vertices, [0, 1, 2, 0, 2, 3], uvs, [[0.0, 0.0, 1.0]] * 4),
        texture=builder.texture("grass"),
    )


def _lane_markings(road: Road) -> tuple[list, list, list, list]:
    """Dashed centre line and solid lines between the lanes and the parking strips."""
    w = 0.06
    meshes = [
        strip_mesh(
            road, (side * road.lane_width - w, side * road.lane_width + w), (MARKING_Z, MARKING_Z), 1.0
        )
        for side in (-1.0, 1.0)
    ]
    dash, gap = 3.0, 6.0
    for start in np.arange(road.s[0], road.s[-1] - dash, dash + gap):
        meshes.append(strip_mesh(road, (-w, w), (MARKING_Z, MARKING_Z), 1.0, (start, start + dash)))
    return merge_meshes([m for m in meshes if len(m[0]) >= 4])


def _roadside_slots(
    road: Road, spacing: tuple[float, float], rng: np.random.Generator
) -> list[tuple[float, int]]:
    """Random (s, side) positions along both sides of the road, ``spacing`` metres apart."""
    slots = []
    for side in (-1, 1):
        s = road.s[0] + rng.uniform(0.0, spacing[1])
        while s < road.s[-1]:
            slots.append((float(s), side))
            s += rng.uniform(*spacing)
    return slots


def _add_roadside(builder: Builder, road: Road, density: float) -> None:
    rng = builder.rng
    outer = road.lane_width + PARKING_WIDTH + road.sidewalk_width
    # Buildings behind the sidewalk, with gaps (grass, trees) between them.
    facades = [builder.texture("facade") for _ in range(4)]
    for s, side in _roadside_slots(road, (14.0 / density, 30.0 / density), rng):
        if rng.random() < 0.25:
            continue
        frontage, depth, height = rng.uniform(8, 18), rng.uniform(8, 15), rng.uniform(5, 25)
        setback = rng.uniform(2.0, 8.0)
        xy, heading = road.point(s, side * (outer + setback + depth / 2))
        tint = (*tuple(float(c) for c in rng.uniform(0.7, 1.0, 3)), 1.0)
        part = Part(
            p.GEOM_BOX,
            (frontage / 2, depth / 2, height / 2),
            (0.0, 0.0, height / 2),
            tint,
            facades[int(rng.integers(len(facades)))],
        )
        builder.compound("building", [part], (xy[0], xy[1], 0.0), heading)
    # Trees and bushes on the grass verge and the sidewalk edge.
    foliage = [builder.texture("foliage") for _ in range(3)]
    bark = builder.texture("bark")
    for s, side in _roadside_slots(road, (6.0 / density, 16.0 / density), rng):
        green = foliage[int(rng.integers(len(foliage)))]
        if rng.random() < 0.6:
            lateral = side * (outer - 0.6)
            trunk_h, crown = rng.uniform(2.0, 4.0), rng.uniform(1.2, 2.8)
            parts = [
                Part(
                    p.GEOM_CYLINDER, (rng.uniform(0.12, 0.25), trunk_h), (0.0, 0.0, trunk_h / 2), texture=bark
                ),
                Part(p.GEOM_SPHERE, (crown,), (0.0, 0.0, trunk_h + crown * 0.7), texture=green),
                Part(p.GEOM_SPHERE, (crown * 0.7,), (0.3, 0.2, trunk_h + crown * 1.4), texture=green),
            ]
        else:
            lateral = side * (outer + rng.uniform(0.8, 2.0))
            size = rng.uniform(0.5, 1.1)
            parts = [
                Part(p.GEOM_SPHERE, (size,), (0.0, 0.0, size * 0.6), texture=green),
                Part(p.GEOM_SPHERE, (size * 0.8,), (size, 0.0, size * 0.5), texture=green),
            ]
        xy, heading = road.point(s, lateral)
        builder.compound("vegetation", parts, (xy[0], xy[1], 0.0), heading)
    # Street lamps (pole) and traffic signs (pole + sign plate) at the kerb.
    metal = (0.45, 0.45, 0.48, 1.0)
    for s, side in _roadside_slots(road, (18.0 / density, 40.0 / density), rng):
        lateral = side * (road.lane_width + PARKING_WIDTH + 0.4)
        xy, heading = road.point(s, lateral)
        if rng.random() < 0.5:
            h = rng.uniform(5.0, 8.0)
            arm = Part(p.GEOM_BOX, (0.06, 0.9, 0.05), (0.0, -side * 0.9, h), metal)
            builder.compound(
                "pole",
                [Part(p.GEOM_CYLINDER, (0.09, h), (0.0, 0.0, h / 2), metal), arm],
                (xy[0], xy[1], CURB_HEIGHT),
                heading,
            )
        else:
            h = rng.uniform(2.2, 3.0)
            builder.compound(
                "pole",
                [Part(p.GEOM_CYLINDER, (0.05, h), (0.0, 0.0, h / 2), metal)],
                (xy[0], xy[1], CURB_HEIGHT),
                heading,
            )
            colour = [(0.8, 0.1, 0.1, 1.0), (0.1, 0.2, 0.8, 1.0), (0.95, 0.8, 0.1, 1.0)][int(rng.integers(3))]
            plate = rng.uniform(0.3, 0.45)
            if rng.random() < 0.5:  # round plate facing oncoming traffic of its side
                quat = p.getQuaternionFromEuler((0.0, math.pi / 2, 0.0))
                parts = [Part(p.GEOM_CYLINDER, (plate, 0.04), (0.0, 0.0, 0.0), colour, orientation=quat)]
            else:
                parts = [Part(p.GEOM_BOX, (0.03, plate, plate), (0.0, 0.0, 0.0), colour)]
            parts.append(
                Part(
                    p.GEOM_BOX,
                    (0.02, plate * 0.6, plate * 0.6),
                    (-side * 0.035, 0.0, 0.0),
                    (0.95,) * 3 + (1.0,),
                )
            )
            builder.compound("traffic sign", parts, (xy[0], xy[1], CURB_HEIGHT + h), heading)


def _car_parts(rng: np.random.Generator) -> tuple[list[Part], float]:
    """A boxy car (body, cabin, wheels) with random size and paint; returns parts and length."""
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9)
    paint = (*tuple(float(c) for c in rng.uniform(0.05, 0.95, 3)), 1.0)
    glass = (0.15, 0.18, 0.22, 1.0)
    wheel_q = p.getQuaternionFromEuler((math.pi / 2, 0.0, 0.0))
    parts = [
        Part(p.GEOM_BOX, (length / 2, width / 2, 0.33), (0.0, 0.0, 0.65), paint),
        Part(p.GEOM_BOX, (length * 0.27, width / 2 - 0.08, 0.28), (-length * 0.05, 0.0, 1.25), glass),
    ]
    for x in (-length * 0.32, length * 0.32):
        for y in (-width / 2 + 0.1, width / 2 - 0.1):
            parts.append(
                Part(
                    p.GEOM_CYLINDER, (0.33, 0.22), (x, y, 0.33), (0.08, 0.08, 0.08, 1.0), orientation=wheel_q
                )
            )
    return parts, length


def _person_parts(builder: Builder) -> list[Part]:
    """A standing pedestrian (legs, torso, arms, head) about 1.6-1.9 m tall."""
    rng = builder.rng
    k = rng.uniform(0.9, 1.08)
    shirt, trousers = builder.texture("clothing"), builder.texture("clothing")
    skin = (*tuple(float(c) for c in rng.uniform([0.45, 0.3, 0.2], [0.95, 0.8, 0.7])), 1.0)
    return [
        Part(p.GEOM_BOX, (0.14 * k, 0.2 * k, 0.3 * k), (0.0, 0.0, 1.17 * k), texture=shirt),
        Part(p.GEOM_BOX, (0.07 * k, 0.07 * k, 0.43 * k), (0.0, 0.1 * k, 0.43 * k), texture=trousers),
        Part(p.GEOM_BOX, (0.07 * k, 0.07 * k, 0.43 * k), (0.0, -0.1 * k, 0.43 * k), texture=trousers),
        Part(p.GEOM_BOX, (0.05 * k, 0.05 * k, 0.3 * k), (0.0, 0.26 * k, 1.15 * k), texture=shirt),
        Part(p.GEOM_BOX, (0.05 * k, 0.05 * k, 0.3 * k), (0.0, -0.26 * k, 1.15 * k), texture=shirt),
        Part(p.GEOM_SPHERE, (0.11 * k,), (0.0, 0.0, 1.6 * k), skin),
    ]


def _add_traffic(builder: Builder, road: Road, density: float) -> None:
    rng = builder.rng
    world = builder.world
    parked_lateral = road.lane_width + PARKING_WIDTH / 2
    # Parked cars in the parking strips (some are pybullet's racecar, scaled to car size).
    for s, side in _roadside_slots(road, (7.0 / density, 25.0 / density), rng):
        xy, heading = road.point(s, side * parked_lateral)
        yaw = heading + (0.0 if side < 0 else math.pi) + rng.normal(0.0, 0.05)
        if rng.random() < 0.15:
            builder.urdf("car", "racecar/racecar.urdf", (xy[0], xy[1], SURFACE_Z), yaw, scale=7.0)
        else:
            builder.compound("car", _car_parts(rng)[0], (xy[0], xy[1], SURFACE_Z), yaw)
    # Moving cars: ahead in the ego lane and oncoming in the other lane.
    for _ in range(max(1, round(rng.integers(2, 6) * density))):
        oncoming = rng.random() < 0.6
        speed = rng.uniform(6.0, 13.0)
        lateral = (1 if oncoming else -1) * road.lane_width / 2
        s0 = rng.uniform(15.0, road.length)
        body = builder.compound("car", _car_parts(rng)[0], (0.0, 0.0, SURFACE_Z))
        world.movers.append(Mover(body, s0, lateral, -speed if oncoming else speed, 0.0, SURFACE_Z))
    # Pedestrians walking along the sidewalks, a few crossing the road.
    for _ in range(max(1, round(rng.integers(5, 12) * density))):
        body = builder.compound("person", _person_parts(builder), (0.0, 0.0, 0.0))
        s0 = rng.uniform(5.0, road.length * 0.7)
        if rng.random() < 0.2:
            side = rng.choice([-1.0, 1.0])
            mover = Mover(
                body, s0, side * (parked_lateral + 1.0), 0.0, -side * rng.uniform(0.8, 1.5), SURFACE_Z
            )
        else:
            lateral = rng.choice([-1.0, 1.0]) * (
                road.lane_width + PARKING_WIDTH + rng.uniform(0.4, road.sidewalk_width - 0.4)
            )
            mover = Mover(
                body, s0, lateral, rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6), 0.0, CURB_HEIGHT
            )
        world.movers.append(mover)
