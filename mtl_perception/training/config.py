"""Training configuration: one strict YAML file -> ``TrainConfig`` (unknown keys refused).

``--set a.b=value`` overrides are applied to the raw mapping *before* validation, so they go through
exactly the same checks as the file (unknown key, wrong type, bad choice).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl_perception.config import ConfigError, from_dict, is_float_text
from mtl_perception.data.augment import AugmentConfig

SCHEDULES = ("cosine", "poly")
REGRESSION_LOSSES = ("l1", "smooth_l1")
BEST_MODES = ("max", "min")


@dataclass
class DataConfig:
    kind: str = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    batch_size: int = 2
    workers: int = 0
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    # Share of training samples that are procedural layered pairs (data/procedural.py): pairs with
    # no monocular cue, which keep a stereo net matching. kind "procedural" trains on them alone
    # (root unused; validation on fixed procedural pairs).
    procedural_share: float = 0.0
    procedural_val_pairs: int = 64
    # Share of those pairs whose layers all wear one texture look, so that only matching finds
    # their outlines (ProceduralConfig.camouflage_probability).
    procedural_camouflage: float = 0.0
    # A second dataset of the same layout mixed into training (e.g. the flying scene family,
    # `generate --family flying`): this share of the training samples comes from its train split,
    # cycled to that count. Validation and test stay on ``root``.
    mix_root: str | None = None
    mix_share: float = 0.0
    # Partly labelled training (data/partial_labels.py): the share of training frames that keep
    # their semantic / depth (+ disparity) label, a fixed subset drawn with label_share_seed (not
    # train.seed, so every variant sees the same labelled frames); the others' label is unknown.
    semantic_label_share: float = 1.0
    depth_label_share: float = 1.0
    label_share_seed: int = 0
    require_all_labels: bool = False  # train only on the frames that keep both labels
    # A folder written by `mtl-perception pseudo-label`: fills the frames that lost a label.
    pseudo_labels: str | None = None
    # Optional: the teacher checkpoint those labels must come from (checked by content digest).
    pseudo_label_teacher: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError("batch_size must be >= 1 and workers >= 0")
        for name in ("semantic_label_share", "depth_label_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.pseudo_label_teacher is not None and self.pseudo_labels is None:
            raise ValueError("pseudo_label_teacher needs pseudo_labels (the folder it checks)")
        if not 0.0 <= self.procedural_share < 1.0:
            raise ValueError(f"procedural_share must be in [0, 1), got {self.procedural_share}")
        if not 0.0 <= self.procedural_camouflage <= 1.0:
            raise ValueError(f"procedural_camouflage must be in [0, 1], got {self.procedural_camouflage}")
        if self.procedural_val_pairs < 1:
            raise ValueError("procedural_val_pairs must be >= 1")
        if not 0.0 <= self.mix_share < 1.0 or self.procedural_share + self.mix_share >= 1.0:
            raise ValueError(
                f"mix_share must be in [0, 1) and leave room for root's frames beside procedural_share, "
                f"got mix_share {self.mix_share}, procedural_share {self.procedural_share}"
            )
        if (self.mix_share > 0) != (self.mix_root is not None):
            raise ValueError("mix_root and mix_share > 0 go together (the dataset to mix in and its share)")

    @property
    def partial_labels(self) -> bool:
        """Whether any label is removed, filtered for or filled in on the training split."""
        shares = (self.semantic_label_share, self.depth_label_share)
        return min(shares) < 1.0 or self.require_all_labels or self.pseudo_labels is not None


@dataclass
class LossConfig:
    """Loss weights (0 switches a term off) and the per-term options."""

    semantic_ce: float = 1.0
    semantic_lovasz: float = 0.5
    coarse_semantic_ce: float = 0.4
    disparity: float = 1.0
    disparity_nll: float = 0.1
    # Stereo nets with hypothesis selection: the pick among the matched disparities (losses.py).
    disparity_choice: float = 1.0
    # Share of the choice loss for the pixels whose own match is wrong (losses.hypothesis_choice_loss).
    disparity_choice_balance: float = 0.3
    # Weight, within its share, of the "infinitely far" pixels (sky): a pick that gives them a near
    # disparity puts a phantom obstacle in the depth map.
    disparity_choice_far_weight: float = 1.0
    depth: float = 1.0
    depth_nll: float = 0.1
    regression: str = "smooth_l1"  # disparity regression: l1 | smooth_l1
    silog_lambda: float = 0.85  # scale-invariant log loss: 1 = fully scale invariant

    def __post_init__(self) -> None:
        if self.regression not in REGRESSION_LOSSES:
            raise ValueError(f"regression must be one of {REGRESSION_LOSSES}, got {self.regression!r}")
        if not 0.0 <= self.silog_lambda <= 1.0:
            raise ValueError("silog_lambda must be in [0, 1]")
        if not 0.0 < self.disparity_choice_balance < 1.0:
            raise ValueError("disparity_choice_balance must be in (0, 1)")
        if not self.disparity_choice_far_weight > 0:
            raise ValueError("disparity_choice_far_weight must be > 0")

    def weights(self) -> dict[str, float]:
        """Term name -> weight, for every term ``MultiTaskLoss`` can produce."""
        names = (
            "semantic_ce",
            "semantic_lovasz",
            "coarse_semantic_ce",
            "disparity",
            "disparity_nll",
            "disparity_choice",
            "depth",
            "depth_nll",
        )
        return {name: getattr(self, name) for name in names}


@dataclass
class OptimConfig:
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up from lr/warmup_steps to lr
    schedule: str = "cosine"  # decay after warm-up: cosine | poly
    poly_power: float = 0.9
    min_lr_ratio: float = 0.01  # final lr = lr * min_lr_ratio
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    backbone_lr_ratio: float = 1.0  # lr multiplier for parameters named "backbone.*" (pretrained)
    # Backbone stages kept at their pretrained values, counted in pyramid levels: 1 = everything up
    # to the 1/4 features (stem and the first two block stages), 0 = none (Backbone.freeze).
    frozen_backbone_levels: int = 0
    # Parameter-name prefixes that train (empty: all). Everything else keeps its loaded weights and
    # batch-norm statistics, so a new module can be fitted without changing what the rest computes.
    trainable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, warmup_steps and grad_clip >= 0")
        if not 0 <= self.frozen_backbone_levels <= 4:
            raise ValueError(f"frozen_backbone_levels must be in 0..4, got {self.frozen_backbone_levels}")


@dataclass
class RunConfig:
    max_steps: int = 2000  # optimiser steps (the schedule's length); epochs, if set, caps it too
    epochs: int | None = None
    eval_every: int = 250  # steps between validations (and best.pt updates)
    eval_batches: int | None = None  # cap validation batches (None = whole split)
    log_every: int = 10
    image_every: int = 250  # steps between TensorBoard image panels
    seed: int = 0
    amp: bool = True  # float16 autocast + GradScaler, used on CUDA only
    output_dir: str = "runs/stereo"
    # Weights to start from (a checkpoint of the same network, e.g. an earlier training stage's
    # best.pt); the optimiser and schedule start fresh. Ignored when --resume finds a state.
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.eval_every < 1 or self.log_every < 1 or self.image_every < 1:
            raise ValueError("max_steps, eval_every, log_every and image_every must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1 or null")


@dataclass
class CheckpointConfig:
    every_steps: int = 100  # resumable training state
    keep_last: int = 3
    best_metric: str = "score"  # a key of the validation metrics; "score" = mIoU - D1 (stereo) / - AbsRel
    best_mode: str = "max"

    def __post_init__(self) -> None:
        if self.best_mode not in BEST_MODES:
            raise ValueError(f"best_mode must be one of {BEST_MODES}")
        if self.every_steps < 1 or self.keep_last < 1:
            raise ValueError("every_steps and keep_last must be >= 1")


@dataclass
class DistillConfig:
    """Distillation from a deep-ensemble teacher (training/distill.py); no teachers = off.

    The teacher's outputs are computed once over the training split at the model's input size,
    un-augmented, into ``targets_dir`` (default ``<output_dir>/teacher_targets``); each training
    sample's zoom and crop are applied to them on the fly (``distill.follow_region``), so the student
    trains with the same augmentation as its teachers.
    """

    teachers: tuple[str, ...] = ()  # checkpoints of the ensemble members (>= 2)
    targets_dir: str | None = None
    semantic_kl: float = 1.0  # KL(teacher mean probabilities || student)
    geometry_nll: float = 1.0  # expected NLL of the teacher's predictive distribution under the student's

    def __post_init__(self) -> None:
        if len(self.teachers) == 1:
            raise ValueError("distill.teachers: an ensemble needs at least 2 member checkpoints")
        if self.semantic_kl < 0 or self.geometry_nll < 0:
            raise ValueError("distill weights must be >= 0")


GUIDANCES = ("none", "depth", "semantic")
TEACHER_TARGETS = ("semantic", "depth")


@dataclass
class TeacherConfig:
    """The pseudo-label teacher of ``mtl-perception pseudo-label`` (training/pseudo_labels.py);
    ``train`` refuses a config whose teacher reads a guidance map.

    The teacher is the mono network (``model`` section) with an optional guidance input: ``depth``
    (normalised inverse depth + validity) or ``semantic`` (one-hot classes + unknown), fused into the
    image features at every scale. It learns ``target`` only, on the frames that keep both labels,
    then labels the training frames that lack ``target``.
    """

    guidance: str = "none"  # none | depth | semantic
    target: str = "semantic"  # semantic | depth
    out_dir: str | None = None  # default <train.output_dir>/pseudo_labels
    threshold: float = 0.9  # semantic: keep pixels whose top-class probability is >= this
    # depth: keep pixels whose predicted standard deviation is <= this share of the predicted depth.
    depth_threshold: float = 0.15
    guidance_channels: int = 16  # width of the guidance branch at 1/4 (doubling per level, max 64)

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {GUIDANCES}, got {self.guidance!r}")
        if self.target not in TEACHER_TARGETS:
            raise ValueError(f"target must be one of {TEACHER_TARGETS}, got {self.target!r}")
        if self.guidance == self.target:
            raise ValueError(f"a {self.target} teacher cannot read {self.guidance} as its guidance")
        if not 0.0 < self.threshold <= 1.0 or not self.depth_threshold > 0:
            raise ValueError("threshold must be in (0, 1] and depth_threshold > 0")
        if self.guidance_channels < 1:
            raise ValueError("guidance_channels must be >= 1")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # networks' config, see model_config_from_dict
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. optim.lr=3e-4")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    # YAML 1.1 (PyYAML) reads "3e-4" as a string; on the command line it plainly means a number.
    return key.strip().split("."), float(value) if is_float_text(value) else value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted ``key=value`` pairs (values parsed as YAML) in a copy of the raw config mapping."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = _parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def train_config_from_dict(data: dict[str, Any] | None, where: str = "config") -> TrainConfig:
    """Validate a raw mapping into a ``TrainConfig`` (strict keys and types, then ranges and choices)."""
    return from_dict(TrainConfig, data, where=where)


def read_training_yaml(path: str | Path) -> Any:
    """The parsed YAML of a training config (network or steering); ConfigError if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}; see config/train/*.yaml")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``--set`` overrides, validate."""
    data = read_training_yaml(path)
    return train_config_from_dict(apply_overrides(data, overrides or []), where=Path(path).name)
