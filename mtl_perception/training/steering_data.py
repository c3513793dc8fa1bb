"""What the steering head learns from: per-frame encoder features of driving sequences, cached.

The encoder is frozen (or, for the fine-tuned variant, frozen up to its 1/16 features), so each
frame's encoder output is computed once and stored; every fold and epoch then trains on the cache
in seconds instead of re-running a CNN over 16 frames per window. The cache key covers the
encoder weights, the variant and the frames, so a retrained encoder never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mtl_perception.config import from_dict
from mtl_perception.contract import resize_image
from mtl_perception.data import layout
from mtl_perception.data.base import FrameRecord
from mtl_perception.data.image_io import read_rgb
from mtl_perception.data.synthetic import SyntheticDataset, read_manifest
from mtl_perception.errors import UserError
from mtl_perception.networks.backbone import Backbone
from mtl_perception.networks.heads import grid_embedding
from mtl_perception.sim.ego import expert_steering
from mtl_perception.sim.generator import GeneratorConfig, sequence_drive
from mtl_perception.sim.recording import EXPERT_LABELS

# "multitask": the shipped model's encoder, frozen (its embedding is what the node publishes from).
# "imagenet": the same backbone with its ImageNet weights, frozen (the baseline the design beats).
# "multitask_finetuned": the shipped encoder with its last step (for EfficientNet-Lite0 the
# 192 -> 320 block at 1/32) trained together with the head; the cache holds that step's input.
ENCODERS = ("multitask", "imagenet", "multitask_finetuned")


@dataclass(frozen=True)
class SequenceFeatures:
    """One sequence's cached encoder features (F frames, oldest first) and steering labels."""

    name: str
    features: np.ndarray  # float16: F x D embeddings, or F x C x h x w maps (fine-tuned variant)
    steering: np.ndarray  # float32 F, radians, positive = left


class EncoderTail(nn.Module):
    """Cached features -> per-frame embedding: identity for a frozen encoder, the backbone's last
    step when fine-tuned (its batch norm keeps the loaded statistics: a few windows are no batch).
    ``global_average`` averages the grid cells into one vector (the global mean: the cells are
    equal where the grid divides the map, as the default 2x4 grid does the 8x16 map of 256x512)."""

    def __init__(self, backbone: Backbone | None, grid: tuple[int, int], global_average: bool = False):
        super().__init__()
        self.backbone, self.grid, self.global_average = backbone, grid, global_average

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            features = grid_embedding(self.backbone.deepest_step(features), self.grid)
        if self.global_average:
            features = features.reshape(len(features), -1, self.grid[0] * self.grid[1]).mean(-1)
        return features

    def train(self, mode: bool = True) -> EncoderTail:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self


def sequence_records(root: Path, split: str) -> dict[str, list[FrameRecord]]:
    """Sequence name -> its frames in order, for a synthetic dataset split (the only layout with
    driving sequences and steering labels)."""
    records: dict[str, list[FrameRecord]] = {}
    for record in SyntheticDataset(root, split).records:
        records.setdefault(record.sequence, []).append(record)
    for name, frames in records.items():
        if any(not np.isfinite(r.steering) for r in frames):
            raise UserError(f"{root}/{split}/{name}: frames without a steering label; regenerate the dataset")
    return records


def frame_period(root: Path) -> float:
    """Seconds between consecutive frames of the dataset's sequences (its generator's rate)."""
    rate = read_manifest(root).get("config", {}).get("rate_hz", layout.RATE_HZ)
    return 1.0 / float(rate)


LABELS = ("expert", "driven")


def expert_labels(root: Path, split: str, sequence: str, driven: np.ndarray) -> np.ndarray:
    """The lane keeper's command at each frame of a synthetic sequence (``sim.ego.expert_steering``),
    rebuilt from the manifest's generator config and the sequence seed without rendering.

    ``driven`` (the stored labels) proves the rebuild: the replayed drive must command them again.
    A recorded closed-loop drive (``sim.recording``) stores the expert's commands already: returned as
    they are.
    """
    manifest = read_manifest(root)
    info = manifest["sequences"][sequence]
    if info.get("steering_labels") == EXPERT_LABELS:  # a recorded drive: steering.csv is the expert's
        return driven
    config = from_dict(GeneratorConfig, manifest["config"], where=f"{layout.manifest_path(root)}:config")
    road, speed, states = sequence_drive(config, int(info["seed"]), int(info["frames"]))
    replayed = np.array([state.steering for state in states], np.float32)
    if replayed.shape != driven.shape or np.max(np.abs(replayed - driven)) > 1e-5:
        raise UserError(
            f"{root}/{split}/{sequence}: this version's driver does not reproduce the stored steering; "
            "expert labels need the dataset regenerated (or steering.labels: driven)"
        )
    return expert_steering(road, states, speed)


def weights_digest(module: nn.Module) -> str:
    """A short hash of a module's parameters and buffers: the cache key part for the encoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def dataset_digest(root: Path) -> str:
    """Short digest of a dataset's manifest, which records the generator config and seeds: same
    manifest, same frames. Regenerating a root with more sequences changes it."""
    return hashlib.sha256(layout.manifest_path(root).read_bytes()).hexdigest()[:12]


def encode_frames(
    backbone: Backbone,
    records: list[FrameRecord],
    input_size: tuple[int, int],
    grid: tuple[int, int],
    finetuned: bool,
    batch: int = 8,
) -> np.ndarray:
    """float16 features of each frame's left image, resized as the runtime does."""
    height, width = input_size
    out = []
    for start in range(0, len(records), batch):
        images = [resize_image(read_rgb(r.left), width, height) for r in records[start : start + batch]]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        features = backbone.before_deepest_step(x) if finetuned else grid_embedding(backbone(x)[-1], grid)
        out.append(features.numpy().astype(np.float16))
    return np.concatenate(out)


def cached_features(
    backbone: Backbone,
    encoder: str,
    root: Path,
    split: str,
    input_size: tuple[int, int],
    grid: tuple[int, int],
    cache_dir: Path,
    labels: str = "expert",
) -> list[SequenceFeatures]:
    """Every sequence of ``split`` encoded (from ``cache_dir`` where already done; resumable per
    sequence), with its ``labels``: ``expert`` (``expert_labels``) or ``driven`` (the stored ones)."""
    if labels not in LABELS:
        raise UserError(f"steering labels must be one of {LABELS}, got {labels!r}")
    backbone.eval()
    finetuned = encoder == "multitask_finetuned"
    key = json.dumps([weights_digest(backbone), finetuned, list(input_size), list(grid)])
    directory = cache_dir / hashlib.sha256(key.encode()).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.json").write_text(key + "\n")
    sequences = sequence_records(root, split)
    entries = read_manifest(root)["sequences"]
    recorded = [name for name, info in entries.items() if info.get("steering_labels") == EXPERT_LABELS]
    if labels == "driven" and recorded:
        raise UserError(
            f"{root}: recorded drives ({recorded[0]}, ...) hold the expert's labels only; "
            "steering.labels: expert"
        )
    dataset = dataset_digest(root)
    result = []
    for name, records in tqdm(sequences.items(), desc=f"encoding {split} ({encoder})", unit="seq"):
        path = directory / f"{dataset}_{split}_{name}.npz"
        steering = np.array([r.steering for r in records], np.float32)
        if path.is_file():
            with np.load(path) as cached:
                features = cached["features"]
        else:
            features = encode_frames(backbone, records, input_size, grid, finetuned)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, features=features)
            tmp.replace(path)  # whole files only: an interrupted run re-encodes that sequence
        if len(features) != len(records):
            raise UserError(
                f"{path}: stale cache ({len(features)} frames, dataset has {len(records)}); delete it"
            )
        if labels == "expert":
            steering = expert_labels(root, split, name, steering)
        result.append(SequenceFeatures(name=name, features=features, steering=steering))
    return result


def window_index(sequences: list[SequenceFeatures], window: int) -> np.ndarray:
    """(sequence, last frame) of every full window of ``window`` consecutive frames, as int64 Nx2."""
    rows = [(s, end) for s, seq in enumerate(sequences) for end in range(window - 1, len(seq.steering))]
    if not rows:
        raise UserError(f"no sequence has {window} frames; generate longer sequences (--frames)")
    return np.array(rows, np.int64)
