"""On-disk layout of a synthetic dataset (the contract between `generate` and the data loaders).

```
<root>/manifest.json
<root>/<split>/<seq>/calib.json
<root>/<split>/<seq>/steering.csv
<root>/<split>/<seq>/{left,right,disparity,depth,semantic}/000000.png
<root>/bags/<seq>/                  rosbag2 of selected sequences
```
Disparity and depth PNGs are uint16 scaled by 256 (KITTI), 0 = invalid; semantic PNGs are uint8
class ids of ``mtl_perception.data.labels`` with 255 = ignore; left/right are 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

FORMAT = "mtl_perception.synthetic"
VERSION = 1

MANIFEST_NAME = "manifest.json"
CALIB_NAME = "calib.json"
STEERING_NAME = "steering.csv"
STEERING_HEADER = ("frame", "stamp_ns", "steering_rad")
BAGS_DIR = "bags"

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Seeds of different splits never overlap: seed = base + SPLIT_SEED_OFFSET[split] + index.
SPLIT_SEED_OFFSET: dict[str, int] = {"train": 0, "val": 100_000, "test": 200_000}

LEFT_DIR = "left"
RIGHT_DIR = "right"
DISPARITY_DIR = "disparity"
DEPTH_DIR = "depth"
SEMANTIC_DIR = "semantic"
FRAME_DIRS: tuple[str, ...] = (LEFT_DIR, RIGHT_DIR, DISPARITY_DIR, DEPTH_DIR, SEMANTIC_DIR)

# uint16 PNG value = round(metric value * SCALE); 0 means invalid (KITTI convention).
DISPARITY_SCALE = 256.0
DEPTH_SCALE = 256.0

RATE_HZ = 10.0
# Bag and CSV stamps start here (a fixed epoch, never now(), so files are reproducible).
EPOCH_NS = 1_700_000_000 * 1_000_000_000


def sequence_name(split: str, index: int) -> str:
    """Name of the ``index``-th sequence of ``split``, e.g. ``train_0003``."""
    return f"{split}_{index:04d}"


def sequence_seed(base_seed: int, split: str, index: int) -> int:
    """Seed of one sequence; disjoint between splits for indices below 100000."""
    return base_seed + SPLIT_SEED_OFFSET[split] + index


def frame_stem(frame: int) -> str:
    """File stem of a frame, e.g. ``000012``."""
    return f"{frame:06d}"


def frame_stamp_ns(frame: int, rate_hz: float = RATE_HZ) -> int:
    """Header stamp of ``frame`` in nanoseconds: fixed epoch + frame / rate."""
    return EPOCH_NS + round(frame * 1e9 / rate_hz)


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_NAME


def sequence_dir(root: Path, split: str, sequence: str) -> Path:
    return Path(root) / split / sequence


def calib_path(root: Path, split: str, sequence: str) -> Path:
    return sequence_dir(root, split, sequence) / CALIB_NAME


def steering_path(root: Path, split: str, sequence: str) -> Path:
    return sequence_dir(root, split, sequence) / STEERING_NAME


def frame_path(root: Path, split: str, sequence: str, kind: str, frame: int) -> Path:
    """PNG of one frame; ``kind`` is one of ``FRAME_DIRS``."""
    if kind not in FRAME_DIRS:
        raise ValueError(f"unknown frame kind {kind!r}; expected one of {FRAME_DIRS}")
    return sequence_dir(root, split, sequence) / kind / f"{frame_stem(frame)}.png"


def bag_dir(root: Path, sequence: str) -> Path:
    return Path(root) / BAGS_DIR / sequence
