"""Class statistics of a dataset: pixel share and frame presence of every class, per split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtl_perception.data.base import StereoDataset
from mtl_perception.data.datasets import available_splits, dataset_class
from mtl_perception.data.labels import CLASS_NAMES, NUM_CLASSES


@dataclass(frozen=True)
class SplitStatistics:
    """Counts of one split; shares are derived so the JSON keeps the raw numbers too."""

    split: str
    frames: int
    labelled_frames: int
    pixel_counts: np.ndarray  # (NUM_CLASSES,) labelled pixels of each class
    frame_counts: np.ndarray  # (NUM_CLASSES,) labelled frames containing each class

    @property
    def labelled_pixels(self) -> int:
        return int(self.pixel_counts.sum())

    def pixel_share(self) -> dict[str, float]:
        """Percent of labelled (non-ignore) pixels per class."""
        total = max(self.labelled_pixels, 1)
        return {
            name: 100.0 * float(n) / total for name, n in zip(CLASS_NAMES, self.pixel_counts, strict=True)
        }

    def frame_presence(self) -> dict[str, float]:
        """Percent of labelled frames that contain at least one pixel of the class."""
        total = max(self.labelled_frames, 1)
        return {
            name: 100.0 * float(n) / total for name, n in zip(CLASS_NAMES, self.frame_counts, strict=True)
        }

    def missing_classes(self) -> list[str]:
        """Classes of the table that never appear in this split."""
        return [name for name, n in zip(CLASS_NAMES, self.frame_counts, strict=True) if n == 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "labelled_frames": self.labelled_frames,
            "labelled_pixels": self.labelled_pixels,
            "classes": {
                name: {
                    "pixels": int(pixels),
                    "frames": int(frames),
                    "pixel_share_percent": self.pixel_share()[name],
                    "frame_presence_percent": self.frame_presence()[name],
                }
                for name, pixels, frames in zip(
                    CLASS_NAMES, self.pixel_counts, self.frame_counts, strict=True
                )
            },
        }


def split_statistics(dataset: StereoDataset) -> SplitStatistics:
    """Count classes over a dataset split, reading only its semantic label maps."""
    pixel_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    frame_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    labelled = 0
    for record in tqdm(dataset.records, desc=f"stats {dataset.split}", unit="frame", leave=False):
        labels = dataset.read_semantic(record)
        if labels is None:
            continue
        labelled += 1
        counts = np.bincount(labels.ravel(), minlength=256)[:NUM_CLASSES]  # drops ignore (255)
        pixel_counts += counts
        frame_counts += counts > 0
    return SplitStatistics(dataset.split, len(dataset.records), labelled, pixel_counts, frame_counts)


def dataset_statistics(kind: str, root: str | Path, splits: list[str] | None = None) -> list[SplitStatistics]:
    """Statistics of the given splits (default: every split present) of a dataset root."""
    cls = dataset_class(kind)
    return [split_statistics(cls(root, split)) for split in splits or available_splits(kind, root)]


def format_table(stats: list[SplitStatistics]) -> str:
    """A text table: one row per class, pixel share / frame presence columns per split."""
    name_width = max(len(n) for n in CLASS_NAMES)
    header = f"{'class':<{name_width}}" + "".join(f" | {s.split + ' px% / frm%':>24}" for s in stats)
    lines = [header, "-" * len(header)]
    for name in CLASS_NAMES:
        cells = "".join(
            f" | {s.pixel_share()[name]:>10.2f} / {s.frame_presence()[name]:>11.1f}" for s in stats
        )
        lines.append(f"{name:<{name_width}}{cells}")
    lines.append("-" * len(header))
    frames = "".join(f" | {s.labelled_frames:>10d} / {s.frames:>11d}" for s in stats)
    lines.append(f"{'frames':<{name_width}}{frames}")
    lines.append("px%: share of labelled pixels; frm%: share of labelled frames with the class;")
    lines.append("frames: labelled / all")
    return "\n".join(lines)
