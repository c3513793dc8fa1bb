"""Recorded closed-loop drives (DAgger data): the frames the policy reached, the expert's command at
each, one sequence per stretch between resets; and the steering head trains on them, never
validating on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_networks import tiny_stereo_config
from fixtures_replay import tiny_model
from test_closed_loop import SPEED, arc_road

from mtl_perception.cli import main
from mtl_perception.data import layout
from mtl_perception.data.image_io import read_rgb
from mtl_perception.data.synthetic import read_steering
from mtl_perception.errors import UserError
from mtl_perception.networks import build_model, save_checkpoint
from mtl_perception.sim.closed_loop import CLOSED_LOOP_SEED, ExpertPolicy, StraightPolicy, drive_closed_loop
from mtl_perception.sim.generator import GeneratorConfig
from mtl_perception.sim.recording import DriveRecorder, RecordingPolicy
from mtl_perception.training.steering_data import sequence_records

__all__ = ["tiny_model"]  # session fixture used by name

CONFIG = GeneratorConfig(width=32, height=16)
SOURCE = {"model_sha256": "m", "steering_sha256": "s", "latency_ms": 100.0}


def index_renderer(frame: int, xy: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Views whose pixels name the frame (left) and the frame + 1 (right), so files can be traced."""
    left = np.full((CONFIG.height, CONFIG.width, 3), frame % 256, np.uint8)
    return left, np.full_like(left, (frame + 1) % 256)


class Straight(StraightPolicy):
    uses_images = True  # so the loop renders (and the recorder gets) every frame


def record_straight_drive(root: Path, seed: int) -> tuple[list[str], object, list[float]]:
    """Steer straight through a left arc (it leaves the lane every 13.6 m) while recording; the
    expert's command at each frame's pose, as the recording must hold it, is computed alongside."""
    road = arc_road(50.0)
    labels: list[float] = []

    class Witness(ExpertPolicy):
        def steer(self, frame):  # the expert the recorder asks, noting its answers
            labels.append(super().steer(frame))
            return labels[-1]

    recorder = DriveRecorder(root, CONFIG, SOURCE)
    recording = recorder.start_run(seed, CONFIG.rig())
    policy = RecordingPolicy(Straight(), Witness(road, SPEED), recording)
    trajectory = drive_closed_loop(road, policy, speed=SPEED, distance=50.0, render=index_renderer)
    names = recorder.add_run(recording)
    return names, trajectory, labels


def test_a_recorded_drive_is_one_sequence_per_stretch_between_interventions(tmp_path: Path) -> None:
    root = tmp_path / "recorded"
    names, trajectory, labels = record_straight_drive(root, CLOSED_LOOP_SEED)
    assert len(trajectory.interventions) == 3
    assert len(names) == len(trajectory.interventions) + 1
    records = sequence_records(root, "train")  # the dataset reader accepts the recording as it is
    assert list(records) == names
    assert sum(len(r) for r in records.values()) == len(trajectory.offset) == len(labels)
    # Frame by frame, in drive order: the rendered views and the expert's command at that pose.
    frame = 0
    for name in names:
        stored = read_steering(layout.steering_path(root, "train", name))
        for record in records[name]:
            assert read_rgb(record.left)[0, 0, 0] == frame and read_rgb(record.right)[0, 0, 0] == frame + 1
            assert stored[record.frame] == pytest.approx(labels[frame], abs=1e-6)
            frame += 1
    # Each stretch starts where a reset put the car: on the lane centre, where the expert steers
    # only for the arc's curvature (left), and ends as the car leaves the lane to the right.
    starts = np.cumsum([0] + [len(records[n]) for n in names[:-1]])
    assert np.all(np.abs(trajectory.offset[starts]) < 0.05)
    manifest = json.loads(layout.manifest_path(root).read_text())
    assert manifest["recording"] == SOURCE
    assert {manifest["sequences"][n]["steering_labels"] for n in names} == {"expert"}


def test_a_recording_refuses_a_seed_twice_another_source_and_a_foreign_directory(tmp_path: Path) -> None:
    root = tmp_path / "recorded"
    record_straight_drive(root, 7)
    again = DriveRecorder(root, CONFIG, SOURCE)
    assert again.has_run(7) and not again.has_run(8)
    with pytest.raises(UserError, match="recorded already"):
        again.start_run(7, CONFIG.rig())
    with pytest.raises(UserError, match="another model"):
        DriveRecorder(root, CONFIG, SOURCE | {"latency_ms": 50.0})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(UserError, match="holds no recording"):
        DriveRecorder(foreign, CONFIG, SOURCE)
    # A run interrupted mid-drive leaves nothing behind once the recorder opens the root again.
    recording = again.start_run(8, CONFIG.rig())
    assert recording.directory.is_dir()
    DriveRecorder(root, CONFIG, SOURCE)
    assert not recording.directory.exists()


def test_drive_record_writes_the_models_drive_and_resumes_without_duplicates(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "dagger"
    argv = ["drive", "--model", str(tiny_model), "--policy", "model", "--runs", "1", "--distance", "8"]
    argv += ["--width", "128", "--height", "64", "--latency-ms", "100", "--out", str(tmp_path / "d")]
    assert main([*argv, "--record", str(record)]) == 0
    run = json.loads((tmp_path / "d" / "model" / f"seed_{CLOSED_LOOP_SEED}.json").read_text())
    manifest = json.loads(layout.manifest_path(record).read_text())
    frames = sum(info["frames"] for info in manifest["sequences"].values())
    assert frames == run["metrics"]["frames"] / run["metrics"]["autonomy"]  # every frame, engaged or not
    assert {info["seed"] for info in manifest["sequences"].values()} == {CLOSED_LOOP_SEED}
    # Asked again, the run is reused and nothing is recorded twice.
    assert main([*argv, "--record", str(record)]) == 0
    assert "reusing 1 finished run(s)" in capsys.readouterr().out
    assert json.loads(layout.manifest_path(record).read_text()) == manifest
    # A run finished before --record was given is driven again, to be recorded.
    other = tmp_path / "dagger2"
    assert main([*argv, "--record", str(other)]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert json.loads(layout.manifest_path(other).read_text())["splits"]["train"]
    assert main(["drive", "--policy", "straight", "--out", str(tmp_path / "s"), "--record", str(other)]) == 2
    assert "--policy model" in capsys.readouterr().err


def test_steering_training_adds_recorded_drives_to_training_only(tmp_path: Path) -> None:
    """Recorded sequences join every fold's training part and the final head's data; no fold
    validates on them; "driven" labels are refused (a recording holds only the expert's)."""
    from test_steering_training import driving_data_config

    from mtl_perception.sim.generator import generate_dataset

    data = tmp_path / "data"
    generate_dataset(driving_data_config(), data)
    recorded = tmp_path / "recorded"
    names, _, _ = record_straight_drive(recorded, CLOSED_LOOP_SEED)
    torch.manual_seed(0)
    config = tiny_stereo_config()
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", build_model(config), config)
    steering = {
        "model": str(checkpoint),
        "labels": "expert",
        "folds": 2,
        "output_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"),
        "data": {"root": str(data), "recorded": [str(recorded)]},
        "head": {"window": 4, "width": 8, "queries": 2, "hidden": 8},
        "optim": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
    }
    path = tmp_path / "steering.yaml"
    path.write_text(yaml.safe_dump({"steering": steering}))
    assert main(["train", "--config", str(path)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["scale"]["train_sequences"] == 2
    assert metrics["scale"]["recorded_sequences"] == len(names)
    for fold in (0, 1):
        stored = json.loads((tmp_path / "run" / "folds" / f"fold_{fold}.json").read_text())
        assert stored["val_sequences"] and not set(stored["val_sequences"]) & set(names)
    path.write_text(yaml.safe_dump({"steering": steering | {"labels": "driven"}}))
    assert main(["train", "--config", str(path)]) == 2
