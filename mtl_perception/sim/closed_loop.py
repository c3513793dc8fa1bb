"""Closed-loop lane keeping: a steering policy drives the ego through the pybullet world.

Open-loop steering error (replay) cannot show what a closed loop does with it: small biases
integrate into lane departures, and latency turns a good controller into an oscillating one. Here the
policy's command moves the ego, the next frame is rendered from where the ego went, and so on.

The loop (``drive_closed_loop``):

- Ego: the kinematic bicycle of ``sim.ego`` (rear-axle reference point, ``WHEELBASE``,
  ``MAX_STEER``, ``SUBSTEPS`` integration steps per frame) at a constant speed, frames at
  ``rate_hz`` (10 Hz, as the dataset). The camera sits at the reference point, as in the dataset.
- Latency: the command computed from the frame at t takes effect at t + latency (rounded to the
  nearest integration step, 10 ms at 10 Hz); until then the previous command stays applied. The
  latency is the wall time of the policy call, measured per frame, or a fixed value. Every frame is
  processed (as by a computer that keeps up with the frame rate in a pipeline); latency only delays.
- No command (``None``: a model whose window is not full yet): the safety driver (``takeover``,
  the expert in ``drive``) steers that frame, as a test driver holds the wheel until the system
  engages; without one the applied command is held (0 at the start). Frames steered by the policy
  are "engaged"; the metrics are over them only (``run_metrics``).
- Interventions: the lane offset is the reference point's lateral offset from the ego lane's centre
  (m, + left). When ``|offset| > lane_width / 2`` (the reference point crosses a lane boundary),
  an intervention is counted, the ego is put back on the lane centre with the road's heading at
  its arc length, commands still in flight are dropped and the policy is reset (a new window, so
  the safety driver steers again until it is full).

Seeds start at ``CLOSED_LOOP_SEED``: scenes no dataset split holds (train 0.., val 100000..,
test 200000.., the unseen domain 1000000..). ``open_scene`` builds a seed's world, rig, speed,
lighting and camera effects exactly as the dataset generator does (``generator.build_scene``).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mtl_perception.data import layout
from mtl_perception.data.labels import CLASS_ID
from mtl_perception.sim.ego import MAX_STEER, SUBSTEPS, WHEELBASE, pure_pursuit
from mtl_perception.sim.road import Road

if TYPE_CHECKING:
    from mtl_perception.sim.generator import GeneratorConfig, Scene
    from mtl_perception.sim.world import World

# Dataset seeds are base + split offset + index (index < 100000): 0 .. 299999 for the default base.
CLOSED_LOOP_SEED = max(layout.SPLIT_SEED_OFFSET.values()) + 100_000
OFF_LANE_M = 1.0  # "far off the lane centre" for the share-of-frames metric
# Cars ahead in the ego lane drive at least this factor x the ego's speed: the ego has no collision
# model and must never drive into one.
LEAD_SPEED_FACTOR = 1.1


@dataclass(frozen=True)
class StereoCamera:
    """Camera model of a rendered frame (pixels at the rendered size; baseline in metres)."""

    fx: float
    cx: float
    cy: float
    baseline: float


@dataclass(frozen=True)
class EgoPose:
    """Ground-truth pose of the ego's reference point (rear axle centre, where the camera sits)."""

    xy: np.ndarray
    yaw: float  # radians, world frame
    s: float  # arc length along the road, metres
    offset: float  # lateral offset from the ego lane's centre, metres, + left


@dataclass(frozen=True)
class Frame:
    """What a policy sees at one frame. ``truth`` is ground truth, for the expert only."""

    index: int
    stamp: float  # seconds since the run started (simulated time)
    left: np.ndarray | None  # HxWx3 uint8 RGB; None when the policy does not use images
    right: np.ndarray | None
    camera: StereoCamera | None
    truth: EgoPose


class Policy(Protocol):
    """A steering controller in the loop. ``uses_images`` False lets the runner skip rendering."""

    name: str
    uses_images: bool

    def reset(self) -> None:
        """Forget all history (run start, after an intervention)."""

    def steer(self, frame: Frame) -> float | None:
        """Front-wheel angle in radians (+ = left), or None when it has no command yet."""


class StraightPolicy:
    """Always 0: how far the road's curvature alone takes a car out of its lane."""

    name = "straight"
    uses_images = False

    def reset(self) -> None:
        pass

    def steer(self, frame: Frame) -> float:
        return 0.0


class ExpertPolicy:
    """The ground-truth controller: pure pursuit toward the lane centre from the true pose.

    The dataset's driver (``sim.ego.drive``) without its wandering target: same look-ahead
    (max(5 m, 0.9 s x speed)) and law, evaluated once per frame.
    """

    name = "expert"
    uses_images = False

    def __init__(self, road: Road, speed: float) -> None:
        self.road, self.speed = road, speed

    def reset(self) -> None:
        pass

    def steer(self, frame: Frame) -> float:
        pose = frame.truth
        return pure_pursuit(self.road, pose.xy, pose.yaw, pose.s, -self.road.lane_width / 2, self.speed)


class SteeringPipeline(Protocol):
    """What ``ModelPolicy`` needs of ``runtime.Pipeline`` (sim sits below runtime in the layers)."""

    def process(
        self,
        image_left: np.ndarray,
        image_right: np.ndarray | None = None,
        *,
        camera: Any,
        stamp: float | None,
    ) -> Any:
        """A result with ``.steering`` (radians or None); the stamp (s) keeps the window consecutive."""

    def reset(self) -> None: ...


class ModelPolicy:
    """The perception model + steering graph through the runtime pipeline (stereo frames in; a mono
    model, ``stereo=False``, reads the left view).

    ``camera_model`` turns the frame's camera into the pipeline's ``camera`` argument (so depth is
    computed as the node computes it, at the node's cost); None passes no camera.
    """

    uses_images = True

    def __init__(
        self,
        pipeline: SteeringPipeline,
        camera_model: Callable[[StereoCamera], Any] | None = None,
        name: str = "model",
        stereo: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.camera_model = camera_model
        self.name = name
        self.stereo = stereo  # a mono model gets the left view only

    def reset(self) -> None:
        self.pipeline.reset()

    def steer(self, frame: Frame) -> float | None:
        if frame.left is None or (self.stereo and frame.right is None):
            raise ValueError("ModelPolicy needs the rendered views")
        camera = None
        if self.camera_model is not None and frame.camera is not None:
            camera = self.camera_model(frame.camera)
        right = frame.right if self.stereo else None
        return self.pipeline.process(frame.left, right, camera=camera, stamp=frame.stamp).steering


# (frame index, reference point xy, yaw) -> (left, right) RGB uint8
Renderer = Callable[[int, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Intervention:
    time: float  # seconds since the run started
    s: float  # arc length where the ego left its lane
    xy: np.ndarray  # where it left (the reset puts it on the lane centre at the same s)
    offset: float  # lane offset when it was caught, metres


@dataclass
class Trajectory:
    """One run. Per-frame arrays are sampled when the frame is rendered (before its command)."""

    rate_hz: float
    lane_width: float
    distance: float  # metres driven (path length)
    offset: np.ndarray  # lane offset per frame, metres
    command: np.ndarray  # the policy's output per frame, radians; NaN where it gave none
    applied: np.ndarray  # the command in effect at each frame time, radians (after the clamp)
    latency: np.ndarray  # delay given to each frame's command, seconds; NaN where none
    engaged: np.ndarray  # per frame, True where the policy (not the safety driver) steered
    interventions: list[Intervention] = field(default_factory=list)
    path_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # per step; NaN row at resets
    path_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_engaged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # False: safety driver
    step_applied: np.ndarray = field(default_factory=lambda: np.zeros(0))  # command in effect per step
    render_seconds: float = 0.0
    policy_seconds: float = 0.0


def drive_closed_loop(
    road: Road,
    policy: Policy,
    *,
    speed: float,
    distance: float,
    rate_hz: float = layout.RATE_HZ,
    substeps: int = SUBSTEPS,
    latency: float | None = None,
    render: Renderer | None = None,
    camera: StereoCamera | None = None,
    takeover: Policy | None = None,
    progress: Callable[[float], None] | None = None,
) -> Trajectory:
    """Drive ``distance`` metres of ``road``'s right lane at ``speed`` m/s with ``policy`` steering.

    ``latency`` (seconds) fixes the delay of every command; None measures each policy call's wall
    time. ``render`` makes the views for a policy that ``uses_images``. ``takeover`` (a policy that
    always answers, without images) steers the frames where ``policy`` has no command, with the
    same delay. ``progress`` receives the metres driven after each frame.
    """
    if speed <= 0 or distance <= 0:
        raise ValueError(f"speed and distance must be positive, got {speed} m/s, {distance} m")
    if policy.uses_images and render is None:
        raise ValueError(f"policy {policy.name!r} uses images: give a renderer")
    dt = 1.0 / rate_hz / substeps
    lane_centre = -road.lane_width / 2
    xy, yaw = road.point(0.0, lane_centre)
    s, lateral = road.project(xy, 0.0)
    applied, applied_frame = 0.0, -1  # the command in effect and the frame it was computed from
    pending: list[tuple[int, int, float]] = []  # (step it takes effect, frame, command)
    frames: dict[str, list[float]] = {k: [] for k in ("offset", "command", "applied", "latency", "engaged")}
    path_xy, path_s, path_offset = [xy.copy()], [s], [lateral - lane_centre]
    path_engaged = [False]
    step_applied: list[float] = []
    interventions: list[Intervention] = []
    travelled, render_seconds, policy_seconds = 0.0, 0.0, 0.0
    policy.reset()
    frame_index = 0
    while travelled < distance - 1e-9:
        pose = EgoPose(xy=xy.copy(), yaw=yaw, s=s, offset=lateral - lane_centre)
        left = right = None
        if policy.uses_images:
            start = time.perf_counter()
            assert render is not None
            left, right = render(frame_index, pose.xy, yaw)
            render_seconds += time.perf_counter() - start
        frame = Frame(frame_index, frame_index / rate_hz, left, right, camera, pose)
        start = time.perf_counter()
        command = policy.steer(frame)
        elapsed = time.perf_counter() - start
        policy_seconds += elapsed
        delay = elapsed if latency is None else latency
        first_step = frame_index * substeps
        if command is not None and not math.isfinite(command):
            raise ValueError(f"policy {policy.name!r} returned steering {command} at frame {frame_index}")
        frames["offset"].append(pose.offset)
        frames["command"].append(math.nan if command is None else float(command))
        frames["latency"].append(math.nan if command is None else delay)
        frames["engaged"].append(command is not None)
        if command is None and takeover is not None:
            command = takeover.steer(frame)
        if command is not None:
            pending.append((first_step + round(delay / dt), frame_index, float(command)))
        for step in range(first_step, first_step + substeps):
            # Commands take effect in the order they were computed; a stale one never overrides.
            for due in sorted(c for c in pending if c[0] <= step):
                pending.remove(due)
                if due[1] > applied_frame:
                    applied, applied_frame = float(np.clip(due[2], -MAX_STEER, MAX_STEER)), due[1]
            if step == first_step:
                frames["applied"].append(applied)
            step_applied.append(applied)
            xy = xy + speed * dt * np.array([math.cos(yaw), math.sin(yaw)])
            yaw += speed * dt * math.tan(applied) / WHEELBASE
            travelled += speed * dt
            s, lateral = road.project(xy, s)
            if abs(lateral - lane_centre) > road.lane_width / 2:
                interventions.append(Intervention((step + 1) * dt, s, xy.copy(), lateral - lane_centre))
                path_xy += [xy.copy(), np.full(2, np.nan)]
                path_s += [s, math.nan]
                path_offset += [lateral - lane_centre, math.nan]
                path_engaged += [frames["engaged"][-1], False]
                xy, yaw = road.point(s, lane_centre)
                s, lateral = road.project(xy, s)
                pending.clear()
                policy.reset()
            path_xy.append(xy.copy())
            path_s.append(s)
            path_offset.append(lateral - lane_centre)
            path_engaged.append(frames["engaged"][-1])
        frame_index += 1
        if progress is not None:  # the last frame may overshoot: report no more than ``distance``
            progress(min(travelled, distance) - min(travelled - speed * substeps * dt, distance))
    return Trajectory(
        rate_hz=rate_hz,
        lane_width=road.lane_width,
        distance=travelled,
        offset=np.asarray(frames["offset"]),
        command=np.asarray(frames["command"]),
        applied=np.asarray(frames["applied"]),
        latency=np.asarray(frames["latency"]),
        engaged=np.asarray(frames["engaged"], bool),
        interventions=interventions,
        path_xy=np.asarray(path_xy),
        path_s=np.asarray(path_s),
        path_offset=np.asarray(path_offset),
        path_engaged=np.asarray(path_engaged, bool),
        step_applied=np.asarray(step_applied),
        render_seconds=render_seconds,
        policy_seconds=policy_seconds,
    )


def run_metrics(trajectory: Trajectory) -> dict[str, Any]:
    """Per-run metrics (JSON-ready), over the engaged frames (the policy steering, not the safety
    driver): offsets and the share are over them (sampled at ``rate_hz``); ``engaged_km`` is the
    distance they cover (frames are equally spaced) and the intervention rates are per engaged km;
    whiteness is the RMS rate of the applied command between consecutive engaged frames, in deg/s;
    latency the mean delay given to the frames that had a command. ``autonomy`` is the engaged share
    of the frames. ``km_per_intervention`` is None when there was none."""
    engaged = trajectory.engaged
    offset = np.abs(trajectory.offset[engaged])
    both = engaged[1:] & engaged[:-1]
    rates = (np.diff(trajectory.applied) * trajectory.rate_hz)[both]
    latency = trajectory.latency[np.isfinite(trajectory.latency)]
    frames = len(engaged)
    km = trajectory.distance / 1000.0 * (len(offset) / frames if frames else 0.0)
    count = len(trajectory.interventions)
    return {
        "distance_km": trajectory.distance / 1000.0,
        "engaged_km": km,
        "autonomy": len(offset) / frames if frames else 0.0,
        "frames": len(offset),
        "mean_abs_offset_m": float(offset.mean()) if len(offset) else 0.0,
        "rms_offset_m": float(np.sqrt(np.mean(offset**2))) if len(offset) else 0.0,
        "max_abs_offset_m": float(offset.max()) if len(offset) else 0.0,
        "share_frames_over_1m": float(np.mean(offset > OFF_LANE_M)) if len(offset) else 0.0,
        "interventions": count,
        "interventions_per_km": count / km if km > 0 else 0.0,
        "km_per_intervention": km / count if count else None,
        "whiteness_deg_s": float(np.degrees(np.sqrt(np.mean(rates**2)))) if len(rates) else 0.0,
        "rate_samples": len(rates),
        "commands": len(latency),
        "latency_ms": float(latency.mean() * 1e3) if len(latency) else None,
    }


def aggregate_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of several runs pooled as one drive: sums for distances and interventions, frame-
    weighted means (mean, RMS and share over all engaged frames), the largest offset, whiteness over
    all rate samples, latency over all commands. Wall times (when the runs carry them) add up."""
    frames = sum(r["frames"] for r in runs)
    samples = sum(r["rate_samples"] for r in runs)
    commands = sum(r["commands"] for r in runs)
    distance = sum(r["distance_km"] for r in runs)
    km = sum(r["engaged_km"] for r in runs)
    count = sum(r["interventions"] for r in runs)

    def pooled(key: str, weight: str, squared: bool = False) -> float:
        total = sum(r[weight] for r in runs)
        if not total:
            return 0.0
        if squared:
            return math.sqrt(sum(r[key] ** 2 * r[weight] for r in runs) / total)
        return sum(r[key] * r[weight] for r in runs) / total

    out: dict[str, Any] = {
        "runs": len(runs),
        "distance_km": distance,
        "engaged_km": km,
        "autonomy": km / distance if distance > 0 else 0.0,
        "frames": frames,
        "mean_abs_offset_m": pooled("mean_abs_offset_m", "frames"),
        "rms_offset_m": pooled("rms_offset_m", "frames", squared=True),
        "max_abs_offset_m": max((r["max_abs_offset_m"] for r in runs), default=0.0),
        "share_frames_over_1m": pooled("share_frames_over_1m", "frames"),
        "interventions": count,
        "interventions_per_km": count / km if km > 0 else 0.0,
        "km_per_intervention": km / count if count else None,
        "whiteness_deg_s": pooled("whiteness_deg_s", "rate_samples", squared=True),
        "rate_samples": samples,
        "commands": commands,
        "latency_ms": (
            sum(r["latency_ms"] * r["commands"] for r in runs if r["commands"]) / commands
            if commands
            else None
        ),
    }
    if runs and all("wall_s" in r for r in runs):
        out["wall_s"] = sum(r["wall_s"] for r in runs)
        out["wall_s_per_km"] = out["wall_s"] / distance if distance > 0 else None
    return out


def keep_lane_clear(world: World, speed: float) -> None:
    """Speed up the cars ahead in the ego lane to ``LEAD_SPEED_FACTOR`` x ``speed`` where slower, so
    the ego (no collision model) never drives into one. They all start at least 15 m ahead."""
    car = CLASS_ID["car"]
    for mover in world.movers:
        ahead = mover.lateral0 < 0 and mover.speed_along > 0 and mover.speed_lateral == 0
        if ahead and world.body_class.get(mover.body) == car:  # not the pedestrians on the sidewalk
            mover.speed_along = max(mover.speed_along, LEAD_SPEED_FACTOR * speed)


@contextlib.contextmanager
def open_scene(config: GeneratorConfig, seed: int, distance: float) -> Iterator[Scene]:
    """The world of ``seed`` (as the generator builds it) with a road ``distance`` + 160 m long, in
    its own pybullet client; the lane ahead is kept clear (``keep_lane_clear``)."""
    import pybullet as p

    from mtl_perception.sim.generator import build_scene

    client = p.connect(p.DIRECT)
    try:
        with tempfile.TemporaryDirectory(prefix="closed-loop-") as textures:
            scene = build_scene(config, seed, client, Path(textures), distance=distance)
            keep_lane_clear(scene.world, scene.speed)
            yield scene
    finally:
        p.disconnect(client)


def scene_camera(scene: Scene) -> StereoCamera:
    rig = scene.rig
    return StereoCamera(fx=rig.fx, cx=rig.cx, cy=rig.cy, baseline=rig.baseline)


def drive_scene(
    scene: Scene,
    policy: Policy,
    distance: float,
    *,
    speed: float | None = None,
    latency: float | None = None,
    takeover: Policy | None = None,
    progress: Callable[[float], None] | None = None,
) -> Trajectory:
    """``drive_closed_loop`` in a scene: its road, rig, renderer (frames exactly as a dataset
    sequence renders them) and speed (``speed`` overrides the seed's)."""

    def render(frame: int, xy: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        _, left, right = scene.render(frame, xy, yaw)
        return left, right

    return drive_closed_loop(
        scene.road,
        policy,
        speed=scene.speed if speed is None else speed,
        distance=distance,
        rate_hz=scene.config.rate_hz,
        latency=latency,
        render=render,
        camera=scene_camera(scene),
        takeover=takeover,
        progress=progress,
    )


def plot_run(road: Road, trajectory: Trajectory, path: Path, title: str) -> Path:
    """Top-down view (road edges, lane lines, lane centre, driven path, interventions) and the lane
    offset along the road, as a PNG. Stretches the safety driver steered (the policy had no command
    yet) are drawn over the path in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtl_perception.sim.world import PARKING_WIDTH

    s_end = float(np.nanmax(trajectory.path_s)) if len(trajectory.path_s) else 0.0
    mask = (road.s >= -5.0) & (road.s <= s_end + 5.0)
    xy, normal = road.xy[mask], road.normal()[mask]
    width = road.lane_width
    fig, (top, side) = plt.subplots(2, 1, figsize=(10, 9), gridspec_kw={"height_ratios": [3, 1]})
    for lateral, style, label in (
        (width + PARKING_WIDTH, "k-", "kerbs"),
        (-width - PARKING_WIDTH, "k-", None),
        (0.0, "k--", "centre line (lane boundary)"),
        (-width, "k:", "right lane line (lane boundary)"),
    ):
        edge = xy + lateral * normal
        top.plot(edge[:, 0], edge[:, 1], style, lw=0.8, label=label)
    centre = xy - width / 2 * normal
    top.plot(centre[:, 0], centre[:, 1], color="tab:green", lw=0.8, label="lane centre")
    top.plot(trajectory.path_xy[:, 0], trajectory.path_xy[:, 1], color="tab:blue", lw=1.2, label="driven")
    # NaN breaks the line, so only the safety driver's stretches are drawn.
    manual = np.where(trajectory.path_engaged, np.nan, 1.0)
    if len(trajectory.path_engaged) and not trajectory.path_engaged.all():
        top.plot(
            trajectory.path_xy[:, 0] * manual,
            trajectory.path_xy[:, 1] * manual,
            color="tab:orange",
            lw=2.5,
            alpha=0.7,
            label="safety driver (model's window filling)",
        )
    if trajectory.interventions:
        points = np.array([i.xy for i in trajectory.interventions])
        top.plot(points[:, 0], points[:, 1], "rx", ms=8, label=f"interventions ({len(points)})")
    top.set_aspect("equal", adjustable="datalim")
    top.set_xlabel("x (m)")
    top.set_ylabel("y (m)")
    top.legend(loc="best", fontsize=8)
    top.set_title(title)
    side.plot(trajectory.path_s, trajectory.path_offset, color="tab:blue", lw=1.0)
    if len(trajectory.path_engaged):
        side.plot(trajectory.path_s * manual, trajectory.path_offset, color="tab:orange", lw=2.0, alpha=0.7)
    for bound in (-width / 2, width / 2):
        side.axhline(bound, color="r", lw=0.8, ls="--")
    side.axhline(0.0, color="tab:green", lw=0.8)
    side.set_xlabel("arc length s (m)")
    side.set_ylabel("lane offset (m, + left)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
