"""Stereo frames of rosbags cached on disk at the model's input size, for adaptation.

Bags are read once through replay's ``BagSource`` (the same topic options, Image or CompressedImage,
the same checks and errors) and every ``stride``-th frame is resized as the runtime pipeline resizes
a camera image (``contract.resize_image``, stretch) into uint8 arrays memory-mapped from ``.npy``
files, so training draws random frames without holding the bags in memory and a resumed run reuses
them. The manifest is written last and records what the cache was made from: a cache of other bags,
sizes or options (or one cut short) is rebuilt, never silently reused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mtl_perception.contract import resize_image, to_rgb
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.errors import UserError


class BagSource(Protocol):
    """What this module reads of a bag: replay's ``BagSource``, handed in by the caller (training sits
    below replay in the package's layers, so it does not import it)."""

    path: Path
    topics: Any  # left / right topic names
    ground_truth: Any
    frame_count: int

    def frames(self) -> Iterator[Any]: ...


MANIFEST = "manifest.json"
log = logging.getLogger(__name__)

# N x 3 x H x W float 0..1 left and right views -> N x H x W uint8 labels (IGNORE_INDEX = none).
Labeller = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FrameCache:
    """Cached frames: ``left``/``right`` N x H x W x 3 uint8 RGB, ``labels`` N x H x W uint8 or None."""

    folder: Path
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray | None
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.left)

    def views(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames' left and right views as N x 3 x H x W float 0..1 tensors."""
        return tuple(  # type: ignore[return-value]
            torch.from_numpy(np.ascontiguousarray(view[list(indices)])).permute(0, 3, 1, 2).float() / 255.0
            for view in (self.left, self.right)
        )


def cache_identity(
    sources: Sequence[BagSource], size: tuple[int, int], stride: int, max_frames: int | None, labeller: str
) -> dict[str, Any]:
    """What a cache is made from; a cache is reused only when this matches exactly."""
    return {
        "bags": [
            {"path": str(s.path.resolve()), "left": s.topics.left, "right": s.topics.right} for s in sources
        ],
        "size": list(size),
        "stride": stride,
        "max_frames": max_frames,
        "labeller": labeller,
    }


def load_cache(folder: Path, identity: dict[str, Any]) -> FrameCache | None:
    """The cache in ``folder`` if it is complete and made from ``identity``, else None."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("identity") != identity:
        return None
    count = manifest["frames"]
    labels = np.load(folder / "labels.npy", mmap_mode="r")[:count] if manifest["labelled"] else None
    return FrameCache(
        folder,
        np.load(folder / "left.npy", mmap_mode="r")[:count],
        np.load(folder / "right.npy", mmap_mode="r")[:count],
        labels,
        manifest,
    )


def build_cache(
    sources: Sequence[BagSource],
    folder: Path,
    size: tuple[int, int],
    stride: int = 1,
    max_frames: int | None = None,
    labeller: Labeller | None = None,
    labeller_name: str = "",
    batch_size: int = 4,
) -> FrameCache:
    """Cache every ``stride``-th stereo frame of the bags (at most ``max_frames``), labelled by
    ``labeller`` when given; reuses a matching complete cache in ``folder``."""
    identity = cache_identity(sources, size, stride, max_frames, labeller_name if labeller else "")
    cached = load_cache(folder, identity)
    if cached is not None:
        log.info("reusing %d cached frames in %s", len(cached), folder)
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    height, width = size
    capacity = sum(math.ceil(s.frame_count / stride) for s in sources)
    capacity = min(capacity, max_frames) if max_frames else capacity
    shape = (capacity, height, width, 3)
    left = np.lib.format.open_memmap(folder / "left.npy", mode="w+", dtype=np.uint8, shape=shape)
    right = np.lib.format.open_memmap(folder / "right.npy", mode="w+", dtype=np.uint8, shape=shape)
    count, per_bag = _fill(sources, left, right, stride, capacity)
    if count == 0:
        raise UserError("the bags hold no stereo frame to adapt on")
    labels = None
    if labeller is not None:
        labels = np.lib.format.open_memmap(
            folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(capacity, height, width)
        )
        _label(labeller, left, right, labels, count, batch_size)
    for array in (left, right, labels):
        if array is not None:
            array.flush()
    manifest = {"identity": identity, "frames": count, "labelled": labels is not None, "bags": per_bag}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return FrameCache(
        folder, left[:count], right[:count], None if labels is None else labels[:count], manifest
    )


def _fill(
    sources: Sequence[BagSource], left: np.ndarray, right: np.ndarray, stride: int, capacity: int
) -> tuple[int, list[dict[str, Any]]]:
    """Write the frames into the arrays; returns the count and per-bag (name, frames, ground truth)."""
    height, width = left.shape[1:3]
    count = 0
    per_bag = []
    with tqdm(total=capacity, desc="cache frames", unit="frame") as bar:
        for source in sources:
            first = count
            for frame in source.frames():
                if count == capacity:
                    break
                if frame.index % stride:
                    continue
                # Resize first, then convert, as the runtime pipeline does (the same pixels).
                left[count] = to_rgb(resize_image(frame.left, width, height), frame.encoding)
                right[count] = to_rgb(resize_image(frame.right, width, height), frame.encoding)
                count += 1
                bar.update(1)
            per_bag.append(
                {"bag": source.path.name, "frames": count - first, "ground_truth": list(source.ground_truth)}
            )
    return count, per_bag


def _label(
    labeller: Labeller, left: np.ndarray, right: np.ndarray, labels: np.ndarray, count: int, batch_size: int
) -> None:
    for start in tqdm(range(0, count, batch_size), desc="pseudo-labels", unit="batch"):
        stop = min(start + batch_size, count)
        views = [
            torch.from_numpy(np.ascontiguousarray(v[start:stop])).permute(0, 3, 1, 2).float() / 255.0
            for v in (left, right)
        ]
        labels[start:stop] = labeller(*views).cpu().numpy().astype(np.uint8)


def confident_labels(model: torch.nn.Module, threshold: float, device: torch.device) -> Labeller:
    """Labeller of a (frozen) stereo model: its top class where the probability is >= ``threshold``."""

    @torch.no_grad()
    def label(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        logits = model(left.to(device), right.to(device))["semantic_logits"].float()
        confidence, classes = logits.softmax(dim=1).max(dim=1)
        return torch.where(confidence >= threshold, classes, torch.full_like(classes, IGNORE_INDEX))

    return label


class CachedFrameDataset(Dataset):
    """Sample dicts (``left``, ``right``, ``semantic`` pseudo-labels or all-ignore) of a cache."""

    def __init__(self, cache: FrameCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        left, right = self.cache.views([index])
        height, width = left.shape[-2:]
        labels = self.cache.labels
        semantic = (
            torch.from_numpy(np.array(labels[index], dtype=np.int64))
            if labels is not None
            else torch.full((height, width), IGNORE_INDEX, dtype=torch.int64)
        )
        return {"left": left[0], "right": right[0], "semantic": semantic}
