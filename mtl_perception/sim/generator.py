"""Render synthetic stereo sequences to the on-disk layout of ``data.layout`` (and rosbags).

Two scene families share the layout: ``driving`` (streets, sim/world.py) and ``flying`` (random
objects in front of a random backdrop, sim/flying.py; steering.csv holds 0 there).

Each sequence is rendered by one worker process with its own pybullet DIRECT client into a
temporary directory, then renamed into place, so an interrupted run leaves no half sequence; the
manifest is written last. Same config and seed => byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from mtl_perception.data import layout
from mtl_perception.data.labels import class_table
from mtl_perception.errors import UserError
from mtl_perception.sim.domains import DOMAINS, FLYING_SEED_OFFSET, Domain
from mtl_perception.sim.ego import EgoState, drive
from mtl_perception.sim.rig import RigRanges, StereoRig, random_rig
from mtl_perception.sim.road import Road, random_road

if TYPE_CHECKING:
    from mtl_perception.sim.camera import Lighting, StereoFrame
    from mtl_perception.sim.road import Road
    from mtl_perception.sim.world import World

PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
# "random": a rig drawn per sequence from its seed within ``rig_ranges`` (the default);
# "fixed": every sequence uses the rig of the config's fields (the version-1 rig by default).
RIG_PRESETS = ("random", "fixed")
# "driving": streets along a road (sim/world.py); "flying": random textured objects tumbling in front
# of a random backdrop (sim/flying.py), same layout, steering 0.
FAMILIES = ("driving", "flying")


@dataclass(frozen=True)
class FlyingRanges:
    """What a flying scene draws (sim/flying.py). Depths are drawn as disparities of the sequence's rig.

    ``objects`` is scaled by the config's ``density``; ``size`` is an object's bounding radius as a
    fraction of the view's half width at its depth; ``near_share`` of the objects get a centre
    disparity in the upper half of the labelled range (their front may pass it: unknown there);
    the rest a log-uniform one down to the disparity at ``far_fraction`` of the far limit.
    """

    objects: tuple[int, int] = (10, 30)
    size: tuple[float, float] = (0.05, 0.35)
    near_share: float = 0.3
    far_fraction: float = 0.5
    photo_share: float = 0.4  # textures cut from real photos (when scikit-image ships them)
    noise_share: float = 0.2  # colour value noise; the rest: a sim.textures kind, recoloured
    mesh_share: float = 0.15  # meshes from pybullet_data instead of primitives
    backdrop_none: float = 0.15  # no backdrop: the sky (infinitely far) behind every object
    backdrop_partial: float = 0.25  # a backdrop covering part of the view, sky around it
    speed: float = 0.15  # object image-plane speed, fraction of the half view per second
    depth_speed: float = 0.08  # object depth change, fraction per second (30 % at most per sequence)
    spin: float = 1.5  # rad/s, at most


@dataclass(frozen=True)
class GeneratorConfig:
    """What `mtl-perception generate` renders (stored in the manifest)."""

    width: int = 512
    height: int = 256
    hfov_deg: float = 90.0
    baseline: float = 0.3
    camera_height: float = 1.5
    pitch_deg: float = 3.0
    seed: int = 0
    sequences: dict[str, int] = field(default_factory=lambda: {"train": 40, "val": 6, "test": 8})
    frames: dict[str, int] = field(default_factory=lambda: {"train": 40, "val": 20, "test": 20})
    bag_sequences: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0, "test": 1})
    rate_hz: float = layout.RATE_HZ
    speed_range: tuple[float, float] = (6.0, 12.0)  # ego speed, m/s
    density: float = 1.0  # scales the number of roadside objects and actors
    camera_effects: bool = True
    rig_preset: str = "random"
    rig_ranges: RigRanges = field(default_factory=RigRanges)
    # "default": the training world; "unseen": the held-out domain (sim/domains.py), never trained on.
    domain: str = "default"
    family: str = "driving"  # one of FAMILIES
    flying: FlyingRanges = field(default_factory=FlyingRanges)  # used by the flying family only

    @property
    def domain_preset(self) -> Domain:
        if self.domain not in DOMAINS:
            raise UserError(f"unknown domain {self.domain!r}; choose from {list(DOMAINS)}")
        return DOMAINS[self.domain]

    def rig(self) -> StereoRig:
        """The fixed stereo rig of the config's fields; raises UserError on an unusable geometry."""
        try:
            return StereoRig(
                width=self.width,
                height=self.height,
                hfov_deg=self.hfov_deg,
                baseline=self.baseline,
                mount_height=self.camera_height,
                pitch_deg=self.pitch_deg,
            )
        except ValueError as exc:
            raise UserError(f"bad camera rig: {exc}") from exc

    def sequence_rig(self, seed: int) -> StereoRig:
        """The rig of the sequence with ``seed`` (far plane at its far limit); same seed, same rig.

        Drawn from its own stream ``[seed, 3]`` so the world, drive and lighting of a seed do not
        depend on the preset. A domain with its own rig (a robot's camera) uses that one.
        """
        domain_rig = self.domain_preset.rig
        if domain_rig is not None:
            return domain_rig.rig(self.width, self.height)
        if self.rig_preset == "fixed":
            return self.rig().with_far_limit()
        try:
            return random_rig(np.random.default_rng([seed, 3]), self.width, self.height, self.rig_ranges)
        except ValueError as exc:
            raise UserError(f"bad rig ranges {self.rig_ranges}: {exc}") from exc

    def validate(self) -> None:
        """Raise UserError for any value that cannot produce a dataset."""
        self.rig()
        if self.rig_preset not in RIG_PRESETS:
            raise UserError(f"unknown rig preset {self.rig_preset!r}; choose from {list(RIG_PRESETS)}")
        if self.domain_preset.rig is not None and self.rig_preset != "random":
            raise UserError(f"domain {self.domain!r} brings its own rig; do not combine it with a rig preset")
        for name in ("sequences", "frames", "bag_sequences"):
            counts = getattr(self, name)
            unknown = sorted(set(counts) - set(layout.SPLITS))
            if unknown:
                raise UserError(f"unknown split(s) {unknown} in {name}; choose from {list(layout.SPLITS)}")
            if any(not isinstance(v, int) or v < 0 for v in counts.values()):
                raise UserError(f"{name} must be non-negative integers, got {counts}")
        if any(self.frames.get(s, 0) < 1 for s, n in self.sequences.items() if n > 0):
            raise UserError(f"every split with sequences needs at least 1 frame, got frames={self.frames}")
        if not self.density > 0:
            raise UserError(f"density must be positive, got {self.density}")
        if self.family not in FAMILIES:
            raise UserError(f"unknown scene family {self.family!r}; choose from {list(FAMILIES)}")
        if self.family == "flying" and self.domain != "default":
            raise UserError(f"the flying family has no held-out domain; drop domain {self.domain!r}")
        lo, hi = self.flying.objects
        if self.family == "flying" and not 1 <= lo <= hi:
            raise UserError(f"flying objects must be 1 <= min <= max, got {self.flying.objects}")


@dataclass(frozen=True)
class SequenceJob:
    config: GeneratorConfig
    split: str
    index: int
    root: Path

    @property
    def name(self) -> str:
        return layout.sequence_name(self.split, self.index)

    @property
    def seed(self) -> int:
        # A held-out domain shifts every seed so that no scene of it is also a training scene.
        return (
            layout.sequence_seed(self.config.seed, self.split, self.index)
            + self.config.domain_preset.seed_offset
            + (FLYING_SEED_OFFSET if self.config.family == "flying" else 0)
        )

    @property
    def frames(self) -> int:
        return self.config.frames[self.split]

    @property
    def write_bag(self) -> bool:
        return self.index < self.config.bag_sequences.get(self.split, 0)


def write_png(path: Path, image: np.ndarray) -> None:
    """An RGB (converted for OpenCV) or single-channel image as PNG; OSError when it cannot."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image, PNG_PARAMS):
        raise OSError(f"could not write {path}")


def _label_pngs(view: Any) -> tuple[np.ndarray, np.ndarray]:
    """(disparity, depth) uint16 PNGs of a rendered view in the layout's encoding (layout.FAR, 0)."""
    disparity = layout.encode_png(view.disparity, view.valid, layout.DISPARITY_SCALE)
    # Depth beyond the 16-bit range (>= 256 m) is written as far: +inf, like the sky.
    beyond = view.depth * layout.DEPTH_SCALE > layout.FAR - 0.5
    depth = layout.encode_png(np.where(beyond, np.inf, view.depth), view.valid, layout.DEPTH_SCALE)
    return disparity, depth


def rig_record(rig: StereoRig) -> dict[str, float]:
    """The drawn rig as written to calib.json ("rig") and the manifest's sequence entry."""
    return {
        "camera_height": rig.mount_height,
        "pitch_deg": rig.pitch_deg,
        "roll_deg": rig.roll_deg,
        "hfov_deg": rig.hfov_deg,
        "baseline": rig.baseline,
        "fx": rig.fx,
        "far": rig.far,
        "max_disparity": rig.max_disparity,
    }


@dataclass(frozen=True)
class Scene:
    """One seed's world as the generator renders it: rig, ego speed, road, populated pybullet world,
    lighting and camera effects. ``render`` gives a frame exactly as a dataset sequence has it."""

    config: GeneratorConfig
    seed: int
    rig: StereoRig
    speed: float  # m/s, drawn from ``config.speed_range``
    road: Road
    world: World
    lighting: Lighting
    effects: Any  # apply_pair(left, right, frame_rng): the domain's camera effects

    def render(self, frame: int, xy: np.ndarray, yaw: float) -> tuple[StereoFrame, np.ndarray, np.ndarray]:
        """(clean views + ground truth, left, right) of ``frame`` from the ego pose ``xy``, ``yaw``.

        Actors are placed at ``frame / rate_hz``; left and right carry the camera effects (if on).
        """
        from mtl_perception.sim.camera import render_frame

        effects = self.effects if self.config.camera_effects else None
        rng = np.random.default_rng([self.seed, 2, frame])
        return render_frame(
            self.world, self.rig, self.lighting, frame / self.config.rate_hz, xy, yaw, effects, rng
        )


def build_scene(
    config: GeneratorConfig,
    seed: int,
    client: int,
    texture_dir: Path,
    *,
    frames: int | None = None,
    distance: float | None = None,
) -> Scene:
    """Build the world of ``seed`` in pybullet ``client`` (textures written to ``texture_dir``).

    The road reaches 160 m beyond the ego's travel: ``frames`` at the drawn speed (a dataset
    sequence) or ``distance`` metres (closed-loop driving); give exactly one. Everything is drawn
    from ``seed``'s streams in the order the dataset draws it, so a sequence's scene is the same.
    """
    from mtl_perception.sim.world import build_world

    rig, domain = config.sequence_rig(seed), config.domain_preset
    rng, speed, road = scene_road(config, seed, frames=frames, distance=distance)
    world = build_world(
        client,
        road,
        rng,
        texture_dir,
        density=config.density,
        terrain_margin=rig.far,
        restyle=domain.texture_restyle(seed),
    )
    lighting = domain.lighting(rng)
    return Scene(config, seed, rig, speed, road, world, lighting, domain.camera_effects(seed, rig))


def scene_road(
    config: GeneratorConfig, seed: int, *, frames: int | None = None, distance: float | None = None
) -> tuple[np.random.Generator, float, Road]:
    """(seed's stream after the road, ego speed, road): the first draws of ``build_scene``, which go
    on from the returned stream. Cheap (no pybullet), so labels can be rebuilt from a seed."""
    if (frames is None) == (distance is None):
        raise ValueError("give exactly one of frames and distance")
    rng = np.random.default_rng(seed)
    speed = float(rng.uniform(*config.speed_range))
    travel = distance if distance is not None else frames * speed / config.rate_hz
    return rng, speed, random_road(rng, length=travel + 160.0)


def sequence_drive(config: GeneratorConfig, seed: int, frames: int) -> tuple[Road, float, list[EgoState]]:
    """The road, speed and ego states of a dataset sequence, as ``render_sequence`` drives it."""
    _, speed, road = scene_road(config, seed, frames=frames)
    return road, speed, drive(road, np.random.default_rng([seed, 1]), frames, config.rate_hz, speed)


def sequence_scene(
    config: GeneratorConfig, seed: int, client: int, texture_dir: Path, frames: int
) -> tuple[Any, list[tuple[np.ndarray, float, float]], dict[str, Any]]:
    """(scene, per-frame rig pose and steering ``(xy, yaw, steering)``, extra manifest entries) of
    the dataset sequence with ``seed`` in the config's family; the scene has ``rig`` and
    ``render(frame, xy, yaw)``."""
    if config.family == "flying":
        from mtl_perception.sim.flying import build_flying_scene

        flying = build_flying_scene(config, seed, client, texture_dir, frames)
        # No driver: steering.csv holds 0 so the layout (and every loader) stays the same.
        poses = [(*flying.camera.at(f / config.rate_hz), 0.0) for f in range(frames)]
        return flying, poses, {"textures": flying.texture_counts()}
    scene = build_scene(config, seed, client, texture_dir, frames=frames)
    _, _, states = sequence_drive(config, seed, frames)
    return scene, [(state.xy, state.yaw, state.steering) for state in states], {}


def write_steering_csv(path: Path, rows: list[tuple[int, int, str]]) -> None:
    """A sequence's steering.csv: (frame, stamp_ns, steering_rad as text) per frame."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(layout.STEERING_HEADER)
        writer.writerows(rows)


def write_calibration(path: Path, rig: StereoRig, rate_hz: float) -> None:
    """A sequence's calib.json: both camera_infos, baseline, fx, frame rate, size and the drawn rig."""
    calib = {
        "left": rig.camera_info("left"),
        "right": rig.camera_info("right"),
        "baseline": rig.baseline,
        "fx": rig.fx,
        "rate_hz": rate_hz,
        "width": rig.width,
        "height": rig.height,
        "rig": rig_record(rig),
    }
    path.write_text(json.dumps(calib, indent=2) + "\n")


def render_sequence(job: SequenceJob, progress: Any = None) -> dict[str, Any]:
    """Render one sequence into ``<root>/<split>/<name>`` (atomically); returns its manifest entry.

    ``progress`` is an optional queue receiving 1 per finished frame.
    """
    import pybullet as p  # heavy; only in the worker

    config = job.config
    final = layout.sequence_dir(job.root, job.split, job.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job.name}-", dir=final.parent))
    client = p.connect(p.DIRECT)
    try:
        scene, poses, extra = sequence_scene(config, job.seed, client, tmp / "textures", job.frames)
        rig = scene.rig
        for kind in layout.FRAME_DIRS:
            (tmp / kind).mkdir()
        rows = []
        for frame, (xy, yaw, steering) in enumerate(poses):
            view, left, right = scene.render(frame, xy, yaw)
            stem = f"{layout.frame_stem(frame)}.png"
            write_png(tmp / layout.LEFT_DIR / stem, left)
            write_png(tmp / layout.RIGHT_DIR / stem, right)
            disparity_png, depth_png = _label_pngs(view)
            write_png(tmp / layout.DISPARITY_DIR / stem, disparity_png)
            write_png(tmp / layout.DEPTH_DIR / stem, depth_png)
            write_png(tmp / layout.SEMANTIC_DIR / stem, view.semantic)
            rows.append((frame, layout.frame_stamp_ns(frame, config.rate_hz), f"{steering:.6f}"))
            if progress is not None:
                progress.put(1)
        write_steering_csv(tmp / layout.STEERING_NAME, rows)
        write_calibration(tmp / layout.CALIB_NAME, rig, config.rate_hz)
        shutil.rmtree(tmp / "textures")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        p.disconnect(client)
        shutil.rmtree(tmp, ignore_errors=True)
    if job.write_bag:
        write_sequence_bag(job.root, job.split, job.name, layout.bag_dir(job.root, job.name))
    return {"split": job.split, "seed": job.seed, "frames": job.frames, "rig": rig_record(rig), **extra}


def write_sequence_bag(root: Path, split: str, sequence: str, bag_path: Path, storage: str = "mcap") -> Path:
    """Convert one written sequence to a rosbag2 (inputs + ground truth topics), atomically."""
    from mtl_perception.data.rosbag_io import BagWriter, write_stereo_frame

    calib = json.loads(layout.calib_path(root, split, sequence).read_text())
    with layout.steering_path(root, split, sequence).open() as f:
        rows = list(csv.DictReader(f))
    bag_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{sequence}-", dir=bag_path.parent))
    try:
        with BagWriter(tmp / "bag", storage) as writer:
            for row in rows:
                frame = int(row["frame"])

                def read(kind: str, frame: int = frame) -> np.ndarray:
                    return cv2.imread(
                        str(layout.frame_path(root, split, sequence, kind, frame)), cv2.IMREAD_UNCHANGED
                    )

                write_stereo_frame(
                    writer,
                    int(row["stamp_ns"]),
                    left=cv2.cvtColor(read(layout.LEFT_DIR), cv2.COLOR_BGR2RGB),
                    right=cv2.cvtColor(read(layout.RIGHT_DIR), cv2.COLOR_BGR2RGB),
                    left_info=calib["left"],
                    right_info=calib["right"],
                    semantic=read(layout.SEMANTIC_DIR),
                    # A DisparityImage has no "far" value: far and unknown both go in as 0, which
                    # the replay scorer skips. Depth keeps REP-118: +inf far, NaN unknown (0 here).
                    disparity=layout.decode_disparity(read(layout.DISPARITY_DIR))[0],
                    depth=layout.decode_depth(read(layout.DEPTH_DIR))[0],
                    steering=float(row["steering_rad"]),
                )
        if bag_path.exists():
            shutil.rmtree(bag_path)
        (tmp / "bag").rename(bag_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bag_path


def prepare_output(root: Path, overwrite: bool) -> None:
    """Check ``root`` is writable and free (or ours to overwrite); raise UserError otherwise.

    Creates nothing if it fails.
    """
    root = Path(root)
    existing = root if root.exists() else next((a for a in root.parents if a.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output directory {root} is not writable; choose a directory you can write to")
    if root.exists() and any(root.iterdir()):
        ours = layout.manifest_path(root).is_file()
        if not overwrite:
            raise UserError(
                f"output directory {root} is not empty; pass --overwrite to replace a dataset there"
            )
        if not ours:
            raise UserError(
                f"{root} is not empty and holds no {layout.MANIFEST_NAME}; refusing to overwrite it"
            )


def _clear_dataset(root: Path) -> None:
    layout.manifest_path(root).unlink(missing_ok=True)
    for name in (*layout.SPLITS, layout.BAGS_DIR):
        shutil.rmtree(root / name, ignore_errors=True)


def _worker(args: tuple[SequenceJob, Any]) -> tuple[str, dict[str, Any]]:
    job, queue = args
    return job.name, render_sequence(job, queue)


def generate_dataset(
    config: GeneratorConfig, root: Path, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Render every sequence of ``config`` into ``root`` and write the manifest; returns it.

    Adds ``stats`` (frames, seconds, frames_per_minute) to the returned dict (not the file).
    """
    from tqdm import tqdm

    config.validate()
    root = Path(root)
    prepare_output(root, overwrite)
    jobs = [
        SequenceJob(config, split, index, root)
        for split in layout.SPLITS
        for index in range(config.sequences.get(split, 0))
    ]
    if not jobs:
        raise UserError("nothing to generate: every split has 0 sequences")
    root.mkdir(parents=True, exist_ok=True)
    _clear_dataset(root)
    total = sum(job.frames for job in jobs)
    entries: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    with tqdm(total=total, unit="frame", desc="rendering") as bar:
        if workers <= 1:
            for job in jobs:
                entries[job.name] = render_sequence(job, _BarQueue(bar))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Manager() as manager, ctx.Pool(min(workers, len(jobs))) as pool:
                queue = manager.Queue()
                pending = pool.map_async(_worker, [(job, queue) for job in jobs])
                while not pending.ready() or not queue.empty():
                    while not queue.empty():
                        bar.update(queue.get())
                    pending.wait(0.2)
                entries.update(pending.get())
    seconds = time.perf_counter() - start
    manifest = {
        "format": layout.FORMAT,
        "version": layout.VERSION,
        "classes": class_table(),
        "config": manifest_config(config),
        "splits": {split: [j.name for j in jobs if j.split == split] for split in layout.SPLITS},
        "sequences": {job.name: entries[job.name] for job in jobs},
    }
    layout.manifest_path(root).write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["stats"] = {
        "frames": total,
        "seconds": seconds,
        "frames_per_minute": total / seconds * 60.0 if seconds > 0 else math.inf,
    }
    return manifest


class _BarQueue:
    """Queue-like adapter so in-process rendering updates the bar the same way workers do."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def manifest_config(config: GeneratorConfig) -> dict[str, Any]:
    """The config as stored in the manifest; no ``domain`` key means the default domain and no
    ``family`` key the driving family, so default manifests stay byte-identical to those written
    before domains and families existed."""
    plain = _plain(dataclasses.asdict(config))
    if plain["domain"] == "default":
        del plain["domain"]
    if plain["family"] == "driving":
        del plain["family"], plain["flying"]
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
