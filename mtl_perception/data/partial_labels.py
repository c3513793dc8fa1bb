"""Partly labelled training data: label shares, both-labels-only filtering, pseudo-label overlays.

A *label share* keeps a task's label on a fixed subset of the frames and removes it elsewhere. The
subset is a pure function of (frame id, task, ``seed``) ranked by a keyed hash, so every variant of
an experiment (and every ``train.seed``) sees the same labelled frames, and a smaller share's subset
lies inside a larger one's. Removed labels become *unknown* (semantic 255, geometry valid False,
``has_semantic`` / ``has_depth`` False), never "infinitely far".

A *pseudo-label set* (written by ``mtl-perception pseudo-label``) fills frames that lack one label
with a teacher's predictions; real labels always win (a frame that kept its label is never read
from the set). Its manifest records what the labels were made from, so a student whose data or
teacher differ gets a clear refusal instead of stale labels.

```
<dir>/manifest.json                          written last: a folder without it is unfinished
<dir>/semantic/<sequence>/<frame>.png        uint8 class ids, 255 = not confident enough
<dir>/disparity/<sequence>/<frame>.png       uint16, the synthetic layout's encoding (0 = unknown,
<dir>/depth/<sequence>/<frame>.png           65535 = far), at the frame's original size
```
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.data import layout
from mtl_perception.data.base import FrameRecord, StereoDataset
from mtl_perception.data.image_io import check_size, read_uint8, read_uint16
from mtl_perception.data.sample import StereoArrays, empty_semantic
from mtl_perception.errors import UserError

TASKS = ("semantic", "depth")
PSEUDO_FORMAT = "mtl_perception.pseudo_labels"
PSEUDO_VERSION = 1
PSEUDO_MANIFEST = "manifest.json"


def frame_key(sequence: str, frame: int) -> str:
    """The id a label share and a pseudo-label set know a frame by."""
    return f"{sequence}/{int(frame):06d}"


def record_key(record: FrameRecord) -> str:
    return frame_key(record.sequence, record.frame)


def source_has_label(record: FrameRecord, task: str) -> bool:
    """Whether the source itself labels ``task`` on this frame."""
    return (record.semantic if task == "semantic" else record.disparity) is not None


def has_label(arrays: StereoArrays, task: str) -> bool:
    """Whether a loaded frame carries ``task``'s label (after any removal)."""
    return arrays.has_semantic if task == "semantic" else arrays.has_depth


def _rank(key: str, task: str, seed: int) -> str:
    # A keyed digest, not hash(): Python salts str hashes per process.
    return hashlib.blake2b(f"{seed}:{task}:{key}".encode(), digest_size=8).hexdigest()


def labelled_subset(keys: Iterable[str], share: float, task: str, seed: int) -> frozenset[str]:
    """The round(share * n) frames of ``keys`` that keep ``task``'s label (all of them at share 1)."""
    keys = sorted(set(keys))
    if share >= 1.0:
        return frozenset(keys)
    ranked = sorted(keys, key=lambda key: (_rank(key, task, seed), key))
    return frozenset(ranked[: round(share * len(keys))])


def frames_digest(records: Iterable[FrameRecord]) -> str:
    """Content id of a split's frame list (which frames, in which order), for manifests."""
    text = "\n".join(record_key(r) for r in records)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: a teacher is identified by its content, not its path."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LabelShares:
    """Which share of the frames keeps each label, drawn with ``seed`` (see module docstring)."""

    semantic: float = 1.0
    depth: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for task in TASKS:
            if not 0.0 <= getattr(self, task) <= 1.0:
                raise ValueError(f"{task} label share must be in [0, 1], got {getattr(self, task)}")

    def share(self, task: str) -> float:
        return float(getattr(self, task))

    def as_dict(self) -> dict[str, Any]:
        return {"semantic": self.semantic, "depth": self.depth, "seed": self.seed}


def pseudo_label_path(directory: Path, kind: str, key: str) -> Path:
    """File of one frame's pseudo-label; ``kind`` is semantic, disparity or depth."""
    sequence, frame = key.rsplit("/", 1)
    return Path(directory) / kind / sequence / f"{frame}.png"


@dataclass(frozen=True)
class PseudoLabelSet:
    """An opened, checked pseudo-label folder: ``target`` labels for the frames in ``frames``."""

    directory: Path
    target: str  # "semantic" or "depth"
    frames: frozenset[str]

    def read(self, key: str, arrays: StereoArrays) -> StereoArrays:
        """``arrays`` with this set's label for frame ``key`` in place of the (removed) one."""
        size = arrays.size
        if self.target == "semantic":
            path = pseudo_label_path(self.directory, "semantic", key)
            semantic = read_uint8(path)
            check_size(path, semantic, size)
            return arrays.replace(semantic=semantic, has_semantic=True)
        disparity_path = pseudo_label_path(self.directory, "disparity", key)
        depth_path = pseudo_label_path(self.directory, "depth", key)
        disparity, disparity_valid = layout.decode_disparity(read_uint16(disparity_path))
        depth, depth_valid = layout.decode_depth(read_uint16(depth_path))
        check_size(disparity_path, disparity, size)
        check_size(depth_path, depth, size)
        return arrays.replace(
            disparity=disparity,
            depth=depth,
            disparity_valid=disparity_valid,
            depth_valid=depth_valid,
            has_depth=True,
        )


def read_pseudo_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a pseudo-label folder; UserError if it is missing (unfinished) or foreign."""
    path = Path(directory) / PSEUDO_MANIFEST
    if not path.is_file():
        raise UserError(
            f"{path}: not found; {directory} holds no finished pseudo-labels "
            "(run `mtl-perception pseudo-label --config <teacher config>` first)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rerun `mtl-perception pseudo-label`") from exc
    if manifest.get("format") != PSEUDO_FORMAT or manifest.get("version") != PSEUDO_VERSION:
        raise UserError(f"{path}: not a version {PSEUDO_VERSION} pseudo-label manifest")
    return manifest


def open_pseudo_labels(
    directory: str | Path, expected_source: dict[str, Any], shares: LabelShares, teacher: str | None
) -> PseudoLabelSet:
    """Open a pseudo-label folder for a training set, refusing stale labels with the reason.

    ``expected_source`` is the training set's ``source_description``; ``teacher`` (optional) a
    checkpoint the labels must have been made by (compared by content digest).
    """
    manifest = read_pseudo_manifest(directory)
    where = Path(directory) / PSEUDO_MANIFEST
    rerun = "rerun `mtl-perception pseudo-label` for this data, or point data.pseudo_labels elsewhere"
    for key, value in expected_source.items():
        if manifest["source"].get(key) != value:
            raise UserError(
                f"{where}: stale pseudo-labels: made for source {key} = {manifest['source'].get(key)!r}, "
                f"this training set has {value!r}; {rerun}"
            )
    if manifest["label_shares"] != shares.as_dict():
        raise UserError(
            f"{where}: stale pseudo-labels: made for label shares {manifest['label_shares']}, this config "
            f"has {shares.as_dict()} (data.semantic_label_share / depth_label_share / "
            f"label_share_seed); {rerun}"
        )
    target = manifest["target"]
    if shares.share(target) >= 1.0:
        raise UserError(
            f"{where}: {target} pseudo-labels, but this config keeps every {target} label "
            f"(data.{target}_label_share: 1.0): there is nothing for them to fill"
        )
    if teacher is not None:
        digest = file_digest(teacher)
        if manifest["teacher"]["sha256"] != digest:
            raise UserError(
                f"{where}: stale pseudo-labels: made by a teacher with sha256 "
                f"{manifest['teacher']['sha256'][:12]}..., but {teacher} is {digest[:12]}... "
                "(retrained?); rerun `mtl-perception pseudo-label`"
            )
    return PseudoLabelSet(Path(directory), target, frozenset(manifest["frames"]))


def source_description(dataset: StereoDataset, kind: str) -> dict[str, Any]:
    """What a pseudo-label set is tied to: the layout, the split and its exact frame list."""
    return {"kind": kind, "split": dataset.split, "frames_sha256": frames_digest(dataset.records)}


@dataclass(frozen=True)
class LabelPlan:
    """Applied to every frame a dataset loads (``StereoDataset.label_filter``): removes the labels
    outside the shares, then fills removed ones from the pseudo-label set where it has the frame."""

    drop_semantic: frozenset[str]
    drop_depth: frozenset[str]
    pseudo: PseudoLabelSet | None = None

    def lacks(self, key: str, task: str) -> bool:
        """Whether frame ``key`` loses ``task``'s real label under this plan."""
        return key in (self.drop_semantic if task == "semantic" else self.drop_depth)

    def __call__(self, record: FrameRecord, arrays: StereoArrays) -> StereoArrays:
        key = record_key(record)
        if key in self.drop_semantic:
            arrays = arrays.replace(semantic=empty_semantic(*arrays.size), has_semantic=False)
        if key in self.drop_depth:
            zeros = np.zeros(arrays.size, dtype=np.float32)
            unknown = np.zeros(arrays.size, dtype=bool)  # unknown, not far: valid False
            arrays = arrays.replace(
                disparity=zeros,
                depth=zeros.copy(),
                disparity_valid=unknown,
                depth_valid=unknown.copy(),
                has_depth=False,
            )
        # Real labels always win: a frame is read from the set only when it has no such label now.
        if (
            self.pseudo is not None
            and not has_label(arrays, self.pseudo.target)
            and key in self.pseudo.frames
        ):
            arrays = self.pseudo.read(key, arrays)
        return arrays


def label_plan(records: list[FrameRecord], shares: LabelShares) -> LabelPlan:
    """Which frames lose which label under ``shares`` (frames the source leaves unlabelled stay so)."""
    drops = {}
    for task in TASKS:
        labelled = [record_key(r) for r in records if source_has_label(r, task)]
        drops[task] = frozenset(labelled) - labelled_subset(labelled, shares.share(task), task, shares.seed)
    return LabelPlan(drop_semantic=drops["semantic"], drop_depth=drops["depth"])


def apply_partial_labels(
    dataset: StereoDataset,
    kind: str,
    shares: LabelShares,
    require_all_labels: bool = False,
    pseudo_labels: str | Path | None = None,
    teacher: str | None = None,
) -> StereoDataset:
    """Set up ``dataset`` (in place, and returned) to train on partial labels.

    ``require_all_labels`` keeps only the frames that still carry both labels (no pseudo ones);
    ``pseudo_labels`` fills removed labels from a folder written by ``mtl-perception pseudo-label``.
    """
    if require_all_labels and pseudo_labels is not None:
        raise UserError(
            "data.require_all_labels trains on frames with both real labels only; it cannot be combined "
            "with data.pseudo_labels"
        )
    plan = label_plan(dataset.records, shares)
    if pseudo_labels is not None:
        expected = source_description(dataset, kind)
        plan = LabelPlan(
            plan.drop_semantic, plan.drop_depth, open_pseudo_labels(pseudo_labels, expected, shares, teacher)
        )
    dataset.label_filter = plan
    if require_all_labels:
        dataset.records = [
            r
            for r in dataset.records
            if all(source_has_label(r, task) and not plan.lacks(record_key(r), task) for task in TASKS)
        ]
        if not dataset.records:
            raise UserError("data.require_all_labels: no training frame keeps both labels under the shares")
    return dataset
