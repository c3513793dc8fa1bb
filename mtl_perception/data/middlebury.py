"""Loader of the Middlebury stereo layout (2014 / 2021 scenes, MiddEval3): one folder per scene.

A scene folder holds ``im0.png`` (left, the reference view), ``im1.png`` (right), ``disp0.pfm``
(or MiddEval3's ``disp0GT.pfm``: float disparity of im0 in pixels, ``inf`` = unknown) and
``calib.txt`` (``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``doffs=``, ``baseline=`` in mm, ...). A split is
a folder of scene folders: a subfolder of the root, or the root itself (split ``"."``).

Middlebury's two cameras have different principal points (``doffs`` = cx1 - cx0), so depth is
``baseline * f / (d + doffs)``, not the ``fx * B / d`` the sample's ``fx``/``baseline`` give:
``depth`` is the true metric depth; ``disparity`` is what a matcher sees between im0 and im1.
There are no semantic labels (``has_semantic`` False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.data.base import FrameRecord, StereoCalibration, StereoDataset
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.sample import StereoArrays
from mtl_perception.errors import UserError

LEFT = "im0.png"
RIGHT = "im1.png"
CALIBRATION = "calib.txt"
# scenes2014 / 2021 name the left ground truth disp0.pfm, MiddEval3 disp0GT.pfm.
DISPARITY_NAMES = ("disp0.pfm", "disp0GT.pfm")
ROOT_SPLIT = "."
REQUIRED_KEYS = ("cam0", "doffs", "baseline")
MM_PER_M = 1000.0


@dataclass(frozen=True)
class MiddleburyCalibration(StereoCalibration):
    """A scene's calib.txt: ``fx`` (px) and ``baseline`` (m) as every layout has them, plus
    Middlebury's principal-point offset ``doffs`` (px) and the image size it was written for."""

    doffs: float = 0.0
    width: int | None = None
    height: int | None = None
    ndisp: int | None = None


def _matrix(path: Path, key: str, text: str) -> np.ndarray:
    """``[a b c; d e f; g h i]`` as a 3x3 array."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise UserError(f"{path}: {key} must be a matrix like [f 0 cx; 0 f cy; 0 0 1], got {text!r}")
    rows = [row.split() for row in body[1:-1].split(";")]
    try:
        matrix = np.array(rows, dtype=np.float64)
    except ValueError as exc:  # ragged rows or non-numbers
        raise UserError(f"{path}: {key} is not a 3x3 matrix of numbers: {text!r}") from exc
    if matrix.shape != (3, 3):
        raise UserError(f"{path}: {key} is not a 3x3 matrix of numbers: {text!r}")
    return matrix


def _number(path: Path, values: dict[str, str], key: str, kind: type[float] | type[int]) -> float | None:
    """``values[key]`` as a number (int keys parse as int), None when the key is absent."""
    if key not in values:
        return None
    try:
        return kind(values[key])
    except ValueError as exc:
        raise UserError(f"{path}: {key}={values[key]!r} is not a {kind.__name__}") from exc


def read_calib_txt(path: Path) -> MiddleburyCalibration:
    """Parse a Middlebury calib.txt (``key=value`` lines; keys such as vmin or isint are skipped)."""
    if not path.is_file():
        raise UserError(f"{path}: calibration not found; every Middlebury scene folder has a calib.txt")
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UserError(f"{path}:{number}: expected key=value, got {line!r}")
        values[key.strip()] = value.strip()
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        raise UserError(
            f"{path}: missing {', '.join(missing)} (a Middlebury calib.txt has cam0, doffs and baseline)"
        )
    cam0 = _matrix(path, "cam0", values["cam0"])
    if "cam1" in values:
        _matrix(path, "cam1", values["cam1"])  # checked so that a damaged file is not half trusted
    fx = float(cam0[0, 0])
    baseline_mm = _number(path, values, "baseline", float)
    doffs = _number(path, values, "doffs", float)
    assert baseline_mm is not None and doffs is not None  # required above
    if not (fx > 0 and baseline_mm > 0):
        raise UserError(f"{path}: focal length {fx} and baseline {baseline_mm} mm must be positive")
    sizes = {key: _number(path, values, key, int) for key in ("width", "height", "ndisp")}
    return MiddleburyCalibration(
        fx=fx,
        baseline=baseline_mm / MM_PER_M,
        doffs=doffs,
        **{key: None if v is None else int(v) for key, v in sizes.items()},
    )


def read_pfm(path: Path) -> np.ndarray:
    """A single-channel PFM as HxW float32, top row first (OpenCV undoes PFM's bottom-up rows)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; the dataset is incomplete, re-extract it")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot be decoded as a PFM image; the file is corrupt, replace it")
    if image.ndim != 2 or image.dtype != np.float32:
        raise UserError(
            f"{path}: expected a single-channel float PFM (Pf), got {image.dtype} with shape {image.shape}"
        )
    return image


def middlebury_depth(disparity: np.ndarray, calib: MiddleburyCalibration) -> np.ndarray:
    """Metric depth baseline * f / (d + doffs) where the disparity is known (> 0), 0 elsewhere."""
    depth = np.zeros_like(disparity, dtype=np.float32)
    valid = disparity > 0
    depth[valid] = calib.baseline * calib.fx / (disparity[valid] + calib.doffs)
    return depth


def _holds_scenes(folder: Path) -> bool:
    return any((scene / LEFT).is_file() for scene in folder.iterdir() if scene.is_dir())


class MiddleburyDataset(StereoDataset):
    """A folder of Middlebury scene folders; each scene is one frame (sequence = scene name)."""

    label_lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # no semantic ground truth

    @classmethod
    def available_splits(cls, root: Path) -> list[str]:
        splits = [p.name for p in sorted(root.iterdir()) if p.is_dir() and _holds_scenes(p)]
        return [ROOT_SPLIT, *splits] if _holds_scenes(root) else splits

    def index_frames(self, split: str) -> list[FrameRecord]:
        records = []
        for left in sorted((self.root / split).glob(f"*/{LEFT}")):
            scene = left.parent
            disparity = next((scene / n for n in DISPARITY_NAMES if (scene / n).is_file()), None)
            records.append(
                FrameRecord(
                    sequence=scene.name,
                    frame=0,
                    left=left,
                    right=scene / RIGHT,
                    calibration=scene / CALIBRATION,
                    disparity=disparity,
                )
            )
        return records

    def read_calibration(self, path: Path) -> MiddleburyCalibration:
        return read_calib_txt(path)

    def read_disparity(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        raw = read_pfm(path)
        # inf marks unknown in Middlebury files; NaN and <= 0 are unknown too. No "far" label.
        valid = np.isfinite(raw) & (raw > 0)
        return np.where(valid, raw, 0.0).astype(np.float32), valid

    def read_depth(
        self, record: FrameRecord, disparity: np.ndarray, valid: np.ndarray, calib: StereoCalibration
    ) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(calib, MiddleburyCalibration)
        return middlebury_depth(disparity, calib), valid

    def load_arrays(self, index: int) -> StereoArrays:
        arrays = super().load_arrays(index)
        calib = self.calibration(self.records[index])
        assert isinstance(calib, MiddleburyCalibration)
        # calib.txt of another resolution (full vs half size) would give a wrong focal length.
        written = (calib.height, calib.width)
        if None not in written and written != arrays.size:
            raise UserError(
                f"{self.records[index].calibration}: written for {written[0]}x{written[1]} images, "
                f"but {self.records[index].left} is {arrays.size[0]}x{arrays.size[1]}; "
                "use the calib.txt of this resolution"
            )
        return arrays.replace(doffs=calib.doffs)
