"""The part every dataset layout shares: frame index, label decoding, augmentation, tensor samples."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mtl_perception.data.augment import AugmentConfig, augment_stereo, resize_stereo
from mtl_perception.data.image_io import check_size, read_rgb, read_uint8, read_uint16
from mtl_perception.data.sample import StereoArrays, depth_from_disparity, empty_semantic
from mtl_perception.errors import UserError


@dataclass(frozen=True)
class StereoCalibration:
    """What depth <-> disparity conversion needs: focal length (px) and baseline (m)."""

    fx: float
    baseline: float


@dataclass(frozen=True)
class FrameRecord:
    """Where one frame's files are; a label path of None means the source has no such label."""

    sequence: str
    frame: int
    left: Path
    right: Path
    calibration: Path
    semantic: Path | None = None
    disparity: Path | None = None
    depth: Path | None = None
    steering: float = math.nan  # radians, +left; NaN where the source has none


class StereoDataset(Dataset):
    """A split of one on-disk layout; items are sample dicts of tensors (see DESIGN.md "Sample").

    Subclasses describe their layout: ``available_splits``, ``index_frames``, ``read_calibration``,
    ``decode_disparity`` and ``label_lookup`` (source label id -> class table id, 255 = ignore).
    """

    label_lookup: np.ndarray

    def __init__(
        self,
        root: str | Path,
        split: str,
        augment: AugmentConfig | None = None,
        eval_size: tuple[int, int] | None = None,
    ) -> None:
        if augment is not None and eval_size is not None:
            raise ValueError("give either augment (training) or eval_size (validation), not both")
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: dataset root not found; pass the folder that holds the dataset")
        splits = self.available_splits(self.root)
        if split not in splits:
            raise UserError(
                f"{self.root}: no split {split!r}; available splits: {', '.join(splits) or 'none'}"
            )
        self.split = split
        self.augment = augment
        self.eval_size = eval_size
        self.records: list[FrameRecord] = self.index_frames(split)
        if not self.records:
            raise UserError(f"{self.root}: split {split!r} holds no frames; check the dataset layout")
        self._calibrations: dict[Path, StereoCalibration] = {}
        # Applied to every frame after reading, before augmentation: removes or replaces labels
        # (data/partial_labels.py: label shares, pseudo-labels). Must pickle (DataLoader workers).
        self.label_filter: Callable[[FrameRecord, StereoArrays], StereoArrays] | None = None

    # -- layout-specific parts -------------------------------------------------------------------

    @classmethod
    def available_splits(cls, root: Path) -> list[str]:
        """Names of the splits present under ``root``."""
        raise NotImplementedError

    def index_frames(self, split: str) -> list[FrameRecord]:
        """All frames of ``split`` in a stable order (sequence, then frame)."""
        raise NotImplementedError

    def read_calibration(self, path: Path) -> StereoCalibration:
        """Focal length and baseline from the layout's calibration file."""
        raise NotImplementedError

    def decode_disparity(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint16 PNG values -> (float32 pixels, valid mask); KITTI encoding: value / 256 with
        0 = unknown and no "far" label (so the mask is value > 0 and disparity is never 0 where valid).
        """
        return raw.astype(np.float32) / 256.0, raw > 0

    def read_disparity(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A disparity file as (float32 pixels, valid mask), see ``StereoArrays``; 16-bit PNG layouts
        only override ``decode_disparity``, layouts with other files (Middlebury PFM) override this."""
        return self.decode_disparity(read_uint16(path))

    def read_depth(
        self, record: FrameRecord, disparity: np.ndarray, valid: np.ndarray, calib: StereoCalibration
    ) -> tuple[np.ndarray, np.ndarray]:
        """(metric depth, valid mask) of a frame with disparity; layouts without depth files derive
        it from disparity (far, i.e. valid with d = 0, becomes +inf)."""
        return depth_from_disparity(disparity, calib.fx, calib.baseline, valid), valid

    # -- shared reading --------------------------------------------------------------------------

    def calibration(self, record: FrameRecord) -> StereoCalibration:
        """The frame's calibration, read once per file (sequences share one file)."""
        if record.calibration not in self._calibrations:
            self._calibrations[record.calibration] = self.read_calibration(record.calibration)
        return self._calibrations[record.calibration]

    def read_semantic(self, record: FrameRecord) -> np.ndarray | None:
        """The frame's label map in class-table ids (uint8, 255 = ignore), or None if unlabelled."""
        if record.semantic is None:
            return None
        return self.label_lookup[read_uint8(record.semantic)]

    def load_arrays(self, index: int) -> StereoArrays:
        """Frame ``index`` as numpy arrays at its original size, labels decoded, nothing augmented."""
        record = self.records[index]
        left = read_rgb(record.left)
        size = left.shape[:2]
        right = read_rgb(record.right)
        check_size(record.right, right, size)
        calib = self.calibration(record)

        semantic = self.read_semantic(record)
        if semantic is not None:
            check_size(record.semantic, semantic, size)
        if record.disparity is not None:
            disparity, disparity_valid = self.read_disparity(record.disparity)
            check_size(record.disparity, disparity, size)
            depth, depth_valid = self.read_depth(record, disparity, disparity_valid, calib)
        else:
            disparity = np.zeros(size, dtype=np.float32)
            depth = np.zeros(size, dtype=np.float32)
            disparity_valid = depth_valid = np.zeros(size, dtype=bool)
        arrays = StereoArrays(
            left=left,
            right=right,
            semantic=empty_semantic(*size) if semantic is None else semantic,
            disparity=disparity,
            depth=depth,
            disparity_valid=disparity_valid,
            depth_valid=depth_valid,
            fx=calib.fx,
            baseline=calib.baseline,
            has_semantic=semantic is not None,
            has_depth=record.disparity is not None,
        )
        return arrays if self.label_filter is None else self.label_filter(record, arrays)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self.load_arrays(index)
        if self.augment is not None:
            # Seeded from torch's generator, which DataLoader reseeds per worker and epoch, so
            # augmentation differs between epochs yet a run repeats under torch.manual_seed.
            rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
            arrays = augment_stereo(arrays, self.augment, rng)
        elif self.eval_size is not None:
            arrays = resize_stereo(arrays, self.eval_size)
        record = self.records[index]
        return to_sample(arrays, record.sequence, record.frame, record.steering)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def to_sample(arrays: StereoArrays, sequence: str, frame: int, steering: float) -> dict[str, Any]:
    """The DESIGN.md sample dict; every value collates with torch's default collate (no None)."""
    return {
        "left": _image_tensor(arrays.left),
        "right": _image_tensor(arrays.right),
        "semantic": torch.from_numpy(arrays.semantic.astype(np.int64)),
        "disparity": torch.from_numpy(np.ascontiguousarray(arrays.disparity, dtype=np.float32)),
        "depth": torch.from_numpy(np.ascontiguousarray(arrays.depth, dtype=np.float32)),
        # True where labelled, "infinitely far" included (disparity 0, depth +inf there).
        "disparity_valid": torch.from_numpy(np.ascontiguousarray(arrays.disparity_valid, dtype=bool)),
        "depth_valid": torch.from_numpy(np.ascontiguousarray(arrays.depth_valid, dtype=bool)),
        "has_semantic": arrays.has_semantic,
        "has_depth": arrays.has_depth,
        "steering": torch.tensor(steering, dtype=torch.float32),
        "has_steering": not math.isnan(steering),
        "fx": torch.tensor(arrays.fx, dtype=torch.float32),
        "baseline": torch.tensor(arrays.baseline, dtype=torch.float32),
        "doffs": torch.tensor(arrays.doffs, dtype=torch.float32),
        "source_region": torch.tensor(arrays.source_region, dtype=torch.float32),
        "sequence": sequence,
        "frame": frame,
    }
