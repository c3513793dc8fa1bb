"""Uncertainty in one pass: a deep ensemble (the teacher) distilled into one network (the student).

- ``EnsembleNet``: M trained networks of one architecture behind the interface of one, so the ensemble
  is evaluated, exported and benchmarked exactly like a single model. Its class probabilities are
  the members' mean; its disparity/depth is the members' mean with the total variance (mean predicted
  variance + variance of the members' means, the law of total variance).
- ``entropy_decomposition``: total segmentation uncertainty (entropy of the mean) = aleatoric (mean
  member entropy) + epistemic (mutual information), from the members' probabilities.
- ``write_teacher_targets`` runs the teacher once over the training frames and stores its outputs
  (class probabilities at the logits' 1/4 resolution, geometry mean and standard deviation at 1/2,
  float16), so distillation costs one training run, not M forward passes per step.
- ``TeacherTargets`` / ``NoTeacherTargets`` add those maps to the samples, brought to each sample's
  zoom and crop (``follow_region``), so the student keeps its teachers' augmentation.
- ``DistillationLoss`` trains the student towards them: KL divergence to the mean probabilities, and
  for disparity/depth the expected negative log-likelihood, under the student's predicted
  distribution, of the teacher's (moment-matched Gaussian) predictive distribution. That one term
  pulls the student's mean to the teacher's and its spread to the teacher's total spread plus its
  own distance from the teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mtl_perception.errors import UserError
from mtl_perception.networks.heads import log_scale_to_std, std_to_log_scale
from mtl_perception.training.losses import MIN_LOG_SCALE

GEOMETRY_KEYS = ("disparity", "depth")
TARGETS_MANIFEST = "teacher_targets.json"
TARGETS_FORMAT = "mtl_perception.teacher_targets"
# Stored resolutions relative to the input: the logits' native 1/4, and the 1/2 of the stereo
# refinement (finer than any detail the geometry heads resolve below it).
PROBS_STRIDE = 4
GEOMETRY_STRIDE = 2
FULL_FRAME = (0.0, 0.0, 1.0, 1.0)  # source_region of an image that shows the whole stored frame


class EnsembleNet(nn.Module):
    """Members of one config as one network: ``forward`` returns a member's training-output keys.

    ``semantic_logits`` are the log of the mean probability (their softmax is the mean); the
    geometry log scale is the one whose standard deviation (``log_scale_to_std``) is the total one.
    ``embedding`` is the first member's: a steering head is trained for one encoder.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise UserError(f"an ensemble needs at least 2 members, got {len(members)}")

        def signature(config: Any) -> tuple[Any, ...]:
            return config.mode, tuple(config.input_size), config.num_classes, config.uncertainty_distribution

        first = members[0].config
        for member in members[1:]:
            if signature(member.config) != signature(first):
                raise UserError(
                    "ensemble members must share mode, input size, classes and uncertainty distribution; "
                    f"got {signature(first)} and {signature(member.config)}"
                )
        self.members = nn.ModuleList(members)
        self.config = first
        self.SEMANTIC_LOGITS_STRIDE = members[0].SEMANTIC_LOGITS_STRIDE
        self.eval()

    def forward(self, *inputs: Tensor, upsample_semantic_logits: bool = True) -> dict[str, Tensor]:
        outs = [member(*inputs, upsample_semantic_logits=upsample_semantic_logits) for member in self.members]
        result: dict[str, Tensor] = {}
        if "semantic_logits" in outs[0]:
            probs = torch.stack([out["semantic_logits"].softmax(dim=1) for out in outs]).mean(dim=0)
            result["semantic_logits"] = probs.clamp_min(1e-12).log()
        distribution = self.config.uncertainty_distribution
        for key in GEOMETRY_KEYS:
            if key not in outs[0]:
                continue
            means = torch.stack([out[key] for out in outs])
            variances = torch.stack([log_scale_to_std(out[f"{key}_log_scale"], distribution) for out in outs])
            mean, std = total_mean_and_std(means, variances.square())
            result[key] = mean
            result[f"{key}_log_scale"] = std_to_log_scale(std, distribution)
        if "embedding" in outs[0]:
            result["embedding"] = outs[0]["embedding"]
        return result


def total_mean_and_std(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Members' means and variances (M x ...) -> the mixture's mean and standard deviation.

    Var = E[var_m] + Var[mean_m] (law of total variance): what the members expect to be wrong
    (aleatoric) plus how much they disagree (epistemic).
    """
    mean = means.mean(dim=0)
    variance = variances.mean(dim=0) + (means - mean).square().mean(dim=0)
    return mean, variance.clamp_min(1e-12).sqrt()


def entropy_decomposition(member_probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Members' class probabilities (M x N x C x ...) -> (total, aleatoric, epistemic), in nats.

    Total is the entropy of the mean; aleatoric the mean of the members' entropies; epistemic their
    difference, the mutual information between the prediction and the member (>= 0).
    """

    def entropy(p: Tensor) -> Tensor:
        return -(p * p.clamp_min(1e-12).log()).sum(dim=-member_probs.dim() + 2)

    total = entropy(member_probs.mean(dim=0))
    aleatoric = entropy(member_probs).mean(dim=0)
    return total, aleatoric, (total - aleatoric).clamp_min(0.0)


# -- teacher targets on disk ---------------------------------------------------------------------


def _target_path(directory: Path, index: int) -> Path:
    return directory / f"{index:06d}.npz"


def teacher_fingerprint(paths: list[str] | tuple[str, ...]) -> list[str]:
    """sha256 of each member checkpoint, in order: names the teacher whatever its files are called."""
    digests = []
    for path in paths:
        with Path(path).open("rb") as file:
            digests.append(hashlib.file_digest(file, "sha256").hexdigest())
    return digests


@torch.inference_mode()
def write_teacher_targets(
    teacher: nn.Module,
    dataset: Dataset,
    directory: str | Path,
    batch_size: int = 2,
    workers: int = 0,
    fingerprint: list[str] | None = None,
) -> Path:
    """Run ``teacher`` over ``dataset`` (un-augmented frames, in index order) and store its outputs.

    Each sample ``i`` gets ``<directory>/<i>.npz``; a manifest records the count and the teacher's
    ``fingerprint`` (``teacher_fingerprint`` of its members) so a stale directory is refused rather
    than silently reused. Returns the directory.
    """
    from mtl_perception.training.evaluation import model_inputs

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stereo = teacher.config.mode == "stereo"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    index = 0
    for batch in tqdm(loader, desc="teacher targets", unit="batch"):
        out = teacher(*model_inputs(batch, stereo, torch.device("cpu")), upsample_semantic_logits=False)
        maps = teacher_maps(out, teacher.config.uncertainty_distribution, teacher.SEMANTIC_LOGITS_STRIDE)
        for row in range(len(batch["left"])):
            arrays = {name: value[row].numpy().astype(np.float16) for name, value in maps.items()}
            np.savez(_target_path(directory, index), **arrays)
            index += 1
    manifest = {"format": TARGETS_FORMAT, "samples": index, "keys": sorted(maps), "teachers": fingerprint}
    (directory / TARGETS_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def teacher_maps(out: dict[str, Tensor], distribution: str, logits_stride: int) -> dict[str, Tensor]:
    """The stored targets from a teacher's outputs: ``probs`` (NxCxH/4xW/4) and, per geometry key,
    ``<key>_mean`` / ``<key>_std`` (Nx1xH/2xW/2)."""
    maps: dict[str, Tensor] = {}
    if "semantic_logits" in out:
        probs = out["semantic_logits"].softmax(dim=1)
        factor = PROBS_STRIDE // logits_stride  # logits finer than 1/4 (none of ours): pool them
        maps["probs"] = F.avg_pool2d(probs, factor) if factor > 1 else probs
    for key in GEOMETRY_KEYS:
        if key in out:
            std = log_scale_to_std(out[f"{key}_log_scale"], distribution)
            maps[f"{key}_mean"] = F.avg_pool2d(out[key], GEOMETRY_STRIDE)
            # Pool the variance, not the std: the spread inside a 2x2 cell is part of the answer there.
            mean_sq = F.avg_pool2d(out[key].square() + std.square(), GEOMETRY_STRIDE)
            maps[f"{key}_std"] = (mean_sq - maps[f"{key}_mean"].square()).clamp_min(1e-12).sqrt()
    return maps


def _kind(key: str) -> str:
    """A stored map's kind, which sets its stride and the name of its validity mask."""
    return "probs" if key == "probs" else "geometry"


STRIDES = {"probs": PROBS_STRIDE, "geometry": GEOMETRY_STRIDE}


def follow_region(
    maps: dict[str, Tensor], region: Tensor, size: tuple[int, int]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The teacher's maps of the stored frame, brought to an augmented image of ``size`` (H, W) that
    shows ``region`` of it (``source_region``: left, top, right, bottom as fractions).

    Each output pixel centre is looked up bilinearly where it lies in the stored frame. A zoom by s
    makes the scene s times larger in pixels: disparity is multiplied by s and depth, which only a
    mono network outputs and then for its canonical camera (depth x focal_length / fx, fx multiplied
    by s), divided by s; their spreads alike. Returns the maps and, per stride, where they are known
    (``valid_probs``, ``valid_geometry``: False where the image shows padding beyond the stored frame).
    """
    left, top, right, bottom = (float(v) for v in region)
    grids: dict[str, Tensor] = {}
    valid: dict[str, Tensor] = {}
    for kind in {_kind(key) for key in maps}:  # one sampling grid per stride
        height, width = max(1, size[0] // STRIDES[kind]), max(1, size[1] // STRIDES[kind])
        u = left + (right - left) * (torch.arange(width, dtype=torch.float32) + 0.5) / width
        v = top + (bottom - top) * (torch.arange(height, dtype=torch.float32) + 0.5) / height
        grids[kind] = torch.stack(torch.meshgrid(2 * u - 1, 2 * v - 1, indexing="xy"), dim=-1)[None]
        valid[f"valid_{kind}"] = ((u >= 0) & (u <= 1))[None, :] & ((v >= 0) & (v <= 1))[:, None]
    out: dict[str, Tensor] = {}
    for key, stored in maps.items():
        grid = grids[_kind(key)]
        sampled = F.grid_sample(
            stored[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )[0]
        # Pixels of the image per pixel of the stored frame, at this map's resolution.
        scale = grid.shape[2] / stored.shape[-1] / (right - left)
        if key.startswith("disparity_"):
            sampled = sampled * scale
        elif key.startswith("depth_"):
            sampled = sampled / scale
        out[key] = sampled
    return out, valid


class TeacherTargets(Dataset):
    """``dataset``'s samples with the teacher's maps (``teacher_<name>``), where they are known
    (``teacher_valid_probs`` / ``teacher_valid_geometry``) and ``has_teacher`` True.

    The maps describe the stored frame; ``follow_region`` brings them to the sample's zoom and crop
    (its ``source_region``). Colour jitter needs nothing: the student learns to answer as the teacher
    did on the clean frame.
    """

    def __init__(self, dataset: Dataset, directory: str | Path, fingerprint: list[str] | None = None):
        self.dataset = dataset
        self.directory = Path(directory)
        manifest_path = self.directory / TARGETS_MANIFEST
        if not manifest_path.is_file():
            raise UserError(f"{self.directory}: no teacher targets ({TARGETS_MANIFEST} missing)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != TARGETS_FORMAT or manifest.get("samples") != len(dataset):  # type: ignore[arg-type]
            raise UserError(
                f"{self.directory}: teacher targets for {manifest.get('samples')} samples, the dataset has "
                f"{len(dataset)}; delete the directory to recompute them"  # type: ignore[arg-type]
            )
        if fingerprint is not None and manifest.get("teachers") != fingerprint:
            raise UserError(
                f"{self.directory}: teacher targets from other teacher checkpoints than distill.teachers; "
                "delete the directory to recompute them"
            )
        self.keys = tuple(manifest["keys"])

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])  # never alter a sample the dataset may keep
        with np.load(_target_path(self.directory, index)) as stored:
            maps = {key: torch.from_numpy(stored[key].astype(np.float32)) for key in self.keys}
        # A sample without a region (one not built by data.base.to_sample) shows the whole frame.
        region = sample.get("source_region", FULL_FRAME)
        maps, valid = follow_region(maps, torch.as_tensor(region), tuple(sample["left"].shape[-2:]))
        sample.update({f"teacher_{key}": value for key, value in (maps | valid).items()})
        sample["has_teacher"] = True
        return sample


class NoTeacherTargets(Dataset):
    """Samples the teacher never saw (procedural pairs): zero maps of the right shapes, ``has_teacher``
    False, so they batch with ``TeacherTargets`` samples and the distillation terms skip them."""

    def __init__(self, dataset: Dataset, like: TeacherTargets):
        self.dataset = dataset
        with np.load(_target_path(like.directory, 0)) as stored:
            self.channels = {key: stored[key].shape[0] for key in like.keys}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])  # never alter a sample the dataset may keep
        height, width = sample["left"].shape[-2:]
        for key, channels in self.channels.items():
            kind = _kind(key)
            shape = (channels, max(1, height // STRIDES[kind]), max(1, width // STRIDES[kind]))
            sample[f"teacher_{key}"] = torch.zeros(shape)
            sample[f"teacher_valid_{kind}"] = torch.zeros(shape[1:], dtype=torch.bool)
        sample["has_teacher"] = False
        return sample


# -- the student's loss --------------------------------------------------------------------------


def expected_nll(
    mean: Tensor, log_scale: Tensor, target_mean: Tensor, target_std: Tensor, distribution: str
) -> Tensor:
    """E_y[-log p_student(y)] for y ~ N(target_mean, target_std^2), per pixel, up to a constant.

    Gaussian student (sigma = exp(log_scale)): log sigma + ((mu_t - mu)^2 + sigma_t^2) / (2 sigma^2).
    Laplace student (b = exp(log_scale)): log b + E|y - mu| / b, with E|y - mu| the folded-normal
    mean sigma_t sqrt(2/pi) exp(-delta^2 / 2 sigma_t^2) + delta erf(delta / (sigma_t sqrt 2)).
    Minimised by the student's mean at the teacher's and its spread at the teacher's.
    """
    delta = target_mean - mean
    log_scale = log_scale.clamp_min(MIN_LOG_SCALE)  # see MIN_LOG_SCALE: keeps exp(-log_scale) finite
    if distribution == "gaussian":
        return log_scale + (delta.square() + target_std.square()) * torch.exp(-2.0 * log_scale) / 2.0
    sigma = target_std.clamp_min(1e-6)
    folded = sigma * math.sqrt(2.0 / math.pi) * torch.exp(-delta.square() / (2.0 * sigma.square()))
    folded = folded + delta * torch.erf(delta / (sigma * math.sqrt(2.0)))
    return log_scale + folded * torch.exp(-log_scale)


class DistillationLoss(nn.Module):
    """Terms ``distill_kl`` (segmentation) and ``distill_nll`` (disparity or depth), averaged over the
    pixels of the samples that have teacher targets; a term whose weight is 0 is not computed."""

    def __init__(self, distribution: str, semantic_kl: float = 1.0, geometry_nll: float = 1.0):
        super().__init__()
        self.distribution = distribution
        self.semantic_kl = semantic_kl
        self.geometry_nll = geometry_nll

    def weights(self) -> dict[str, float]:
        return {"distill_kl": self.semantic_kl, "distill_nll": self.geometry_nll}

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        has = batch["has_teacher"].to(torch.bool)
        terms: dict[str, Tensor] = {}
        if self.semantic_kl > 0 and "semantic_logits" in outputs and "teacher_probs" in batch:
            target = batch["teacher_probs"][has]
            logits = outputs["semantic_logits"][has].float()
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            kl = (target * (target.clamp_min(1e-8).log() - logits.log_softmax(dim=1))).sum(dim=1)
            terms["distill_kl"] = _mean_or_zero(kl[_known(batch, "probs", has, kl.shape[-2:])], logits)
        for key in GEOMETRY_KEYS:
            if self.geometry_nll > 0 and key in outputs and f"teacher_{key}_mean" in batch:
                size = outputs[key].shape[-2:]
                target_mean, target_std = (
                    F.interpolate(
                        batch[f"teacher_{key}_{m}"][has], size=size, mode="bilinear", align_corners=False
                    )
                    for m in ("mean", "std")
                )
                nll = expected_nll(
                    outputs[key][has].float(),
                    outputs[f"{key}_log_scale"][has].float(),
                    target_mean,
                    target_std,
                    self.distribution,
                )
                known = _known(batch, "geometry", has, size)[:, None]
                terms["distill_nll"] = _mean_or_zero(nll[known], outputs[key])
        return terms


def _known(batch: dict[str, Any], kind: str, has: Tensor, size: torch.Size) -> Tensor:
    """Where the teacher's maps of ``kind`` are known (``teacher_valid_<kind>``), at ``size``, for the
    samples that have targets; everywhere if the batch does not say."""
    valid = batch.get(f"teacher_valid_{kind}")
    if valid is None:
        return torch.ones((int(has.sum()), *size), dtype=torch.bool, device=has.device)
    valid = valid[has].to(torch.float32)[:, None]
    if valid.shape[-2:] != size:
        valid = F.interpolate(valid, size=size, mode="nearest")
    return valid[:, 0] > 0.5


def _mean_or_zero(values: Tensor, like: Tensor) -> Tensor:
    """Mean of ``values``; a graph-connected zero when the batch has no teacher targets."""
    return values.mean() if values.numel() else like.sum() * 0.0
