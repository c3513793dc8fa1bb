"""Self-supervised adaptation of a stereo checkpoint to unlabelled stereo rosbags (`mtl-perception adapt`).

Each step is either a *bag* step or a *labelled* step (``data.labelled_share`` of them, spread evenly):

- bag step: frames of the robot's own bags (``bag_frames``), disparity taught by reconstructing each
  view from the other (``self_supervised``: SSIM + L1, edge-aware smoothness, left-right consistency,
  occlusion and out-of-view masks) and semantics by the confident pseudo-labels of a frozen copy of
  the model as it was before adaptation (cross-entropy where its top-class probability >= 0.9);
- labelled step: the normal supervised ``MultiTaskLoss`` on the data the model was trained on (the
  checkpoint's training config names it), or procedural pairs when that data is not on this
  machine, so the model keeps what it knew.

Outputs in ``out``: ``checkpoints/step_*.pt`` (resumable, as ``train``), ``adapted.pt`` (a networks
checkpoint, loadable wherever a stereo checkpoint is; its metadata says it was adapted),
``adapted.onnx`` (exported and parity-checked as ``export`` does) and ``report.json`` / ``report.md``:
before/after self-supervised measures on the bag frames and, for bags with ground truth, the
labelled metrics of each bag replayed through the runtime pipeline.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, default_collate
from tqdm import tqdm

from mtl_perception.config import from_dict, to_dict
from mtl_perception.errors import UserError
from mtl_perception.training import state as state_io
from mtl_perception.training.bag_frames import CachedFrameDataset, FrameCache, build_cache, confident_labels
from mtl_perception.training.config import DataConfig, LossConfig, OptimConfig, apply_overrides
from mtl_perception.training.self_supervised import (
    StereoLossOptions,
    masked_mean,
    pair_disparities,
    photometric_error,
    stereo_terms,
)

ADAPTED_NAME = "adapted.pt"
ONNX_NAME = "adapted.onnx"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CACHE_DIR = "frames"
# Ground truth that gives labelled metrics (steering has no before/after meaning here).
SCORED_GROUND_TRUTH = ("semantic", "disparity", "depth")
RETRAIN_WARNING = (
    "the adapted model's encoder differs from the one it started from: a steering head "
    "(<model>.steering.onnx, trained on the old embeddings) and an INT8 calibration "
    "(`mtl-perception quantize`) made for the old model must be redone for the adapted one"
)
log = logging.getLogger(__name__)


# -- configuration ---------------------------------------------------------------------------------


@dataclass
class AdaptDataConfig:
    batch_size: int = 2
    frame_stride: int = 1  # cache every k-th frame of the bags (neighbouring frames are near copies)
    max_frames: int | None = None  # cap on cached frames
    labelled_share: float = 0.25  # share of steps on labelled batches (0: bag frames only)
    # Labelled data; None: what the checkpoint was trained on (its training config), or procedural
    # pairs when that is not on this machine.
    labelled_kind: str | None = None
    labelled_root: str | None = None
    eval_frames: int = 16  # bag frames (evenly spaced) the self-supervised before/after is measured on
    replay_frames: int | None = 200  # first frames of each bag with ground truth replayed for the report

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.frame_stride < 1 or self.eval_frames < 1:
            raise ValueError("batch_size, frame_stride and eval_frames must be >= 1")
        if not 0.0 <= self.labelled_share < 1.0:
            raise ValueError(f"labelled_share must be in [0, 1), got {self.labelled_share}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1 or null")


@dataclass
class AdaptLossConfig:
    """Weights of the bag-step terms (0 switches one off) and their options."""

    photometric: float = 1.0
    smoothness: float = 1e-3  # Monodepth2's weight
    lr_consistency: float = 1.0  # Monodepth's weight (disparity as a fraction of the width)
    pseudo_labels: float = 1.0  # cross-entropy on the frozen model's confident classes
    pseudo_label_threshold: float = 0.9  # top-class probability a pseudo-label needs
    labelled: float = 1.0  # weight of the supervised loss on labelled steps
    ssim_alpha: float = 0.85
    lr_check_pixels: float = 1.0  # the left-right check passes within max(pixels, relative * d)
    lr_check_relative: float = 0.05
    occlusion_mask: bool = True
    automask: bool = False  # see self_supervised.view_terms for why stereo leaves it off

    def __post_init__(self) -> None:
        if not 0.0 < self.pseudo_label_threshold <= 1.0:
            raise ValueError(f"pseudo_label_threshold must be in (0, 1], got {self.pseudo_label_threshold}")
        if not 0.0 <= self.ssim_alpha <= 1.0:
            raise ValueError(f"ssim_alpha must be in [0, 1], got {self.ssim_alpha}")
        weights = (self.photometric, self.smoothness, self.lr_consistency, self.pseudo_labels, self.labelled)
        if min(weights) < 0:
            raise ValueError("loss weights must be >= 0")

    def options(self) -> StereoLossOptions:
        return StereoLossOptions(
            self.ssim_alpha, self.lr_check_pixels, self.lr_check_relative, self.occlusion_mask, self.automask
        )


@dataclass
class AdaptRunConfig:
    steps: int = 500  # optimiser steps (the schedule's length)
    checkpoint_every: int = 50  # resumable state
    keep_last: int = 2
    seed: int = 0
    # Keep BatchNorm's running statistics as trained (its scale and shift still learn). Measured in
    # the README: unfrozen, they were what adaptation mostly changed (stem statistics moved 65 %)
    # and the original domain lost 2.5 points of mIoU; frozen, it lost none.
    freeze_norm_stats: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.checkpoint_every < 1 or self.keep_last < 1:
            raise ValueError("steps, checkpoint_every and keep_last must be >= 1")


def _default_optim() -> OptimConfig:
    # Fine-tuning: a tenth of training's peak lr, a short warm-up.
    return OptimConfig(lr=1e-4, warmup_steps=20)


@dataclass
class AdaptConfig:
    data: AdaptDataConfig = field(default_factory=AdaptDataConfig)
    loss: AdaptLossConfig = field(default_factory=AdaptLossConfig)
    optim: OptimConfig = field(default_factory=_default_optim)
    run: AdaptRunConfig = field(default_factory=AdaptRunConfig)


def load_adapt_config(path: str | Path | None, overrides: list[str] | None = None) -> AdaptConfig:
    """The defaults, or a YAML file (config/adapt/*.yaml), with ``--set`` overrides, validated."""
    import yaml

    data: dict[str, Any] = {}
    where = "adapt config"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"adapt config not found: {path}; see config/adapt/*.yaml")
        data = yaml.safe_load(path.read_text()) or {}
        where = path.name
    return from_dict(AdaptConfig, apply_overrides(data, overrides or []), where=where)


# -- what to adapt ---------------------------------------------------------------------------------


@dataclass
class AdaptRequest:
    """One adaptation run: the bags, the checkpoint to start from, where to write."""

    # Opened stereo bags (replay's reader, ``replay.stereo_bags.open_stereo_bags``): handed in because
    # training sits below replay in the package's layers.
    sources: list[Any]
    model: Path
    out: Path
    config: AdaptConfig = field(default_factory=AdaptConfig)
    # Labelled metrics of a checkpoint on a bag with ground truth (``replay.stereo_bags.bag_accuracy``);
    # None leaves the report's labelled part out.
    score_bag: Callable[[Any, Path, int | None], dict[str, float]] | None = None
    resume: bool = False
    max_minutes: float | None = None
    device: str | None = None


def load_stereo_checkpoint(path: Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, config, meta) of a stereo checkpoint that predicts disparity; a clear error otherwise."""
    from mtl_perception.networks import StereoNetConfig, load_checkpoint

    if path.suffix != ".pt":
        raise UserError(
            f"--model {path}: adapt fine-tunes a training checkpoint (.pt), not an exported model"
        )
    model, config, meta = load_checkpoint(path)
    if not isinstance(config, StereoNetConfig):
        raise UserError(
            f"--model {path} is a {config.mode} model; adapt learns from the stereo pair, so it needs a "
            "stereo checkpoint (e.g. models/stereo_default.pt)"
        )
    if "disparity" not in config.tasks:
        raise UserError(
            f"--model {path} predicts no disparity (tasks {list(config.tasks)}); nothing to adapt"
        )
    return model, config, meta


def labelled_dataset(config: AdaptConfig, meta: dict[str, Any], model_config: Any, samples: int) -> Dataset:
    """Labelled training samples at the model's input size: the checkpoint's training data (with its
    procedural share), else procedural pairs; an explicitly configured source must exist."""
    from mtl_perception.data.datasets import build_dataset
    from mtl_perception.data.procedural import PROCEDURAL_KIND, ProceduralConfig, ProceduralStereoDataset

    trained_on = from_dict(DataConfig, meta.get("train_config", {}).get("data"), where="checkpoint data")
    augmentation = replace(trained_on.augmentation, crop_size=tuple(model_config.input_size))
    procedural = ProceduralConfig(
        size=tuple(model_config.input_size),
        max_disparity=0.97 * model_config.max_disparity,
        camouflage_probability=trained_on.procedural_camouflage,
    )
    kind = config.data.labelled_kind or trained_on.kind
    root = config.data.labelled_root or trained_on.root
    if kind == PROCEDURAL_KIND:
        return ProceduralStereoDataset(samples, procedural, augment=augmentation)
    try:
        dataset = build_dataset(kind, root, trained_on.train_split, augment=augmentation)
    except UserError as exc:
        if config.data.labelled_kind or config.data.labelled_root:
            raise
        log.warning("labelled batches: %s; using procedural pairs instead", exc)
        return ProceduralStereoDataset(samples, procedural, augment=augmentation)
    share = trained_on.procedural_share
    if share == 0:
        return dataset
    extra = max(1, round(len(dataset) * share / (1.0 - share)))
    return ConcatDataset([dataset, ProceduralStereoDataset(extra, procedural, augment=augmentation)])


def is_labelled_step(step: int, share: float) -> bool:
    """``share`` of the steps, spread evenly (step 0 is a bag step unless share is 1)."""
    return math.floor((step + 1) * share) > math.floor(step * share)


def batch_indices(length: int, batch_size: int, batch: int, seed: int) -> list[int]:
    """Indices of the ``batch``-th batch of a shuffled, epoch-after-epoch stream over ``length`` items.

    A pure function of its arguments, so a resumed run draws the same batches; a dataset smaller
    than a batch repeats items.
    """
    if length < batch_size:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + batch)
        return torch.randint(length, (batch_size,), generator=generator).tolist()
    per_epoch = length // batch_size
    epoch, position = divmod(batch, per_epoch)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[position * batch_size : (position + 1) * batch_size].tolist()


# -- the adaptation loop ---------------------------------------------------------------------------


class Adapter:
    """Builds everything from an ``AdaptRequest``; ``adapt()`` runs the steps, ``finish()`` the outputs."""

    def __init__(self, request: AdaptRequest) -> None:
        from mtl_perception.training.losses import MultiTaskLoss
        from mtl_perception.training.optim import build_optimizer, build_scheduler

        self.request = request
        self.config = request.config
        self.out = request.out
        self.device = torch.device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.model_config, self.meta = load_stereo_checkpoint(request.model)
        self.semantic = "semantic" in self.model_config.tasks
        if not request.sources:
            raise UserError("give at least one stereo rosbag to adapt on")
        self.sources = request.sources
        self._refuse_foreign_state()
        # The teacher: the model as it was before adaptation, frozen (pseudo-labels, "before" figures).
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False).to(self.device)
        self.model.to(self.device)
        self._train_mode()
        self.cache = self._frames()
        self.bag_set = CachedFrameDataset(self.cache)
        run = self.config.run
        self.labelled_set = (
            labelled_dataset(
                self.config, self.meta, self.model_config, run.steps * self.config.data.batch_size
            )
            if self.config.data.labelled_share > 0
            else None
        )
        train_config = self.meta.get("train_config", {})
        loss_config = from_dict(LossConfig, train_config.get("loss"), where="checkpoint loss")
        self.supervised = MultiTaskLoss(
            loss_config, self.model_config.max_disparity, self.model_config.uncertainty_distribution
        )
        self.optimizer = build_optimizer(self.model, self.config.optim)
        self.scheduler = build_scheduler(self.optimizer, self.config.optim, run.steps)
        self.step = 0
        self._stop_requested = False
        torch.manual_seed(run.seed)
        if request.resume:
            self._resume()

    # -- setup --------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {
            "model": str(self.request.model.resolve()),
            "bags": [str(s.path.resolve()) for s in self.sources],
        }

    def _refuse_foreign_state(self) -> None:
        """Never mix runs: an existing state needs --resume, and --resume needs the same model and bags."""
        latest = state_io.latest_state(self.out)
        if latest is not None and not self.request.resume:
            raise UserError(
                f"{self.out} holds an adaptation in progress ({latest.name}); pass --resume to continue "
                "it or choose another --out"
            )

    def _frames(self) -> FrameCache:
        data = self.config.data
        labeller = None
        name = ""
        if self.semantic and self.config.loss.pseudo_labels > 0:
            threshold = self.config.loss.pseudo_label_threshold
            labeller = confident_labels(self.teacher, threshold, self.device)
            name = f"{self.request.model.resolve()}@{threshold}"
        return build_cache(
            self.sources,
            self.out / CACHE_DIR,
            tuple(self.model_config.input_size),
            data.frame_stride,
            data.max_frames,
            labeller,
            name,
            batch_size=data.batch_size,
        )

    def _resume(self) -> None:
        path = state_io.latest_state(self.out)
        if path is None:
            log.info("--resume: no adaptation state in %s yet; starting from the start", self.out)
            return
        saved = state_io.load_state(path)
        if saved.get("identity") != self._identity():
            raise UserError(
                f"{path} adapts {saved.get('identity')}, not {self._identity()}; choose another --out"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step = int(saved["step"])
        state_io.restore_rng(saved["rng"])
        log.info("resumed from %s at step %d", path, self.step)

    def save_state(self) -> Path:
        path = state_io.state_path(self.out, self.step)
        state_io.atomic_save(
            {
                "step": self.step,
                "identity": self._identity(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": state_io.capture_rng(),
                "config": to_dict(self.config),
            },
            path,
        )
        state_io.prune_states(self.out, self.config.run.keep_last)
        return path

    # -- steps --------------------------------------------------------------------------------------

    def _batch(self, dataset: Dataset, number: int, seed: int) -> dict[str, Any]:
        indices = batch_indices(len(dataset), self.config.data.batch_size, number, seed)  # type: ignore[arg-type]
        batch = default_collate([dataset[i] for i in indices])
        return {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def bag_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Self-supervised disparity terms and pseudo-label cross-entropy on a batch of bag frames."""
        from mtl_perception.training.losses import cross_entropy

        cfg = self.config.loss
        left, right = batch["left"], batch["right"]
        outputs, disparity_right = pair_disparities(self.model, left, right)
        terms, _ = stereo_terms(
            left, right, outputs["disparity"].float(), disparity_right.float(), cfg.options()
        )
        weights = {
            "photometric": cfg.photometric,
            "smoothness": cfg.smoothness,
            "lr_consistency": cfg.lr_consistency,
        }
        if self.semantic:
            terms["pseudo_labels"] = cross_entropy(outputs["semantic_logits"], batch["semantic"])
            weights["pseudo_labels"] = cfg.pseudo_labels
        total = torch.stack([weights[name] * value for name, value in terms.items()]).sum()
        return total, terms

    def labelled_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The supervised multi-task loss the model was trained with, on a labelled batch."""
        outputs = self.model(batch["left"], batch["right"])
        total, terms = self.supervised(outputs, batch)
        return self.config.loss.labelled * total, {f"labelled_{k}": v for k, v in terms.items()}

    def _train_mode(self) -> None:
        """Training mode, with BatchNorm in eval mode (frozen running statistics) when configured."""
        self.model.train()
        if self.config.run.freeze_norm_stats:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def train_step(self) -> dict[str, float]:
        """One optimiser step (bag or labelled, by the step number); returns the loss terms."""
        from torch.nn.utils import clip_grad_norm_

        self._train_mode()  # again each step: measuring in between leaves the model in plain train mode
        share, seed = self.config.data.labelled_share, self.config.run.seed
        labelled_steps = math.floor(self.step * share)  # labelled steps before this one
        if self.labelled_set is not None and is_labelled_step(self.step, share):
            total, terms = self.labelled_loss(self._batch(self.labelled_set, labelled_steps, seed + 1))
        else:
            total, terms = self.bag_loss(self._batch(self.bag_set, self.step - labelled_steps, seed))
        if not torch.isfinite(total):
            raise UserError(f"adapt loss became {total.item()} at step {self.step}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.optim.grad_clip > 0:
            clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"total": float(total.detach())} | {k: float(v.detach()) for k, v in terms.items()}

    def _request_stop(self, signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping after this step with a saved state (send again to kill)", signum)
        self._stop_requested = True
        signal.signal(signum, signal.SIG_DFL)

    def adapt(self) -> bool:
        """Run the remaining steps; False when stopped early (time budget, signal) with a saved state."""
        run = self.config.run
        max_seconds = None if self.request.max_minutes is None else self.request.max_minutes * 60.0
        start = time.monotonic()
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=run.steps, initial=self.step, desc="adapt", unit="step")
        try:
            while self.step < run.steps:
                losses = self.train_step()
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if k in ("total", "photometric")})
                out_of_time = max_seconds is not None and time.monotonic() - start > max_seconds
                stop = self._stop_requested or out_of_time
                if stop or self.step % run.checkpoint_every == 0 or self.step == run.steps:
                    self.save_state()
                if stop and self.step < run.steps:
                    log.info("stopped at step %d/%d; continue with --resume", self.step, run.steps)
                    return False
            return True
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -- outputs ------------------------------------------------------------------------------------

    def save_adapted(self) -> Path:
        """``adapted.pt``: the networks checkpoint format, with where it came from in its metadata."""
        from mtl_perception.networks import save_checkpoint

        meta = {key: self.meta[key] for key in ("data_kind", "train_config") if key in self.meta}
        meta |= adaptation_meta(self.request, self.sources, self.step, len(self.cache))
        return save_checkpoint(self.out / ADAPTED_NAME, self.model, self.model_config, **meta)

    def finish(self, export: bool = True) -> dict[str, Any]:
        """Write adapted.pt, adapted.onnx (when ``export``) and the before/after report."""
        self.model.eval()
        checkpoint = self.save_adapted()
        log.warning(RETRAIN_WARNING)
        onnx_path = export_adapted(checkpoint, self.out / ONNX_NAME) if export else None
        report = self.report(checkpoint)
        report["outputs"] = {
            "checkpoint": str(checkpoint),
            "onnx": None if onnx_path is None else str(onnx_path),
        }
        write_report(self.out, report)
        return report

    def report(self, checkpoint: Path) -> dict[str, Any]:
        """Before/after: self-supervised measures on evenly spaced cached frames; labelled metrics of
        each bag with ground truth, replayed through the runtime pipeline (torch backend)."""
        count = len(self.cache)
        frames = np.unique(
            np.linspace(0, count - 1, min(self.config.data.eval_frames, count)).round().astype(int)
        )
        opts = self.config.loss.options()
        report: dict[str, Any] = {
            "model": str(self.request.model),
            "bags": self.cache.manifest["bags"],
            "steps": self.step,
            "frames_cached": count,
            "self_supervised": {
                "frames": len(frames),
                "note": "measured on frames of the adaptation bags (the frames it adapted on)",
                "before": self_supervised_measures(self.teacher, self.cache, frames, opts, self.device),
                "after": self_supervised_measures(self.model, self.cache, frames, opts, self.device),
            },
            "labelled": {},
        }
        score = self.request.score_bag
        for source in self.sources if score is not None else []:
            if set(source.ground_truth) & set(SCORED_GROUND_TRUTH):
                report["labelled"][source.path.name] = {
                    name: score(source, model, self.config.data.replay_frames)
                    for name, model in (("before", self.request.model), ("after", checkpoint))
                }
        return report


def adaptation_meta(request: AdaptRequest, sources: list[Any], steps: int, frames: int) -> dict[str, Any]:
    """The checkpoint metadata that says the model was adapted, from what and on what."""
    return {
        "step": steps,
        "adapted_from": str(request.model),
        "adaptation": {
            "bags": [s.path.name for s in sources],
            "steps": steps,
            "frames": frames,
            "config": to_dict(request.config),
            "note": RETRAIN_WARNING,
        },
        "metrics": {},
    }


@torch.no_grad()
def self_supervised_measures(
    model: nn.Module, cache: FrameCache, frames: np.ndarray, opts: StereoLossOptions, device: torch.device
) -> dict[str, float]:
    """Mean photometric error of the left view's reconstruction over pixels whose match is in view
    (no occlusion mask: it depends on the model being measured), the same for disparity 0
    (the unwarped right view; a floor any matching model should beat), the mean left-right
    disagreement in pixels and the share of in-view pixels that pass the left-right check.
    Pixels are pooled over the frames."""
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(("photometric", "photometric_disparity_0", "lr_difference_px", "lr_consistent"), 0.0)
    pixels = 0.0
    try:
        for index in frames.tolist():
            left, right = (view.to(device) for view in cache.views([index]))
            outputs, disparity_right = pair_disparities(model, left, right)
            _, (view, _) = stereo_terms(
                left, right, outputs["disparity"].float(), disparity_right.float(), opts
            )
            visible = view.visible.float()
            count = float(visible.sum())
            sums["photometric"] += float(masked_mean(view.error, view.visible)) * count
            sums["photometric_disparity_0"] += (
                float(masked_mean(photometric_error(right, left, opts.ssim_alpha), view.visible)) * count
            )
            sums["lr_difference_px"] += float(masked_mean(view.lr_difference, view.visible)) * count
            sums["lr_consistent"] += float((view.consistent & view.visible).sum())
            pixels += count
    finally:
        model.train(was_training)
    return {key: value / max(pixels, 1.0) for key, value in sums.items()}


def export_adapted(checkpoint: Path, output: Path) -> Path | None:
    """Export the adapted checkpoint as ``export`` does (staged, parity-checked, then moved into place),
    with the adaptation in the ONNX metadata; None (and a warning) when parity fails."""
    import onnx

    from mtl_perception.export.onnx_export import Staging, export_deploy_model
    from mtl_perception.networks import DeployModel, load_checkpoint

    model, config, meta = load_checkpoint(checkpoint)
    with Staging() as staging:
        staged = staging.path_for(output)
        result = export_deploy_model(DeployModel(model), config, staged)
        if not result.parity.passed:
            kept = staging.reject()
            log.warning(
                "adapted.onnx not written, parity outside tolerance: %s (kept: %s)",
                result.parity.summary(),
                ", ".join(map(str, kept)),
            )
            return None
        graph = onnx.load(str(staged))
        onnx.helper.set_model_props(
            graph,
            {p.key: p.value for p in graph.metadata_props}
            | {
                "adapted_from": str(meta["adapted_from"]),
                "adapted_on": json.dumps(meta["adaptation"]["bags"]),
            },
        )
        onnx.save(graph, str(staged))
        staging.promote()
    return output


# -- report ----------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """Markdown: one before/after table of the self-supervised measures, one per bag with ground truth."""
    lines = [
        f"Adaptation of {report['model']}: {report['steps']} steps on {report['frames_cached']} frames",
        "",
    ]
    measures = report["self_supervised"]
    lines += _table(
        f"self-supervised, {measures['frames']} bag frames (lower is better; lr_consistent: higher)",
        measures["before"],
        measures["after"],
    )
    for bag, result in report["labelled"].items():
        lines += _table(f"{bag} ground truth (miou: higher is better)", result["before"], result["after"])
    if not report["labelled"]:
        lines.append("(no bag has ground truth: labelled metrics not measured)")
    return "\n".join(lines)


def _table(title: str, before: dict[str, float], after: dict[str, float]) -> list[str]:
    lines = [f"**{title}**", "", "| metric | before | after | change |", "|---|---|---|---|"]
    for key in before:
        if key in after:
            lines.append(
                f"| {key} | {before[key]:.4f} | {after[key]:.4f} | {after[key] - before[key]:+.4f} |"
            )
    return [*lines, ""]


def write_report(out: Path, report: dict[str, Any]) -> None:
    from mtl_perception.training.evaluation import json_safe

    (out / REPORT_JSON).write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
    (out / REPORT_MD).write_text(format_report(report) + "\n")


def run_adaptation(request: AdaptRequest, export: bool = True) -> dict[str, Any] | None:
    """The CLI entry: adapt, then write the outputs; None when stopped early (resume later)."""
    adapter = Adapter(request)
    if not adapter.adapt():
        return None
    return adapter.finish(export=export)
