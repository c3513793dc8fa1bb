"""Pseudo-labels from a (depth- or semantic-) guided teacher: train it, then label what is missing.

``mtl-perception pseudo-label --config T.yaml`` runs both steps (each resumable): the teacher
(``networks/guided.py``, the config's ``teacher`` section) is trained by the normal ``Trainer`` on
the training frames that keep both labels under the config's label shares, learning its
``target`` task only; then it labels the training frames lacking ``target``:

- semantic: the class of the top softmax probability where that probability is >= ``threshold``
  (0.9 default), 255 (ignore) elsewhere;
- depth: the predicted depth where the predicted standard deviation is <= ``depth_threshold`` x the
  predicted depth, unknown elsewhere. The default 0.15 is a rule of thumb, not tuned on data: a
  Laplace prediction with that spread (b = 0.106 z) puts 90 % of its mass within +-24 % of the
  depth. Pixels predicted at >=
  ``FAR_RATIO`` x max_depth are written as far (the loss trains far pixels to max_depth).

Labels are written at the frames' original size (logits / depth upsampled from the teacher's input
size) so the student's augmentation treats them exactly like real labels. A student trains on them
with the normal ``train`` command (``data.pseudo_labels``); the teacher is never needed at run time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate
from tqdm import tqdm

from mtl_perception.data import layout
from mtl_perception.data.augment import resize_stereo
from mtl_perception.data.base import to_sample
from mtl_perception.data.partial_labels import (
    PSEUDO_FORMAT,
    PSEUDO_MANIFEST,
    PSEUDO_VERSION,
    LabelShares,
    apply_partial_labels,
    file_digest,
    has_label,
    pseudo_label_path,
    read_pseudo_manifest,
    record_key,
    source_description,
    source_has_label,
)
from mtl_perception.errors import UserError
from mtl_perception.training.config import LossConfig, TeacherConfig, TrainConfig
from mtl_perception.training.evaluation import evaluate_model
from mtl_perception.training.trainer import BEST_NAME, FINAL_NAME, Trainer

log = logging.getLogger(__name__)

FAR_RATIO = 0.95  # predicted depth >= FAR_RATIO * max_depth is written as "far"
TARGET_METRIC = {"semantic": ("miou", "max"), "depth": ("abs_rel", "min")}


def teacher_loss(loss: LossConfig, target: str) -> LossConfig:
    """The loss weights with every term of the non-target task at 0: a teacher learns its target only
    (its guidance is the other task's label, so learning to predict it would be no test of anything)."""
    if target == "semantic":
        return dataclasses.replace(loss, depth=0.0, depth_nll=0.0, disparity=0.0, disparity_nll=0.0)
    return dataclasses.replace(loss, semantic_ce=0.0, semantic_lovasz=0.0, coarse_semantic_ce=0.0)


def teacher_train_config(config: TrainConfig) -> TrainConfig:
    """The config the teacher trains under: frames with both labels only, target-only loss,
    best.pt chosen by the target's metric."""
    if config.model.get("mode") != "mono":
        raise UserError("a pseudo-label teacher is a mono network: set model.mode: mono")
    if config.data.pseudo_labels is not None:
        raise UserError("a teacher trains on real labels only: leave data.pseudo_labels unset in its config")
    target = config.teacher.target
    metric, mode = TARGET_METRIC[target]
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, require_all_labels=True),
        loss=teacher_loss(config.loss, target),
        checkpoints=dataclasses.replace(config.checkpoints, best_metric=metric, best_mode=mode),
    )


class TeacherTrainer(Trainer):
    """The ``Trainer`` with a ``GuidedTeacherNet``: its guidance map is built from each batch."""

    def __init__(self, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(teacher_train_config(config), **kwargs)

    def _build_network(self) -> nn.Module:
        from mtl_perception.networks.guided import GuidedTeacherNet

        teacher = self.config.teacher
        return GuidedTeacherNet(self.model_config, teacher.guidance, teacher.guidance_channels)  # type: ignore[arg-type]

    def _inputs(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        return teacher_inputs(self.model, batch, self.world.device)

    def _model_meta(self) -> dict[str, Any]:
        from mtl_perception.networks.guided import teacher_meta

        teacher = self.config.teacher
        return teacher_meta(self.model, teacher.target, teacher.guidance_channels)  # type: ignore[arg-type]

    def validate(self) -> dict[str, Any]:
        """The target's metrics on the validation split, guidance from its labels."""
        return evaluate_teacher(self.model, self.val_loader(), self.config.train.eval_batches)


def teacher_inputs(net: nn.Module, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, ...]:
    """(image,) or (image, guidance map) for a teacher from a sample batch."""
    from mtl_perception.networks.guided import guidance_map

    image = batch["left"].to(device)
    guidance = guidance_map(net.guidance, {k: _to(v, device) for k, v in batch.items()}, net.config)
    return (image,) if guidance is None else (image, guidance)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


def evaluate_teacher(net: nn.Module, batches: Any, max_batches: int | None = None) -> dict[str, Any]:
    """Metrics of a teacher over sample batches (``evaluate_model`` with the guidance map as input)."""
    return evaluate_model(
        net, False, batches, max_batches, inputs=lambda batch, device: teacher_inputs(net, batch, device)
    )


def teacher_checkpoint(config: TrainConfig) -> Path | None:
    """The trained teacher of a config: best.pt once training finished (final.pt is written then)."""
    out = Path(config.train.output_dir)
    if not (out / FINAL_NAME).is_file():
        return None
    return out / BEST_NAME if (out / BEST_NAME).is_file() else out / FINAL_NAME


def train_teacher(config: TrainConfig, max_minutes: float | None = None) -> Path | None:
    """Train (or resume) the config's teacher; its checkpoint, or None if the time budget ran out."""
    import torch.distributed as dist

    if teacher_checkpoint(config) is None:
        try:
            TeacherTrainer(config, resume=True, max_minutes=max_minutes).train()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    return teacher_checkpoint(config)


def pseudo_label_dir(config: TrainConfig) -> Path:
    return Path(config.teacher.out_dir or Path(config.train.output_dir) / "pseudo_labels")


def _shares(config: TrainConfig) -> LabelShares:
    data = config.data
    return LabelShares(data.semantic_label_share, data.depth_label_share, data.label_share_seed)


def _settings(teacher: TeacherConfig) -> dict[str, Any]:
    """The writing rule, as the manifest records it."""
    if teacher.target == "semantic":
        return {"threshold": teacher.threshold}
    return {"depth_threshold": teacher.depth_threshold, "far_ratio": FAR_RATIO}


def write_pseudo_labels(
    config: TrainConfig,
    checkpoint: str | Path,
    out_dir: str | Path,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Label every training frame that lacks the teacher's target (under the config's shares).

    Skips the work when ``out_dir`` already holds labels of this teacher (by content digest), data
    and rule; otherwise rewrites the folder, manifest last (a folder without one is unfinished).
    Returns the manifest.
    """
    from mtl_perception.data.datasets import build_dataset
    from mtl_perception.networks.guided import load_teacher

    net, meta = load_teacher(checkpoint)
    target = meta["teacher"]["target"]
    data = config.data
    dataset = apply_partial_labels(
        build_dataset(data.kind, data.root, data.train_split), data.kind, _shares(config)
    )
    teacher_info = {
        "sha256": file_digest(checkpoint),
        "guidance": net.guidance,
        "checkpoint": str(checkpoint),
    }
    manifest: dict[str, Any] = {
        "format": PSEUDO_FORMAT,
        "version": PSEUDO_VERSION,
        "target": target,
        "rule": _settings(dataclasses.replace(config.teacher, target=target)),
        "teacher": teacher_info,
        "source": source_description(dataset, data.kind) | {"root": str(data.root)},
        "label_shares": _shares(config).as_dict(),
    }
    out_dir = Path(out_dir)
    if (out_dir / PSEUDO_MANIFEST).is_file():
        old = read_pseudo_manifest(out_dir)
        same = all(old.get(k) == manifest[k] for k in ("target", "rule", "source", "label_shares"))
        if same and old["teacher"]["sha256"] == teacher_info["sha256"]:
            log.info("%s already holds these pseudo-labels; nothing to do", out_dir)
            return old
        (out_dir / PSEUDO_MANIFEST).unlink()
    for kind in ("semantic", "disparity", "depth"):
        shutil.rmtree(out_dir / kind, ignore_errors=True)

    writer = _SemanticWriter(config.teacher.threshold) if target == "semantic" else _DepthWriter(config, net)
    frames, kept = [], []
    chunk: list[tuple[str, Any, dict[str, Any]]] = []
    size = tuple(net.config.input_size)
    bar = tqdm(total=len(dataset), desc=f"pseudo-label ({target})", disable=not progress)
    plan = dataset.label_filter
    for index, record in enumerate(dataset.records):
        bar.update(1)
        if source_has_label(record, target) and not plan.lacks(record_key(record), target):
            continue  # real labels win: frames that keep theirs get no pseudo-label (not even read)
        arrays = dataset.load_arrays(index)  # the plan is applied: removed labels are gone
        if has_label(arrays, target):
            continue
        sample = to_sample(resize_stereo(arrays, size), record.sequence, record.frame, record.steering)
        chunk.append((record_key(record), arrays, sample))
        if len(chunk) == batch_size:
            kept += _label_chunk(net, writer, chunk, out_dir)
            frames += [key for key, _, _ in chunk]
            chunk = []
    if chunk:
        kept += _label_chunk(net, writer, chunk, out_dir)
        frames += [key for key, _, _ in chunk]
    bar.close()
    manifest |= {"frames": frames, "kept_pixel_share": float(np.mean(kept)) if kept else 0.0}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (PSEUDO_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out_dir / PSEUDO_MANIFEST)
    log.info("wrote %s pseudo-labels for %d frames to %s", target, len(frames), out_dir)
    return manifest


@torch.inference_mode()
def _label_chunk(
    net: nn.Module, writer: Any, chunk: list[tuple[str, Any, dict[str, Any]]], out: Path
) -> list[float]:
    """Run the teacher on a few frames and write their labels; each frame's share of kept pixels."""
    batch = default_collate([sample for _, _, sample in chunk])
    outputs = net(*teacher_inputs(net, batch, torch.device("cpu")))
    return [writer(out, key, arrays, outputs, i, batch) for i, (key, arrays, _) in enumerate(chunk)]


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise UserError(f"{path}: could not write the pseudo-label")


def _to_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """1xCxhxw -> 1xCxHxW, bilinear."""
    return (
        x
        if tuple(x.shape[-2:]) == size
        else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    )


class _SemanticWriter:
    """Top class where its softmax probability >= threshold, else 255."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, out: Path, key: str, arrays: Any, outputs: dict[str, Tensor], i: int, _: Any) -> float:
        labels, keep = semantic_pseudo_label(
            outputs["semantic_logits"][i : i + 1], arrays.size, self.threshold
        )
        _write_png(pseudo_label_path(out, "semantic", key), labels)
        return float(keep.mean())


def semantic_pseudo_label(
    logits: Tensor, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """1xCxhxw logits -> (uint8 HxW labels with 255 below ``threshold``, bool HxW kept)."""
    from mtl_perception.data.labels import IGNORE_INDEX

    probs = _to_size(logits.float(), size).softmax(dim=1)[0]
    confidence, labels = probs.max(dim=0)
    keep = (confidence >= threshold).numpy()
    labels = labels.numpy().astype(np.uint8)
    labels[~keep] = IGNORE_INDEX
    return labels, keep


class _DepthWriter:
    """Depth (and the disparity it implies) where std <= depth_threshold x depth, else unknown."""

    def __init__(self, config: TrainConfig, net: nn.Module):
        self.threshold = config.teacher.depth_threshold
        self.net_config = net.config

    def __call__(
        self, out: Path, key: str, arrays: Any, outputs: dict[str, Tensor], i: int, batch: dict[str, Any]
    ) -> float:
        from mtl_perception.networks.heads import log_scale_to_std

        cfg = self.net_config
        canonical = outputs["depth"][i : i + 1].float()  # depth for the canonical camera
        std = log_scale_to_std(outputs["depth_log_scale"][i : i + 1].float(), cfg.uncertainty_distribution)
        relative = _to_size(std / canonical, arrays.size)[0, 0]
        inverse = _to_size(1.0 / canonical, arrays.size)[
            0, 0
        ]  # interpolate inverse depth: edges stay sharp-ish
        canonical_full = 1.0 / inverse
        # Canonical -> this frame's camera (the sample's fx at input size; ratio of the full-size one).
        frame_fx = float(batch["fx"][i])
        depth = (canonical_full * frame_fx / cfg.focal_length).numpy()
        keep = (relative <= self.threshold).numpy()
        far = (canonical_full >= FAR_RATIO * cfg.max_depth).numpy()
        depth = np.where(far, np.inf, depth)
        disparity = np.where(far, 0.0, arrays.fx * arrays.baseline / np.maximum(depth, 1e-6))
        _write_png(pseudo_label_path(out, "depth", key), layout.encode_png(depth, keep, layout.DEPTH_SCALE))
        _write_png(
            pseudo_label_path(out, "disparity", key),
            layout.encode_png(disparity, keep, layout.DISPARITY_SCALE),
        )
        return float(keep.mean())
