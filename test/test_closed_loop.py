"""Closed-loop driving: known answers from geometry, the latency model, metrics, the model policy, CLI."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_networks import tiny_mono_config
from fixtures_replay import tiny_model

from mtl_perception.cli import main
from mtl_perception.commands.drive import model_policy
from mtl_perception.export.onnx_export import export_deploy_model, export_steering_head
from mtl_perception.model_info import read_model_info, steering_path_for
from mtl_perception.networks import DeployModel, SteeringHead, build_model
from mtl_perception.sim.closed_loop import (
    CLOSED_LOOP_SEED,
    EgoPose,
    ExpertPolicy,
    Frame,
    Intervention,
    StraightPolicy,
    Trajectory,
    aggregate_metrics,
    drive_closed_loop,
    keep_lane_clear,
    run_metrics,
)
from mtl_perception.sim.road import Road, random_road

__all__ = ["tiny_model"]  # session fixture used by name

SPEED = 9.0  # m/s: 0.09 m per integration step at 10 Hz x 10 steps


def arc_road(radius: float | None, lane_width: float = 3.5, length: float = 250.0) -> Road:
    """Straight up to s = 0, then a left arc of ``radius`` (centreline; None: straight on), sampled
    exactly."""
    s = np.arange(-30.0, length + 0.5, 0.5)
    if radius is None:
        heading, x, y = np.zeros_like(s), s, np.zeros_like(s)
    else:
        heading = np.clip(s, 0.0, None) / radius
        x = np.where(s < 0, s, radius * np.sin(heading))
        y = np.where(s < 0, 0.0, radius * (1.0 - np.cos(heading)))
    return Road(s=s, xy=np.stack([x, y], axis=1), heading=heading, lane_width=lane_width, sidewalk_width=2.5)


def straight_road() -> Road:
    return arc_road(None)


class Scripted:
    """Returns ``value(frame index)``, optionally after sleeping (a slow model)."""

    name = "scripted"
    uses_images = False

    def __init__(self, value, sleep: float = 0.0) -> None:
        self.value, self.sleep = value, sleep

    def reset(self) -> None:
        pass

    def steer(self, frame: Frame) -> float:
        if self.sleep:
            time.sleep(self.sleep)
        return self.value(frame.index)


def test_expert_keeps_to_the_lane_centre_of_held_out_roads() -> None:
    for seed in range(CLOSED_LOOP_SEED, CLOSED_LOOP_SEED + 3):
        road = random_road(np.random.default_rng(seed), length=260.0)
        metrics = run_metrics(drive_closed_loop(road, ExpertPolicy(road, SPEED), speed=SPEED, distance=100.0))
        assert metrics["interventions"] == 0
        assert metrics["mean_abs_offset_m"] < 0.3
        assert metrics["distance_km"] == pytest.approx(0.1, abs=SPEED / 10 / 1000)


def test_straight_leaves_a_curve_where_geometry_says_and_is_reset_to_the_lane_centre() -> None:
    """Going straight from the lane centre of a left arc, the reference point crosses the right lane
    line (radius R + w) after sqrt((R + w)^2 - (R + w/2)^2) metres; each reset starts it over."""
    radius, width = 50.0, 3.5
    road = arc_road(radius, width)
    trajectory = drive_closed_loop(road, StraightPolicy(), speed=SPEED, distance=100.0)
    expected = math.sqrt((radius + width) ** 2 - (radius + width / 2) ** 2)  # 13.57 m
    times = [0.0] + [i.time for i in trajectory.interventions]
    assert len(trajectory.interventions) == int(100.0 // expected)
    assert np.diff(times) * SPEED == pytest.approx(expected, abs=SPEED / 100 + 0.01)
    for intervention in trajectory.interventions:
        assert -width / 2 - 0.05 < intervention.offset < -width / 2  # just over the right lane line
    # After each departure the path breaks (NaN) and restarts on the lane centre.
    restarts = np.flatnonzero(np.isnan(trajectory.path_offset)) + 1
    assert len(restarts) == len(trajectory.interventions)
    assert np.all(np.abs(trajectory.path_offset[restarts]) < 0.01)


def test_a_command_takes_effect_exactly_its_latency_after_its_frame() -> None:
    def command(k: int) -> float:
        return 0.001 * (k + 1) * (-1) ** k

    trajectory = drive_closed_loop(
        straight_road(), Scripted(command), speed=SPEED, distance=3.0, latency=0.25
    )
    steps = np.arange(len(trajectory.step_applied))
    computed = (steps - 25) // 10  # the newest frame whose command is 25 steps (0.25 s) old
    expected = np.where(computed >= 0, [command(int(k)) for k in computed], 0.0)
    np.testing.assert_array_equal(trajectory.step_applied, expected)
    # Sampled at the frames: the command of three frames before (0.3 s >= 0.25 s ago).
    np.testing.assert_array_equal(trajectory.applied[3:], trajectory.command[:-3])
    assert np.all(trajectory.applied[:3] == 0.0)
    assert run_metrics(trajectory)["latency_ms"] == pytest.approx(250.0)


class Windowed:
    """No command for the first ``window`` frames after each reset, then ``value``: a model whose
    window fills."""

    name = "windowed"
    uses_images = False

    def __init__(self, window: int, value: float = 0.0) -> None:
        self.window, self.value, self.seen = window, value, 0

    def reset(self) -> None:
        self.seen = 0

    def steer(self, frame: Frame) -> float | None:
        self.seen += 1
        return None if self.seen <= self.window else self.value


def test_the_safety_driver_steers_while_the_window_fills_and_is_not_scored() -> None:
    """On a left arc a policy that fills a 16-frame window and then goes straight: the expert holds
    the lane for the 16 frames after the start and after each reset, then the car leaves the lane
    where geometry says (as in the straight test). Only the straight frames are scored."""
    radius, width, window = 50.0, 3.5, 16
    road = arc_road(radius, width)
    trajectory = drive_closed_loop(
        road, Windowed(window), speed=SPEED, distance=150.0, latency=0.0, takeover=ExpertPolicy(road, SPEED)
    )
    crossing = math.sqrt((radius + width) ** 2 - (radius + width / 2) ** 2)  # 13.57 m
    handover = window * SPEED / 10  # metres the safety driver steers
    times = [0.0] + [i.time for i in trajectory.interventions]
    assert len(trajectory.interventions) == int(150.0 // (handover + crossing))
    # After a reset the rest of its frame (< 0.9 m) still runs the held command; the window starts
    # with the next frame.
    intervals = np.diff(times) * SPEED
    assert intervals[0] == pytest.approx(handover + crossing, abs=0.3)
    expected = handover + crossing
    assert np.all((intervals > expected - 0.3) & (intervals < expected + SPEED / 10 + 0.3))
    engaged = trajectory.engaged
    assert not engaged[:window].any() and engaged[window]
    assert np.all(np.abs(trajectory.offset[~engaged]) < 0.3)  # the expert's frames are not scored
    metrics = run_metrics(trajectory)
    assert metrics["frames"] == engaged.sum()
    assert metrics["autonomy"] == pytest.approx(engaged.mean())
    assert metrics["engaged_km"] == pytest.approx(metrics["distance_km"] * engaged.mean())
    assert metrics["mean_abs_offset_m"] == pytest.approx(np.abs(trajectory.offset[engaged]).mean())
    assert metrics["interventions_per_km"] == pytest.approx(len(times[1:]) / metrics["engaged_km"])
    # The path (what the plot draws) says who steered each step: as many metres for the safety driver
    # as its frames cover (within the rest of a frame at each reset).
    assert trajectory.path_engaged.shape == trajectory.path_s.shape
    driven = np.diff(trajectory.path_s, prepend=0.0)
    manual_metres = np.nansum(np.where(trajectory.path_engaged, 0.0, driven))
    frame_metres = SPEED / 10
    assert abs(manual_metres - (~engaged).sum() * frame_metres) <= len(times) * frame_metres
    # Without the safety driver the held command (0) drives off the lane before the window is full.
    held = drive_closed_loop(road, Windowed(window), speed=SPEED, distance=150.0, latency=0.0)
    assert not held.engaged.any() and run_metrics(held)["engaged_km"] == 0.0


def test_a_non_finite_command_stops_the_run() -> None:
    with pytest.raises(ValueError, match="returned steering nan at frame 0"):
        drive_closed_loop(straight_road(), Scripted(lambda k: math.nan), speed=SPEED, distance=1.0)


def test_measured_latency_delays_each_command_by_the_policy_call_time() -> None:
    trajectory = drive_closed_loop(
        straight_road(), Scripted(lambda k: 0.01 * (k + 1), sleep=0.03), speed=SPEED, distance=0.9
    )
    assert np.all(trajectory.latency >= 0.03)
    delays = np.round(trajectory.latency / 0.01).astype(int)  # in integration steps
    for k, delay in enumerate(delays):
        step = 10 * k + delay
        if step < len(trajectory.step_applied):
            assert trajectory.step_applied[step] == pytest.approx(0.01 * (k + 1))
            assert trajectory.step_applied[step - 1] != pytest.approx(0.01 * (k + 1))


def test_latency_makes_the_expert_oscillate_and_leave_the_lane() -> None:
    road = random_road(np.random.default_rng(CLOSED_LOOP_SEED), length=310.0)
    prompt, late = (
        run_metrics(
            drive_closed_loop(road, ExpertPolicy(road, SPEED), speed=SPEED, distance=150.0, latency=t)
        )
        for t in (0.0, 0.7)
    )
    assert late["rms_offset_m"] > 5 * prompt["rms_offset_m"]
    assert late["whiteness_deg_s"] > 3 * prompt["whiteness_deg_s"]
    assert prompt["interventions"] == 0 < late["interventions"]


def test_cars_ahead_in_the_ego_lane_never_get_caught_up_with() -> None:
    from mtl_perception.data.labels import CLASS_ID
    from mtl_perception.sim.world import Mover, World

    road = straight_road()
    car, person = CLASS_ID["car"], CLASS_ID["person"]
    world = World(client=0, road=road, body_class={1: car, 2: car, 3: person, 4: car})
    world.movers = [
        Mover(1, 20.0, -road.lane_width / 2, 6.0, 0.0),  # slow car ahead in the ego lane
        Mover(2, 30.0, road.lane_width / 2, -8.0, 0.0),  # oncoming
        Mover(3, 10.0, -road.lane_width - 3.0, 1.2, 0.0),  # pedestrian on the right sidewalk
        Mover(4, 40.0, -road.lane_width / 2, 15.0, 0.0),  # faster than the ego already
    ]
    keep_lane_clear(world, speed=10.0)
    assert [m.speed_along for m in world.movers] == [pytest.approx(11.0), -8.0, 1.2, 15.0]


def _hand_made() -> Trajectory:
    return Trajectory(
        rate_hz=10.0,
        lane_width=3.5,
        distance=500.0,
        offset=np.array([0.0, 0.5, -1.5, 1.0]),
        command=np.array([0.0, math.nan, 0.1, -0.1]),
        applied=np.array([0.0, 0.1, 0.1, -0.1]),
        latency=np.array([0.1, math.nan, 0.3, 0.2]),
        engaged=np.ones(4, bool),
        interventions=[Intervention(0.1, 1.0, np.zeros(2), -1.8), Intervention(0.2, 2.0, np.zeros(2), 1.8)],
    )


def test_metrics_of_a_hand_made_trajectory() -> None:
    metrics = run_metrics(_hand_made())
    assert metrics["distance_km"] == 0.5
    assert metrics["mean_abs_offset_m"] == pytest.approx(0.75)  # (0 + 0.5 + 1.5 + 1) / 4
    assert metrics["rms_offset_m"] == pytest.approx(math.sqrt(3.5 / 4))
    assert metrics["max_abs_offset_m"] == 1.5
    assert metrics["share_frames_over_1m"] == 0.25  # 1.0 m is not over 1 m
    assert metrics["interventions"] == 2
    assert metrics["interventions_per_km"] == 4.0
    assert metrics["km_per_intervention"] == 0.25
    # Applied-command rates 1, 0, -2 rad/s: RMS sqrt(5/3) rad/s.
    assert metrics["whiteness_deg_s"] == pytest.approx(math.degrees(math.sqrt(5 / 3)))
    assert metrics["latency_ms"] == pytest.approx(200.0)  # over the three frames with a command


def test_metrics_leave_the_safety_drivers_frames_out() -> None:
    trajectory = _hand_made()
    trajectory.engaged = np.array([False, True, True, True])
    metrics = run_metrics(trajectory)
    assert metrics["distance_km"] == 0.5 and metrics["engaged_km"] == 0.375 and metrics["autonomy"] == 0.75
    assert metrics["frames"] == 3
    assert metrics["mean_abs_offset_m"] == pytest.approx(1.0)  # (0.5 + 1.5 + 1) / 3
    assert metrics["interventions_per_km"] == pytest.approx(2 / 0.375)
    # Rates between engaged neighbours only: 0 and -2 rad/s.
    assert metrics["whiteness_deg_s"] == pytest.approx(math.degrees(math.sqrt(2)))


def test_aggregate_pools_frames_and_sums_distance() -> None:
    one = run_metrics(_hand_made())
    clean = _hand_made()
    clean.offset, clean.applied, clean.interventions = np.zeros(4), np.zeros(4), []
    two = run_metrics(clean)
    pooled = aggregate_metrics([one, two])
    assert pooled["distance_km"] == 1.0
    assert pooled["interventions_per_km"] == 2.0
    assert pooled["km_per_intervention"] == 0.5
    assert pooled["mean_abs_offset_m"] == pytest.approx(3.0 / 8)
    assert pooled["rms_offset_m"] == pytest.approx(math.sqrt(3.5 / 8))
    assert pooled["max_abs_offset_m"] == 1.5
    assert pooled["share_frames_over_1m"] == pytest.approx(1 / 8)
    assert pooled["whiteness_deg_s"] == pytest.approx(math.degrees(math.sqrt(5 / 6)))
    assert aggregate_metrics([two])["km_per_intervention"] is None


@pytest.fixture(scope="module")
def tiny_mono_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny mono ONNX model with its steering graph beside it."""
    torch.manual_seed(0)
    config = tiny_mono_config()
    model = build_model(config)
    path = tmp_path_factory.mktemp("mono_model") / "mono.onnx"
    export_deploy_model(DeployModel(model), config, path, simplify=False, parity_frames=1)
    export_steering_head(SteeringHead.for_model(model, window=3), steering_path_for(path))
    return path


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_model_policy_waits_for_its_window_then_steers(
    mode: str, tiny_model: Path, tiny_mono_model: Path
) -> None:
    """Stereo models get both rendered views, mono ones the left view only (the pipeline refuses a
    pair for a mono model)."""
    model = tiny_model if mode == "stereo" else tiny_mono_model
    window = read_model_info(steering_path_for(model)).window
    height, width = read_model_info(model).input_size
    rng = np.random.default_rng(0)
    pose = EgoPose(xy=np.zeros(2), yaw=0.0, s=0.0, offset=0.0)
    with model_policy(model, "onnxruntime") as policy:
        for _ in range(2):  # a reset (an intervention) restarts the window
            policy.reset()
            for k in range(window + 2):
                views = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
                frame = Frame(k, k / 10, views[0], views[1], None, pose)
                command = policy.steer(frame)
                assert (command is None) == (k < window - 1)
                assert command is None or math.isfinite(command)


def test_drive_command_writes_runs_plots_and_resumes(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "drive"
    argv = ["drive", "--model", str(tiny_model), "--runs", "1", "--distance", "8"]
    argv += ["--width", "128", "--height", "64", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "drive.json").read_text())
    assert list(summary) == ["model", "straight", "expert"]
    for name, entry in summary.items():
        (run,) = entry["runs"]
        assert run["settings"]["policy"] == name and run["settings"]["seed"] == CLOSED_LOOP_SEED
        assert (out / name / run["plot"]).stat().st_size > 0
        assert entry["aggregate"]["distance_km"] == pytest.approx(0.008, abs=0.0015)
    model_run = summary["model"]["runs"][0]["metrics"]
    # The first window - 1 frames had no command: the safety driver steered them, unscored.
    assert model_run["autonomy"] < 1 and model_run["commands"] == model_run["frames"]
    assert model_run["render_s"] > 0 and model_run["latency_ms"] > 0
    assert "| expert | 1 |" in capsys.readouterr().out
    assert main(argv) == 0  # everything reused
    assert "reusing 3 finished run(s)" in capsys.readouterr().out
    lonely = tmp_path / "lonely.onnx"
    shutil.copyfile(tiny_model, lonely)
    assert main(["drive", "--model", str(lonely), "--out", str(tmp_path / "x")]) == 2
    assert "no steering graph" in capsys.readouterr().err
