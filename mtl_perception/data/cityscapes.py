"""Loader of the Cityscapes layout (leftImg8bit, rightImg8bit, disparity, gtFine, camera)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtl_perception.data.base import FrameRecord, StereoCalibration, StereoDataset
from mtl_perception.data.labels import CITYSCAPES_ID_TO_NAME, lookup_table
from mtl_perception.errors import UserError

LEFT_SUFFIX = "_leftImg8bit.png"


class CityscapesDataset(StereoDataset):
    """A split (train, val, test, train_extra, ...) of a Cityscapes root.

    Frames without a ``gtFine`` label map (train_extra) have ``has_semantic`` False; frames
    without a disparity map have ``has_depth`` False.
    """

    label_lookup = lookup_table(CITYSCAPES_ID_TO_NAME)

    @classmethod
    def available_splits(cls, root: Path) -> list[str]:
        left_dir = root / "leftImg8bit"
        if not left_dir.is_dir():
            raise UserError(f"{left_dir}: not found; {root} is not a Cityscapes root")
        return sorted(p.name for p in left_dir.iterdir() if p.is_dir())

    def index_frames(self, split: str) -> list[FrameRecord]:
        records = []
        for left in sorted((self.root / "leftImg8bit" / split).glob(f"*/*{LEFT_SUFFIX}")):
            city_dir = Path(split) / left.parent.name
            base = left.name.removesuffix(LEFT_SUFFIX)  # <city>_<sequence>_<frame>
            city_and_sequence, frame = base.rsplit("_", 1)
            semantic = self.root / "gtFine" / city_dir / f"{base}_gtFine_labelIds.png"
            disparity = self.root / "disparity" / city_dir / f"{base}_disparity.png"
            records.append(
                FrameRecord(
                    sequence=city_and_sequence,
                    frame=int(frame),
                    left=left,
                    right=self.root / "rightImg8bit" / city_dir / f"{base}_rightImg8bit.png",
                    calibration=self.root / "camera" / city_dir / f"{base}_camera.json",
                    semantic=semantic if semantic.is_file() else None,
                    disparity=disparity if disparity.is_file() else None,
                )
            )
        return records

    def read_calibration(self, path: Path) -> StereoCalibration:
        if not path.is_file():
            raise UserError(f"{path}: camera file not found; extract camera_trainvaltest.zip into the root")
        try:
            camera = json.loads(path.read_text())
            return StereoCalibration(
                fx=float(camera["intrinsic"]["fx"]), baseline=float(camera["extrinsic"]["baseline"])
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: expected intrinsic.fx and extrinsic.baseline ({exc})") from exc

    def decode_disparity(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Cityscapes stores d = (p - 1) / 256 for p > 0; p = 0 marks invalid pixels. p = 1 is a
        # measured disparity of 0, i.e. infinitely far: valid, and depth +inf (base.read_depth).
        disparity = (raw.astype(np.float32) - 1.0) / 256.0
        valid = raw > 0
        disparity[~valid] = 0.0
        return disparity, valid
