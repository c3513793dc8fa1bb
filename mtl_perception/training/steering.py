"""Steering head training: attentive pooling over 16 frames of a frozen encoder, k-fold selected.

`mtl-perception train --config config/train/steering.yaml` runs this when the YAML has a
``steering:`` section. It encodes the driving sequences once (``steering_data``), runs k-fold
cross-validation over the training sequences (mean +- std of the held-out fold error), trains the
final head on every training sequence, scores it on the test split beside two baselines that any
learned head must beat (steer straight; steer the training mean), and saves the head. Every fold
and the final head are written as they finish, so a stopped run resumes where it was.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mtl_perception.config import ConfigError, from_dict, to_dict
from mtl_perception.errors import UserError
from mtl_perception.networks.backbone import Backbone
from mtl_perception.networks.checkpoint import load_checkpoint, save_checkpoint, save_steering_head
from mtl_perception.networks.heads import SteeringHead
from mtl_perception.training.config import apply_overrides
from mtl_perception.training.steering_data import (
    ENCODERS,
    LABELS,
    EncoderTail,
    SequenceFeatures,
    cached_features,
    dataset_digest,
    frame_period,
    window_index,
)

HEAD_FILE = "steering_head.pt"
FINETUNED_MODEL_FILE = "finetuned_model.pt"
METRICS_FILE = "metrics.json"


@dataclass
class SteeringDataConfig:
    root: str = "data/steering"  # a synthetic dataset with driving sequences (`mtl-perception generate`)
    train_split: str = "train"  # k-fold cross-validation and the final head
    test_split: str = "test"  # scored once, by the final head
    # Recorded closed-loop drives (`mtl-perception drive --record DIR`, expert labels): added to the
    # training part of every fold and to the final head's data, never validated or tested on.
    recorded: list[str] = field(default_factory=list)


@dataclass
class SteeringHeadConfig:
    window: int = 16  # frames per prediction
    width: int = 64  # token width after projection
    queries: int = 4  # learned attention queries
    hidden: int = 64  # regressor width
    dropout: float = 0.0  # on the normalised embeddings, while training


@dataclass
class SteeringOptimConfig:
    steps: int = 1500
    batch_size: int = 64  # windows per step
    lr: float = 1e-3
    encoder_lr: float = 1e-4  # multitask_finetuned only: the encoder's last step
    weight_decay: float = 0.05
    warmup_steps: int = 50
    # Windows per sampled run of consecutive windows (1: independent windows). Runs share frames,
    # which matters where each frame costs a CNN step (multitask_finetuned).
    consecutive_windows: int = 1
    # Loss weight exp(loss_lambda * |y|): the rare sharp turns count as much as the many straights.
    loss_lambda: float = 10.0


@dataclass
class SteeringConfig:
    model: str = ""  # perception checkpoint (.pt) whose encoder the head reads
    encoder: str = "multitask"  # one of steering_data.ENCODERS
    # "expert": learn the lane keeper's command at each frame (pure pursuit toward the lane centre
    # from the true pose, rebuilt from the sequence seed); "driven": the data driver's command, whose
    # wandering target the images do not show.
    labels: str = "driven"
    # True: the head sees one global average per frame instead of the model's grid (the embedding
    # before the grid, for comparison; such a head does not match the exported embedding, so it
    # is not saved for export).
    global_average: bool = False
    folds: int = 4
    seed: int = 0
    output_dir: str = "runs/steering"
    cache_dir: str = "runs/steering_cache"
    data: SteeringDataConfig = field(default_factory=SteeringDataConfig)
    head: SteeringHeadConfig = field(default_factory=SteeringHeadConfig)
    optim: SteeringOptimConfig = field(default_factory=SteeringOptimConfig)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: the perception checkpoint (.pt) whose encoder the head reads")
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {self.labels!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.head.window < 1 or self.optim.steps < 1 or self.optim.batch_size < 1:
            raise ValueError("head.window, optim.steps and optim.batch_size must be positive")


def is_steering_config(data: Any) -> bool:
    """A training YAML with a top-level ``steering:`` section trains a steering head."""
    return isinstance(data, dict) and "steering" in data


def steering_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> SteeringConfig:
    data = apply_overrides(dict(data), overrides or [])
    unknown = sorted(set(data) - {"steering"})
    if unknown:
        raise ConfigError(f"a steering config holds only a 'steering:' section, also found {unknown}")
    return from_dict(SteeringConfig, data["steering"], where="steering")


@dataclass
class Fit:
    """A trained head (and, fine-tuned, its encoder tail) with its training loss curve."""

    head: SteeringHead
    tail: EncoderTail
    losses: list[float]


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, loss_lambda: float) -> torch.Tensor:
    """mean(exp(lambda * |y|) * (prediction - y)^2)."""
    return (torch.exp(loss_lambda * target.abs()) * (prediction - target) ** 2).mean()


def _batch(
    sequences: list[SequenceFeatures], windows: np.ndarray, window: int, tail: EncoderTail
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x T x D embeddings, N labels) of the windows (sequence, last frame).

    Each distinct frame goes through ``tail`` once: overlapping windows share frames, and a
    fine-tuned tail is a CNN step per frame.
    """
    offsets = np.arange(1 - window, 1)
    frame_ids = np.stack([np.repeat(windows[:, 0], window), (windows[:, 1:2] + offsets).ravel()], axis=1)
    unique, inverse = np.unique(frame_ids, axis=0, return_inverse=True)
    frames = np.stack([sequences[s].features[f] for s, f in unique])
    embeddings = tail(torch.from_numpy(frames.astype(np.float32)))[torch.from_numpy(inverse.ravel())]
    embeddings = embeddings.reshape(len(windows), window, -1)
    labels = torch.tensor([sequences[s].steering[end] for s, end in windows], dtype=torch.float32)
    return embeddings, labels


def fit_head(
    sequences: list[SequenceFeatures],
    head: SteeringHead,
    tail: EncoderTail,
    optim: SteeringOptimConfig,
    seed: int,
    desc: str,
) -> Fit:
    """Train ``head`` (and ``tail``'s trainable part) on random windows of ``sequences``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    windows = window_index(sequences, head.window)
    run = optim.consecutive_windows
    last_frame = np.array([len(s.steering) - 1 for s in sequences])
    groups = [{"params": list(head.parameters()), "lr": optim.lr}]
    tail_params = [p for p in tail.parameters() if p.requires_grad]
    if tail_params:
        groups.append({"params": tail_params, "lr": optim.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    head.train()
    tail.train()
    losses = []
    for _ in tqdm(range(optim.steps), desc=desc, unit="step", leave=False):
        starts = windows[rng.integers(0, len(windows), max(1, optim.batch_size // run))]
        # Runs of consecutive windows (clamped at the sequence end) share most of their frames.
        ends = np.minimum(starts[:, 1:2] + np.arange(run), last_frame[starts[:, 0]][:, None])
        picked = np.stack([np.repeat(starts[:, 0], run), ends.ravel()], axis=1)
        embeddings, labels = _batch(sequences, picked, head.window, tail)
        loss = weighted_mse(head(embeddings), labels, optim.loss_lambda)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return Fit(head=head.eval(), tail=tail.eval(), losses=losses)


@torch.no_grad()
def predict(
    fit: Fit, sequences: list[SequenceFeatures], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) in radians for every full window of ``sequences``."""
    windows = window_index(sequences, fit.head.window)
    predictions, labels = [], []
    for start in range(0, len(windows), batch_size):
        embeddings, y = _batch(sequences, windows[start : start + batch_size], fit.head.window, fit.tail)
        predictions.append(fit.head(embeddings).numpy())
        labels.append(y.numpy())
    return np.concatenate(predictions), np.concatenate(labels)


def steering_errors(prediction: np.ndarray, target: np.ndarray, loss_lambda: float) -> dict[str, float]:
    """MSE in deg^2 and RMSE in deg of the front-wheel angle, and the training loss's weighted MSE."""
    error_deg = np.degrees(prediction - target)
    weights = np.exp(loss_lambda * np.abs(target))
    return {
        "mse_deg2": float(np.mean(error_deg**2)),
        "rmse_deg": float(np.sqrt(np.mean(error_deg**2))),
        "weighted_mse_deg2": float(np.mean(weights * error_deg**2)),
        "windows": len(target),
    }


class SteeringTrainer:
    """Builds the encoder of ``config.encoder``, caches its features, then runs folds and the final fit."""

    def __init__(self, config: SteeringConfig):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        model, model_config, _ = load_checkpoint(config.model)
        if not hasattr(model, "embedding_dim") or model.embedding_dim == 0:
            raise UserError(f"{config.model}: this model has no embedding (no 1/32 stage) to steer from")
        self.model_config = model_config
        self.grid = tuple(model_config.embedding_grid)
        backbone = model.backbone
        if config.encoder == "imagenet":
            backbone = Backbone(
                model_config.backbone, pretrained=True, pretrained_path=model_config.pretrained_path
            )
        backbone.requires_grad_(False)
        self.backbone = backbone.eval()
        self.channels = backbone.channels[-1]
        root = Path(config.data.root)
        cache = Path(config.cache_dir)
        size = tuple(model_config.input_size)
        self.train, self.test = (
            cached_features(backbone, config.encoder, root, split, size, self.grid, cache, config.labels)
            for split in (config.data.train_split, config.data.test_split)
        )
        self.recorded = [
            sequence
            for recorded in config.data.recorded
            for sequence in cached_features(
                backbone, config.encoder, Path(recorded), "train", size, self.grid, cache, config.labels
            )
        ]
        if len(self.train) < config.folds:
            raise UserError(
                f"{len(self.train)} training sequences cannot make {config.folds} folds; lower steering.folds"
            )

    def new_fit_parts(self) -> tuple[SteeringHead, EncoderTail]:
        """A fresh head and encoder tail (a fresh copy of the 1/32 stage for the fine-tuned variant)."""
        head_config = self.config.head
        rows, cols = self.grid
        head = SteeringHead(
            self.channels * (1 if self.config.global_average else rows * cols),
            window=head_config.window,
            width=head_config.width,
            queries=head_config.queries,
            hidden=head_config.hidden,
            dropout=head_config.dropout,
        )
        if self.config.encoder != "multitask_finetuned":
            return head, EncoderTail(None, self.grid, self.config.global_average)
        backbone = load_checkpoint(self.config.model)[0].backbone
        backbone.requires_grad_(False)
        backbone.deepest_step.requires_grad_(True)
        return head, EncoderTail(backbone, self.grid, self.config.global_average)

    def _fingerprint(self) -> dict[str, Any]:
        """What a stored result depends on: a fold file from another config, or from other data under
        the same root (regenerated with more drives), is not reused."""
        config = to_dict(self.config)
        for name in ("output_dir", "cache_dir"):
            config.pop(name)
        recorded = [dataset_digest(Path(root)) for root in self.config.data.recorded]
        return config | {"dataset": dataset_digest(Path(self.config.data.root)), "recorded": recorded}

    def run_fold(self, fold: int) -> dict[str, Any]:
        path = self.output_dir / "folds" / f"fold_{fold}.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("config") == self._fingerprint():
                return stored
        held_out = set(np.array_split(np.arange(len(self.train)), self.config.folds)[fold].tolist())
        train = [s for i, s in enumerate(self.train) if i not in held_out] + self.recorded
        val = [s for i, s in enumerate(self.train) if i in held_out]
        head, tail = self.new_fit_parts()
        desc = f"fold {fold + 1}/{self.config.folds}"
        fit = fit_head(train, head, tail, self.config.optim, self.config.seed + fold, desc)
        result = {
            "config": self._fingerprint(),
            "fold": fold,
            "val_sequences": [s.name for s in val],
            "val": steering_errors(*predict(fit, val), self.config.optim.loss_lambda),
            "final_train_loss": float(np.mean(fit.losses[-50:])),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def run_final(self) -> tuple[Fit, dict[str, Any]]:
        head, tail = self.new_fit_parts()
        data = self.train + self.recorded
        fit = fit_head(data, head, tail, self.config.optim, self.config.seed, "final head")
        loss_lambda = self.config.optim.loss_lambda
        prediction, target = predict(fit, self.test)
        train_mean = float(np.mean(np.concatenate([s.steering for s in self.train])))
        return fit, {
            "test": steering_errors(prediction, target, loss_lambda),
            "baselines": {
                "straight": steering_errors(np.zeros_like(target), target, loss_lambda),
                "train_mean": steering_errors(np.full_like(target, train_mean), target, loss_lambda),
            },
            "final_train_loss": float(np.mean(fit.losses[-50:])),
        }


def summarise_folds(folds: list[dict[str, Any]]) -> dict[str, float]:
    mse = np.array([f["val"]["mse_deg2"] for f in folds])
    return {"mse_deg2_mean": float(mse.mean()), "mse_deg2_std": float(mse.std(ddof=1)), "folds": len(folds)}


def run_steering_training(config: SteeringConfig) -> dict[str, Any]:
    """Folds, final head, test scores; writes ``metrics.json`` and ``steering_head.pt``."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    trainer = SteeringTrainer(config)
    folds = [trainer.run_fold(fold) for fold in range(config.folds)]
    fit, final = trainer.run_final()
    metrics = {
        "encoder": config.encoder,
        "model": config.model,
        "cross_validation": summarise_folds(folds),
        **final,
        "scale": {
            "input_size": list(trainer.model_config.input_size),
            "embedding_grid": list(trainer.grid),
            "train_sequences": len(trainer.train),
            "train_frames": int(sum(len(s.steering) for s in trainer.train)),
            "recorded_sequences": len(trainer.recorded),
            "recorded_frames": int(sum(len(s.steering) for s in trainer.recorded)),
            "test_sequences": len(trainer.test),
            "test_frames": int(sum(len(s.steering) for s in trainer.test)),
            "steps": config.optim.steps,
            "batch_size": config.optim.batch_size,
        },
        "config": to_dict(config),
        "dataset": dataset_digest(Path(config.data.root)),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    output = Path(config.output_dir)
    if not config.global_average:
        # A head only runs beside the encoder it was trained on: the shipped model for "multitask";
        # for the fine-tuned variant a copy of that model with its trained last step, written here
        # (its segmentation and disparity read the changed 1/32 features too: a steering experiment,
        # not a model to ship). The ImageNet encoder is no perception model, so its head stays here.
        meta = {
            "encoder": config.encoder,
            "perception_model": config.model,
            "test": final["test"],
            # The runtime feeds the head frames this far apart (Pipeline), whatever the camera's rate.
            "frame_period": frame_period(Path(config.data.root)),
        }
        if config.encoder == "multitask_finetuned":
            model, model_config, _ = load_checkpoint(config.model)
            model.backbone.load_state_dict(fit.tail.backbone.state_dict())
            path = save_checkpoint(output / FINETUNED_MODEL_FILE, model, model_config, **meta)
            meta["perception_model"] = str(path)
        if config.encoder != "imagenet":
            save_steering_head(output / HEAD_FILE, fit.head, **meta)
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def format_steering_metrics(metrics: dict[str, Any]) -> str:
    cv, test, base = metrics["cross_validation"], metrics["test"], metrics["baselines"]
    return "\n".join(
        [
            f"encoder {metrics['encoder']}: k-fold val MSE {cv['mse_deg2_mean']:.2f} "
            f"+- {cv['mse_deg2_std']:.2f} deg^2 ({cv['folds']} folds)",
            f"test MSE {test['mse_deg2']:.2f} deg^2 (RMSE {test['rmse_deg']:.2f} deg, "
            f"{test['windows']} windows); steer straight {base['straight']['mse_deg2']:.2f}, "
            f"train mean {base['train_mean']['mse_deg2']:.2f}",
        ]
    )
