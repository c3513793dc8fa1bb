"""Closed-loop drives recorded as driving sequences labelled by the lane keeper (DAgger data).

A steering head trained on the data driver's frames only sees, in closed loop, states that its own
errors lead to and that no training frame showed (the distribution shift DAgger, Ross et al. 2011,
corrects). `mtl-perception drive --record DIR` writes every frame the model's own driving reaches,
labelled with the expert's command at that pose (pure pursuit toward the lane centre, the
``expert`` labels of the training data), as driving sequences in the synthetic layout: left and
right PNGs, steering.csv, calib.json, no per-pixel labels. Each stretch between resets (the run's
start, an intervention) is one sequence, so every 16-frame window is a consecutive drive.
``steering.data.recorded`` adds such roots to a head's training data.

The manifest marks the sequences ``"steering_labels": "expert"`` (steering.csv holds the expert's
command, not the command that drove) and records which model drove them. It is rewritten, atomically,
after each finished run, so an interrupted ``drive --record`` keeps every run recorded so far.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl_perception.data import layout
from mtl_perception.data.labels import class_table
from mtl_perception.errors import UserError
from mtl_perception.sim.generator import (
    manifest_config,
    rig_record,
    write_calibration,
    write_png,
    write_steering_csv,
)

if TYPE_CHECKING:
    from mtl_perception.sim.closed_loop import Frame, Policy
    from mtl_perception.sim.generator import GeneratorConfig
    from mtl_perception.sim.rig import StereoRig

SPLIT = "train"  # recorded drives are training data only
EXPERT_LABELS = "expert"  # the manifest's "steering_labels" of a sequence whose steering.csv is the expert's


class RunRecording:
    """The frames of one run, written as they come into a temporary directory, one sequence per
    stretch between resets; ``DriveRecorder.add_run`` moves them into the dataset."""

    def __init__(self, directory: Path, seed: int, rig: StereoRig, rate_hz: float) -> None:
        self.directory, self.seed, self.rig, self.rate_hz = directory, seed, rig, rate_hz
        self.sequences: list[tuple[str, int]] = []  # (name, frames), finished or open
        self.rows: list[tuple[int, int, str]] = []

    def new_sequence(self) -> None:
        """End the current stretch (if it has frames); the next frame starts a new sequence."""
        self._close()
        self.rows = []

    def add(self, frame: Frame, label: float) -> None:
        """One frame (its rendered views) and the expert's command at its pose."""
        if frame.left is None or frame.right is None:
            raise ValueError("a recorded frame needs both rendered views")
        if not self.rows:  # the first frame of a stretch opens its sequence
            self.sequences.append((f"drive_{self.seed}_{len(self.sequences):02d}", 0))
            for kind in (layout.LEFT_DIR, layout.RIGHT_DIR):
                (self.directory / self.sequences[-1][0] / kind).mkdir(parents=True)
        name = self.sequences[-1][0]
        index = len(self.rows)
        stem = f"{layout.frame_stem(index)}.png"
        for kind, image in ((layout.LEFT_DIR, frame.left), (layout.RIGHT_DIR, frame.right)):
            write_png(self.directory / name / kind / stem, image)
        self.rows.append((index, layout.frame_stamp_ns(index, self.rate_hz), f"{label:.6f}"))

    def _close(self) -> None:
        if not self.rows:
            return
        name = self.sequences[-1][0]
        write_steering_csv(self.directory / name / layout.STEERING_NAME, self.rows)
        write_calibration(self.directory / name / layout.CALIB_NAME, self.rig, self.rate_hz)
        self.sequences[-1] = (name, len(self.rows))

    def finish(self) -> list[tuple[str, int]]:
        self._close()
        self.rows = []
        return self.sequences


class RecordingPolicy:
    """``policy`` driving as usual, with each frame and ``expert``'s command at it recorded;
    a reset (run start, intervention) starts a new sequence."""

    uses_images = True

    def __init__(self, policy: Policy, expert: Policy, recording: RunRecording) -> None:
        self.policy, self.expert, self.recording = policy, expert, recording
        self.name = policy.name

    def reset(self) -> None:
        self.recording.new_sequence()
        self.policy.reset()

    def steer(self, frame: Frame) -> float | None:
        label = self.expert.steer(frame)
        if label is None:
            raise ValueError(f"the expert {self.expert.name!r} gave no command to record")
        self.recording.add(frame, label)
        return self.policy.steer(frame)


class DriveRecorder:
    """A dataset root of recorded drives (see the module docstring); ``source`` describes what
    drove (model and steering graph digests, latency) and must stay the same for the whole root."""

    def __init__(self, root: Path, config: GeneratorConfig, source: dict[str, Any]) -> None:
        self.root, self.config, self.source = Path(root), config, source
        self.manifest = self._load()
        for stale in self.root.glob(".tmp-*"):  # runs interrupted before they finished
            shutil.rmtree(stale, ignore_errors=True)

    def _load(self) -> dict[str, Any]:
        path = layout.manifest_path(self.root)
        if not path.is_file():
            if self.root.is_dir() and any(self.root.iterdir()):
                raise UserError(f"{self.root}: not empty and holds no recording; record into a new directory")
            return {
                "format": layout.FORMAT,
                "version": layout.VERSION,
                "classes": class_table(),
                "config": manifest_config(self.config),
                "recording": self.source,
                "splits": {split: [] for split in layout.SPLITS},
                "sequences": {},
            }
        manifest = json.loads(path.read_text())
        if manifest.get("recording") != self.source or manifest.get("config") != manifest_config(self.config):
            raise UserError(
                f"{self.root}: recorded with another model, latency or image size "
                f"({manifest.get('recording')}); record into a new directory"
            )
        return manifest

    def has_run(self, seed: int) -> bool:
        return any(info["seed"] == seed for info in self.manifest["sequences"].values())

    def start_run(self, seed: int, rig: StereoRig) -> RunRecording:
        if self.has_run(seed):
            raise UserError(f"{self.root}: seed {seed} is recorded already")
        self.root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix=f".tmp-{seed}-", dir=self.root))
        return RunRecording(directory, seed, rig, self.config.rate_hz)

    def add_run(self, recording: RunRecording) -> list[str]:
        """Move a finished run's sequences into the dataset and rewrite the manifest; their names."""
        names = []
        for name, frames in recording.finish():
            target = layout.sequence_dir(self.root, SPLIT, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # left by a run interrupted between its moves and the manifest
                shutil.rmtree(target)
            (recording.directory / name).rename(target)
            self.manifest["splits"][SPLIT].append(name)
            self.manifest["sequences"][name] = {
                "split": SPLIT,
                "seed": recording.seed,
                "frames": frames,
                "rig": rig_record(recording.rig),
                "steering_labels": EXPERT_LABELS,
            }
            names.append(name)
        shutil.rmtree(recording.directory, ignore_errors=True)
        path = layout.manifest_path(self.root)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2) + "\n")
        tmp.replace(path)
        return names

    def discard(self, recording: RunRecording) -> None:
        shutil.rmtree(recording.directory, ignore_errors=True)
