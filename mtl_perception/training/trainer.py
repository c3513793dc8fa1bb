"""The training loop: seeded, resumable, time-boxed, single process or DDP under ``torchrun``.

Data order is a pure function of (seed, epoch): each epoch's index list comes from a
``DistributedSampler`` (also with one process) and a resumed run skips the batches already done,
so together with the saved RNG states a resumed run repeats the uninterrupted one step for step
with ``workers: 0``. Worker processes are seeded per (seed, rank, first step of their loader): with
``workers > 0`` a resumed run is reproducible but draws other augmentations than an unbroken one.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mtl_perception.config import to_dict
from mtl_perception.errors import UserError
from mtl_perception.training import state as state_io
from mtl_perception.training.config import TrainConfig
from mtl_perception.training.distill import DistillationLoss, NoTeacherTargets, TeacherTargets
from mtl_perception.training.evaluation import evaluate_model, flat_scalars, model_inputs
from mtl_perception.training.losses import MultiTaskLoss
from mtl_perception.training.optim import build_optimizer, build_scheduler, freeze_except
from mtl_perception.training.panels import add_panel, panel

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"
FINAL_NAME = "final.pt"


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (world 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Distributed(rank=rank, world_size=world_size, device=device)


def _collective_any(flag: bool, world: Distributed) -> bool:
    """True on every rank if any rank says True (so all ranks stop at the same step)."""
    if world.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class Trainer:
    """Builds model, data, loss and optimiser from a ``TrainConfig`` and runs ``train()``.

    ``train_set`` / ``val_set`` replace the datasets named in the config (tests, custom data).
    Outputs in ``train.output_dir``: ``checkpoints/step_*.pt`` (resumable state), ``best.pt`` and
    ``final.pt`` (networks' ``save_checkpoint`` format, what export and the runtime load), ``tb/``.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        resume: bool = False,
        max_minutes: float | None = None,
    ) -> None:
        from mtl_perception.networks import model_config_from_dict

        self.config = config
        self.world = setup_distributed()
        self.output_dir = Path(config.train.output_dir)
        self.max_seconds = None if max_minutes is None else max_minutes * 60.0
        self.model_config = model_config_from_dict(config.model)
        self.stereo = self.model_config.mode == "stereo"

        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        self.model = self._build_network().to(self.world.device)
        self.model.backbone.freeze(config.optim.frozen_backbone_levels)
        self.frozen_modules = (
            freeze_except(self.model, config.optim.trainable) if config.optim.trainable else []
        )
        self.ddp: nn.Module = self.model
        if self.world.world_size > 1:
            ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            # Unused parameters allowed: a config may switch off a loss whose head then gets no
            # gradient. static_graph=True would be cheaper but left the ranks' weights apart in the
            # 2-process test.
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        # Different augmentation per rank, reproducible per (seed, rank).
        torch.manual_seed(config.train.seed + 1000 * (self.world.rank + 1))

        if train_set is not None and config.distill.teachers:
            train_set = self._with_teacher_targets(train_set, plain=train_set)
        self.train_set = (
            train_set if train_set is not None else self._dataset(config.data.train_split, train=True)
        )
        self.val_set = val_set if val_set is not None else self._dataset(config.data.val_split, train=False)
        self.steps_per_epoch = len(self._epoch_indices(0)) // config.data.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(
                f"train split has fewer samples per process than data.batch_size={config.data.batch_size}; "
                "lower the batch size or add data"
            )
        self.total_steps = config.train.max_steps
        if config.train.epochs is not None:
            self.total_steps = min(self.total_steps, config.train.epochs * self.steps_per_epoch)

        self.loss_fn = MultiTaskLoss(
            config.loss,
            getattr(self.model_config, "max_disparity", 0.0),
            self.model_config.uncertainty_distribution,
            max_depth=getattr(self.model_config, "max_depth", 80.0),  # far depth targets clamp here
            focal_length=getattr(self.model_config, "focal_length", None),  # mono: canonical camera
        )
        self.distill_loss = (
            DistillationLoss(
                self.model_config.uncertainty_distribution,
                config.distill.semantic_kl,
                config.distill.geometry_nll,
            )
            if config.distill.teachers
            else None
        )
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.total_steps)
        self.amp = config.train.amp and self.world.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.best_value: float | None = None
        self.loss_history: list[float] = []  # total loss of each step run by this process
        self._stop_requested = False
        if config.train.init_checkpoint and not (resume and state_io.latest_state(self.output_dir)):
            self._load_initial_weights(config.train.init_checkpoint)
        if resume:
            self._resume()

    def _build_network(self) -> nn.Module:
        """The network this run trains (a subclass may train another, e.g. a pseudo-label teacher)."""
        from mtl_perception.networks import build_model

        return build_model(self.model_config)

    def _model_meta(self) -> dict[str, Any]:
        """Extra plain-data metadata for best.pt / final.pt (a subclass's network description)."""
        return {}

    def _inputs(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        """The network's positional inputs from a batch on the device."""
        return model_inputs(batch, self.stereo, self.world.device)

    # -- data --------------------------------------------------------------------------------------

    def _dataset(self, split: str, train: bool) -> Dataset:
        from mtl_perception.data.datasets import build_dataset
        from mtl_perception.data.procedural import PROCEDURAL_KIND

        data = self.config.data
        if data.kind == PROCEDURAL_KIND:
            if data.partial_labels:
                raise UserError(
                    "procedural pairs have no label shares or pseudo-labels; leave data.*_label_* unset"
                )
            return self._procedural(self.config.train.max_steps * data.batch_size if train else None)
        if not train:
            return build_dataset(data.kind, data.root, split, eval_size=tuple(self.model_config.input_size))
        dataset = build_dataset(data.kind, data.root, split, augment=data.augmentation)
        if data.partial_labels:
            dataset = self._partial_labels(dataset)
        if self.config.distill.teachers:
            size = tuple(self.model_config.input_size)
            dataset = self._with_teacher_targets(
                dataset, plain=build_dataset(data.kind, data.root, split, eval_size=size)
            )
        # Each extra source gets its share of the whole: len(dataset) is the rest's share.
        per_share = len(dataset) / (1.0 - data.procedural_share - data.mix_share)  # type: ignore[arg-type]
        extras: list[Dataset] = []
        if data.procedural_share > 0:
            extras.append(self._procedural(max(1, round(per_share * data.procedural_share))))
        if data.mix_share > 0:
            extras.append(self._mixed_in(split, max(1, round(per_share * data.mix_share))))
        if not extras:
            return dataset
        if isinstance(dataset, TeacherTargets):
            extras = [NoTeacherTargets(extra, like=dataset) for extra in extras]
        return ConcatDataset([dataset, *extras])

    def _mixed_in(self, split: str, length: int) -> Dataset:
        """``length`` samples of ``data.mix_root``'s training split (cycled), augmented like the data."""
        from mtl_perception.data.datasets import build_dataset

        data = self.config.data
        assert data.mix_root is not None
        mixed = build_dataset(data.kind, data.mix_root, split, augment=data.augmentation)
        return Subset(mixed, [index % len(mixed) for index in range(length)])

    def _partial_labels(self, dataset: Dataset) -> Dataset:
        """The training split under the config's label shares / both-labels filter / pseudo-labels."""
        from mtl_perception.data.partial_labels import LabelShares, apply_partial_labels

        data = self.config.data
        shares = LabelShares(data.semantic_label_share, data.depth_label_share, data.label_share_seed)
        dataset = apply_partial_labels(
            dataset,  # type: ignore[arg-type]
            data.kind,
            shares,
            require_all_labels=data.require_all_labels,
            pseudo_labels=data.pseudo_labels,
            teacher=data.pseudo_label_teacher,
        )
        if self.world.is_main:
            plan = dataset.label_filter  # type: ignore[attr-defined]
            log.info(
                "partial labels: %d training frames; %d without real semantics, %d without real depth%s",
                len(dataset),  # type: ignore[arg-type]
                len(plan.drop_semantic),
                len(plan.drop_depth),
                f"; pseudo {plan.pseudo.target} labels for {len(plan.pseudo.frames)}" if plan.pseudo else "",
            )
        return dataset

    def _with_teacher_targets(self, dataset: Dataset, plain: Dataset) -> TeacherTargets:
        """``dataset`` with the ensemble teacher's outputs on ``plain`` (the same samples, un-augmented),
        computed once into ``distill.targets_dir`` by the main process."""
        from mtl_perception.networks import load_checkpoint
        from mtl_perception.training.distill import (
            TARGETS_MANIFEST,
            EnsembleNet,
            teacher_fingerprint,
            write_teacher_targets,
        )

        size = tuple(self.model_config.input_size)
        cfg = self.config.distill
        directory = Path(cfg.targets_dir) if cfg.targets_dir else self.output_dir / "teacher_targets"
        fingerprint = teacher_fingerprint(cfg.teachers)
        if self.world.is_main and not (directory / TARGETS_MANIFEST).is_file():
            teacher = EnsembleNet([load_checkpoint(path)[0] for path in cfg.teachers])
            if teacher.config.mode != self.model_config.mode or tuple(teacher.config.input_size) != size:
                raise UserError(
                    f"distill.teachers are {teacher.config.mode} models at {teacher.config.input_size}; "
                    f"the student is {self.model_config.mode} at {list(size)}"
                )
            log.info("computing the teacher's targets (%d members) into %s", len(cfg.teachers), directory)
            batch = self.config.data.batch_size
            write_teacher_targets(teacher, plain, directory, batch, fingerprint=fingerprint)
        if self.world.world_size > 1:
            dist.barrier()
        return TeacherTargets(dataset, directory, fingerprint)

    def _procedural(self, length: int | None) -> Dataset:
        """Procedural layered pairs at the model's input size: ``length`` fresh ones for training
        (augmented like the data), or None for the fixed validation pairs."""
        from mtl_perception.data.procedural import ProceduralConfig, ProceduralStereoDataset

        if not self.stereo:
            raise UserError("procedural stereo pairs train stereo models only; set data.procedural_share: 0")
        # Up to just below the model's range; a zoom may push some pixels beyond it, where the
        # loss does not supervise.
        config = ProceduralConfig(
            size=tuple(self.model_config.input_size),
            max_disparity=0.97 * self.model_config.max_disparity,
            camouflage_probability=self.config.data.procedural_camouflage,
        )
        if length is None:
            return ProceduralStereoDataset(
                self.config.data.procedural_val_pairs, config, seed=self.config.train.seed
            )
        return ProceduralStereoDataset(length, config, augment=self.config.data.augmentation)

    def _epoch_indices(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(
            self.train_set,  # type: ignore[arg-type]
            num_replicas=self.world.world_size,
            rank=self.world.rank,
            shuffle=True,
            seed=self.config.train.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def _loader(self, dataset: Dataset, indices: list[int] | None, first_step: int) -> DataLoader:
        # A private generator: creating a loader iterator must not consume the global RNG, or a
        # resumed run (which creates one mid-epoch) would drift from the uninterrupted one. Seeded
        # per (seed, rank, first step) so worker processes draw new augmentations every epoch.
        seed = self.config.train.seed + 7919 * self.world.rank + 104729 * first_step
        generator = torch.Generator().manual_seed(seed)
        workers = self.config.data.workers
        return DataLoader(
            dataset,
            batch_size=self.config.data.batch_size,
            sampler=indices,
            drop_last=indices is not None,
            num_workers=workers,
            pin_memory=self.world.device.type == "cuda",
            generator=generator,
        )

    def val_loader(self) -> DataLoader:
        """Validation batches in split order."""
        return self._loader(self.val_set, None, first_step=0)

    # -- checkpoints -------------------------------------------------------------------------------

    def _gather_rng(self) -> list[dict[str, Any]]:
        rng = state_io.capture_rng()
        if self.world.world_size == 1:
            return [rng]
        gathered: list[Any] = [None] * self.world.world_size
        dist.all_gather_object(gathered, rng)
        return gathered

    def save_state(self) -> Path | None:
        """Write the resumable training state (rank 0; every rank must call it: RNG is gathered)."""
        rng = self._gather_rng()
        if not self.world.is_main:
            return None
        path = state_io.state_path(self.output_dir, self.step)
        state_io.atomic_save(
            {
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_value": self.best_value,
                "rng": rng,
                "world_size": self.world.world_size,
                "config": to_dict(self.config),
            },
            path,
        )
        state_io.prune_states(self.output_dir, self.config.checkpoints.keep_last)
        return path

    def _load_initial_weights(self, path: str) -> None:
        from mtl_perception.networks import load_checkpoint

        model, _, _ = load_checkpoint(path, map_location="cpu")
        try:
            # Modules this run's model section adds (e.g. hypothesis selection) start fresh; anything
            # else that does not fit is an error.
            missing, unexpected = self.model.load_state_dict(model.state_dict(), strict=False)
        except RuntimeError as exc:
            raise UserError(
                f"train.init_checkpoint {path}: weights do not fit this run's model section ({exc})"
            ) from exc
        if unexpected:
            raise UserError(
                f"train.init_checkpoint {path}: weights for modules this run's model section lacks: "
                f"{', '.join(sorted(unexpected)[:5])}"
            )
        if self.world.is_main:
            log.info("initial weights from %s", path)
            if missing:
                fresh = sorted({name.rsplit(".", 2)[0] for name in missing})
                log.info("not in %s, initialised fresh: %s", path, ", ".join(fresh))

    def _resume(self) -> None:
        path = state_io.latest_state(self.output_dir)
        if path is None:
            log.info("--resume: no training state in %s yet; starting from scratch", self.output_dir)
            return
        saved = state_io.load_state(path)
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as exc:
            raise UserError(
                f"{path}: weights do not fit the configured model ({exc}); check the model section"
            ) from exc
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.step = int(saved["step"])
        self.best_value = saved["best_value"]
        if saved["world_size"] == self.world.world_size:
            state_io.restore_rng(saved["rng"][self.world.rank])
        else:  # different process count: exact replay is impossible, stay reproducible
            torch.manual_seed(self.config.train.seed + 1000 * (self.world.rank + 1) + self.step)
        if self.world.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    def _save_model(self, name: str, metrics: dict[str, Any] | None = None) -> None:
        from mtl_perception.networks import save_checkpoint

        meta = {
            "step": self.step,
            "data_kind": self.config.data.kind,
            "train_config": to_dict(self.config),
            "metrics": flat_scalars(metrics or {}),
        } | self._model_meta()
        save_checkpoint(self.output_dir / name, self.model, self.model_config, **meta)

    # -- loop --------------------------------------------------------------------------------------

    def _train_step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, float]]:
        self.ddp.train()
        for module in self.frozen_modules:
            module.eval()
        device = self.world.device
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            outputs = self.ddp(*self._inputs(batch))
        total, terms = self.loss_fn(outputs, batch)
        if self.distill_loss is not None:
            distilled = self.distill_loss(outputs, batch)
            weights = self.distill_loss.weights()
            total = total + sum(weights[name] * value for name, value in distilled.items())
            terms |= distilled
        if not torch.isfinite(total):
            raise UserError(
                f"loss became {total.item()} at step {self.step}; lower optim.lr or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        losses = {"total": float(total.detach())} | {k: float(v.detach()) for k, v in terms.items()}
        return outputs, losses

    def validate(self) -> dict[str, Any]:
        """Metrics on the validation split (rank 0 computes; call on rank 0 only)."""
        return evaluate_model(self.model, self.stereo, self.val_loader(), self.config.train.eval_batches)

    def _maybe_update_best(self, metrics: dict[str, Any]) -> None:
        key = self.config.checkpoints.best_metric
        if key not in metrics:
            raise UserError(
                f"checkpoints.best_metric {key!r} not among the validation metrics {sorted(metrics)}"
            )
        value = float(metrics[key])
        if math.isnan(value):
            return
        better = self.best_value is None or (
            value > self.best_value if self.config.checkpoints.best_mode == "max" else value < self.best_value
        )
        if better:
            self.best_value = value
            self._save_model(BEST_NAME, metrics)
            log.info("step %d: new best %s = %.4f -> %s", self.step, key, value, self.output_dir / BEST_NAME)

    def _request_stop(self, signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping after this step and checkpointing (send again to kill)", signum)
        self._stop_requested = True
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

    def train(self) -> dict[str, Any]:
        """Run until ``total_steps`` or the time budget; returns the last validation metrics.

        SIGTERM/SIGINT and ``max_minutes`` stop cleanly after the current step with a saved state,
        so ``--resume`` continues where it stopped.
        """
        cfg = self.config.train
        start = time.monotonic()
        writer = SummaryWriter(self.output_dir / "tb") if self.world.is_main else None
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        metrics: dict[str, Any] = {}
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not self.world.is_main)
        try:
            while self.step < self.total_steps:
                epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
                indices = self._epoch_indices(epoch)[done_in_epoch * self.config.data.batch_size :]
                for batch in self._loader(self.train_set, indices, first_step=self.step):
                    outputs, losses = self._train_step(batch)
                    self.step += 1
                    self.loss_history.append(losses["total"])
                    bar.update(1)
                    if writer is not None:
                        self._log(writer, batch, outputs, losses, bar)
                    if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                        metrics = self._validate_and_log(writer)
                    out_of_time = self.max_seconds is not None and time.monotonic() - start > self.max_seconds
                    stop = _collective_any(self._stop_requested or out_of_time, self.world)
                    if (
                        stop
                        or self.step % self.config.checkpoints.every_steps == 0
                        or self.step == self.total_steps
                    ):
                        self.save_state()
                    if stop:
                        if self.world.is_main:
                            log.info(
                                "stopped at step %d/%d; continue with --resume", self.step, self.total_steps
                            )
                        return metrics
                    if self.step >= self.total_steps:
                        break
            if self.world.is_main:
                self._save_model(FINAL_NAME, metrics)
            return metrics
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer is not None:
                writer.close()

    def _validate_and_log(self, writer: SummaryWriter | None) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.world.is_main:
            metrics = self.validate()
            assert writer is not None
            for key, value in flat_scalars(metrics, prefix="val/").items():
                writer.add_scalar(key, value, self.step)
            self._maybe_update_best(metrics)
        if self.world.world_size > 1:
            dist.barrier()
        return metrics

    def _log(
        self,
        writer: SummaryWriter,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        losses: dict[str, float],
        bar: tqdm,
    ) -> None:
        """Rank 0's own losses (not averaged over ranks: cheap, and the trend is what matters)."""
        cfg = self.config.train
        if self.step % cfg.log_every == 0:
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value, self.step)
            writer.add_scalar("lr", self.scheduler.get_last_lr()[-1], self.step)
            bar.set_postfix(loss=f"{losses['total']:.3f}")
        if self.step % cfg.image_every == 0:
            add_panel(writer, "train/panel", panel(batch, outputs, self.stereo), self.step)


def run_training(
    config: TrainConfig, resume: bool = False, max_minutes: float | None = None
) -> dict[str, Any]:
    """Train from a config (the CLI entry); tears the process group down when it set one up."""
    try:
        trainer = Trainer(config, resume=resume, max_minutes=max_minutes)
        return trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
