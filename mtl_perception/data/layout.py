"""On-disk layout of a synthetic dataset (the contract between `generate` and the data loaders).

```
<root>/manifest.json
<root>/<split>/<seq>/calib.json
<root>/<split>/<seq>/steering.csv
<root>/<split>/<seq>/{left,right,disparity,depth,semantic}/000000.png
<root>/bags/<seq>/                  rosbag2 of selected sequences
```
Disparity and depth PNGs are uint16 scaled by 256 (KITTI): value = round(metric * 256), clamped to
``FAR - 1`` = 65534 (255.99 px / 255.99 m); two values are reserved: ``0`` = unknown (no label) and
``FAR`` = 65535 = infinitely far (sky, or beyond the generator's far limit), a real label that reads
back as disparity 0 and depth +inf. ``decode_disparity`` / ``decode_depth`` return the value and its
validity mask (True where labelled, far included). Semantic PNGs are uint8 class ids of
``mtl_perception.data.labels`` with 255 = ignore; left/right are 8-bit RGB.

Version history: 1 = 0 meant "invalid" for sky and beyond range alike; 2 = the ``FAR`` sentinel and
a per-sequence random rig (drawn from the sequence seed, recorded in calib.json's ``rig``).

The manifest's ``config.domain`` names a held-out generator domain (``mtl_perception.sim.domains``:
evaluation and adaptation only, never training); absent, the dataset is the default training world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMAT = "mtl_perception.synthetic"
VERSION = 2

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

# uint16 PNG value = round(metric value * SCALE); 0 means unknown (KITTI convention), FAR means
# infinitely far (disparity 0, depth +inf); real values clamp to FAR - 1.
DISPARITY_SCALE = 256.0
DEPTH_SCALE = 256.0
UNKNOWN = 0
FAR = 65535

RATE_HZ = 10.0
# Bag and CSV stamps start here (a fixed epoch, never now(), so files are reproducible).
EPOCH_NS = 1_700_000_000 * 1_000_000_000


def encode_png(values: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
    """uint16 PNG values of a label map: ``UNKNOWN`` where not ``valid``, ``FAR`` where valid and
    infinitely far (+inf depth, or 0 disparity), else round(values * scale) clamped to [1, FAR - 1].

    ``values`` is depth (+inf = far) or disparity (0 = far where valid).
    """
    values = np.asarray(values, dtype=np.float64)
    far = valid & (~np.isfinite(values) | (values <= 0))
    finite = np.where(np.isfinite(values), values, 0.0)
    raw = np.clip(np.rint(finite * scale), 1, FAR - 1).astype(np.uint16)
    raw[far] = FAR
    raw[~valid] = UNKNOWN
    return raw


def decode_disparity(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(disparity px float32, valid bool) of a disparity PNG: 0 px where far or unknown."""
    valid = raw != UNKNOWN
    disparity = raw.astype(np.float32) / np.float32(DISPARITY_SCALE)
    disparity[raw == FAR] = 0.0
    return disparity, valid


def decode_depth(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth m float32, valid bool) of a depth PNG: +inf where far, 0 where unknown."""
    valid = raw != UNKNOWN
    depth = raw.astype(np.float32) / np.float32(DEPTH_SCALE)
    depth[raw == FAR] = np.inf
    return depth, valid


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
