"""Loader of the synthetic layout written by `mtl-perception generate` (see mtl_perception.data.layout)."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.data import layout
from mtl_perception.data.base import FrameRecord, StereoCalibration, StereoDataset
from mtl_perception.data.image_io import check_size, read_uint16
from mtl_perception.data.labels import CLASS_NAMES, IGNORE_INDEX
from mtl_perception.errors import UserError


def read_manifest(root: Path) -> dict[str, Any]:
    """The dataset's manifest, checked for format, version and class table."""
    path = layout.manifest_path(root)
    if not path.is_file():
        raise UserError(
            f"{path}: not found; {root} is not a synthetic dataset (run `mtl-perception generate`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); regenerate the dataset") from exc
    if manifest.get("format") != layout.FORMAT or manifest.get("version") != layout.VERSION:
        raise UserError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r} is not "
            f"{layout.FORMAT!r} version {layout.VERSION}; regenerate the dataset"
        )
    # The class list may be plain names or the label module's class_table() entries.
    names = tuple(c["name"] if isinstance(c, dict) else c for c in manifest.get("classes", []))
    if names != CLASS_NAMES:
        raise UserError(
            f"{path}: classes {list(names)} differ from this package's table {list(CLASS_NAMES)}; "
            "regenerate the dataset with this version"
        )
    return manifest


def read_steering(path: Path) -> dict[int, float]:
    """frame -> steering angle (rad, +left) from a sequence's steering.csv."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; the dataset is incomplete, regenerate it")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != layout.STEERING_HEADER:
            raise UserError(f"{path}: header {reader.fieldnames} is not {','.join(layout.STEERING_HEADER)}")
        try:
            return {int(row["frame"]): float(row["steering_rad"]) for row in reader}
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: malformed row ({exc}); regenerate the dataset") from exc


class SyntheticDataset(StereoDataset):
    """A split of a synthetic dataset root; semantic PNGs already hold class-table ids."""

    # Ids beyond the table can only come from a broken generator: map them to ignore, never train on them.
    label_lookup = np.array([i if i < len(CLASS_NAMES) else IGNORE_INDEX for i in range(256)], dtype=np.uint8)

    @classmethod
    def available_splits(cls, root: Path) -> list[str]:
        # The generator lists every split, also those it rendered no sequence for.
        return [split for split, sequences in read_manifest(root)["splits"].items() if sequences]

    def index_frames(self, split: str) -> list[FrameRecord]:
        manifest = read_manifest(self.root)
        frame_file = functools.partial(layout.frame_path, self.root, split)
        records = []
        for sequence in manifest["splits"][split]:
            info = manifest["sequences"].get(sequence)
            if info is None:
                raise UserError(f"{layout.manifest_path(self.root)}: sequence {sequence!r} has no entry")
            steering = read_steering(layout.steering_path(self.root, split, sequence))
            for frame in range(int(info["frames"])):
                records.append(
                    FrameRecord(
                        sequence=sequence,
                        frame=frame,
                        left=frame_file(sequence, layout.LEFT_DIR, frame),
                        right=frame_file(sequence, layout.RIGHT_DIR, frame),
                        calibration=layout.calib_path(self.root, split, sequence),
                        semantic=frame_file(sequence, layout.SEMANTIC_DIR, frame),
                        disparity=frame_file(sequence, layout.DISPARITY_DIR, frame),
                        depth=frame_file(sequence, layout.DEPTH_DIR, frame),
                        steering=steering.get(frame, math.nan),
                    )
                )
        return records

    def read_calibration(self, path: Path) -> StereoCalibration:
        if not path.is_file():
            raise UserError(f"{path}: file not found; the dataset is incomplete, regenerate it")
        try:
            calib = json.loads(path.read_text())
            return StereoCalibration(fx=float(calib["fx"]), baseline=float(calib["baseline"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: expected JSON with numeric 'fx' and 'baseline' ({exc})") from exc

    def decode_disparity(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # 0 = unknown, layout.FAR = infinitely far (valid, disparity 0).
        return layout.decode_disparity(raw)

    def read_depth(
        self, record: FrameRecord, disparity: np.ndarray, valid: np.ndarray, calib: StereoCalibration
    ) -> tuple[np.ndarray, np.ndarray]:
        # The generator renders depth directly (exact where disparity rounds to 0 far away);
        # layout.FAR reads back as +inf, 0 as unknown.
        assert record.depth is not None
        depth, depth_valid = layout.decode_depth(read_uint16(record.depth))
        check_size(record.depth, depth, disparity.shape)
        return depth, depth_valid
