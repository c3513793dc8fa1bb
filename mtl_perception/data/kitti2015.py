"""Loader of the KITTI 2015 stereo layout (image_2/3, disp_occ_0, calibration, optional semantic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_perception.data.base import FrameRecord, StereoCalibration, StereoDataset
from mtl_perception.data.labels import CITYSCAPES_ID_TO_NAME, lookup_table
from mtl_perception.errors import UserError

SPLITS = ("training", "testing")
# Ground truth exists only for the reference frame "_10" of each scene (the "_11" frame is its successor).
REFERENCE_SUFFIX = "_10.png"
# (folder, left key, right key): the scene-flow calibration and the newer object-style calibration.
CALIBRATION_FORMATS = (("calib_cam_to_cam", "P_rect_02", "P_rect_03"), ("calib", "P2", "P3"))


def _read_projections(path: Path) -> dict[str, np.ndarray]:
    """``KEY: 12 numbers`` lines of a KITTI calibration file as 3x4 matrices (other lines skipped)."""
    matrices = {}
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        numbers = values.split()
        if len(numbers) == 12:
            try:
                matrices[key.strip()] = np.array(numbers, dtype=np.float64).reshape(3, 4)
            except ValueError as exc:
                raise UserError(f"{path}: malformed matrix {key.strip()} ({exc})") from exc
    return matrices


class Kitti2015Dataset(StereoDataset):
    """``training`` (disparity ground truth; semantics if a ``semantic/`` folder is present) or
    ``testing`` (images only) of a KITTI 2015 stereo root. Semantic PNGs hold Cityscapes label ids.
    """

    label_lookup = lookup_table(CITYSCAPES_ID_TO_NAME)

    @classmethod
    def available_splits(cls, root: Path) -> list[str]:
        return [s for s in SPLITS if (root / s / "image_2").is_dir()]

    def index_frames(self, split: str) -> list[FrameRecord]:
        split_dir = self.root / split
        records = []
        for left in sorted((split_dir / "image_2").glob(f"*{REFERENCE_SUFFIX}")):
            scene = left.name.removesuffix(REFERENCE_SUFFIX)
            semantic = split_dir / "semantic" / left.name
            disparity = split_dir / "disp_occ_0" / left.name
            calibrations = [split_dir / folder / f"{scene}.txt" for folder, _, _ in CALIBRATION_FORMATS]
            records.append(
                FrameRecord(
                    sequence=scene,
                    frame=10,
                    left=left,
                    right=split_dir / "image_3" / left.name,
                    # The first format present; the first path names the file in a "not found" error.
                    calibration=next((p for p in calibrations if p.is_file()), calibrations[0]),
                    semantic=semantic if semantic.is_file() else None,
                    disparity=disparity if disparity.is_file() else None,
                )
            )
        return records

    def read_calibration(self, path: Path) -> StereoCalibration:
        if not path.is_file():
            raise UserError(
                f"{path}: calibration not found (nor calib/{path.name}); extract data_scene_flow_calib.zip"
            )
        matrices = _read_projections(path)
        for _, left_key, right_key in CALIBRATION_FORMATS:
            if left_key in matrices and right_key in matrices:
                left, right = matrices[left_key], matrices[right_key]
                fx = float(left[0, 0])
                # P[0,3] = -fx * (camera x offset); the difference between the two cameras gives B.
                return StereoCalibration(fx=fx, baseline=float(left[0, 3] - right[0, 3]) / fx)
        raise UserError(f"{path}: has neither P_rect_02/P_rect_03 nor P2/P3 projection matrices")
