"""Model configs (the YAML ``model:`` section): one dataclass per network, chosen by ``mode``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtl_perception.config import ConfigError, from_dict
from mtl_perception.data.labels import NUM_CLASSES

DEFAULT_BACKBONE = "efficientnet_lite0"
UNCERTAINTY_DISTRIBUTIONS = ("laplace", "gaussian")
# Every backbone level down to 1/32 is fused with exact x2 upsampling, so sizes must divide by 32.
INPUT_MULTIPLE = 32
MIN_INPUT_SIZE = 64
# The disparity cost volume is built on 1/4-resolution features.
COST_VOLUME_STRIDE = 4
# Disparity refinement runs at 1/2 resolution, then is upsampled to the input size.
REFINE_STRIDE = 2
STEREO_TASKS = ("semantic", "disparity")


@dataclass
class _NetConfig:
    """Fields and checks every network shares; ``mode`` is fixed by each subclass."""

    mode: str
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    # None: the packaged EfficientNet-Lite0 ImageNet file (default backbone only).
    pretrained_path: str | None = None
    num_classes: int = NUM_CLASSES
    input_size: tuple[int, int] = (256, 512)  # [H, W]; multiples of 32, at least 64
    # The steering embedding: the 1/32 features average-pooled onto this [rows, cols] grid.
    embedding_grid: tuple[int, int] = (2, 4)
    uncertainty_distribution: str = "laplace"
    decoder_channels: int = 64  # segmentation decoder width

    def __post_init__(self) -> None:
        mode = type(self).mode  # the subclass's default is its only valid value
        if self.mode != mode:
            raise ValueError(f"mode must be {mode!r} for {type(self).__name__}, got {self.mode!r}")
        height, width = self.input_size
        for side in (height, width):
            if side < MIN_INPUT_SIZE or side % INPUT_MULTIPLE:
                raise ValueError(
                    f"input_size {list(self.input_size)}: each side must be a multiple of "
                    f"{INPUT_MULTIPLE} and at least {MIN_INPUT_SIZE}"
                )
        if self.uncertainty_distribution not in UNCERTAINTY_DISTRIBUTIONS:
            raise ValueError(
                f"uncertainty_distribution must be one of {UNCERTAINTY_DISTRIBUTIONS}, "
                f"got {self.uncertainty_distribution!r}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        for side, cells in zip(self.input_size, self.embedding_grid, strict=True):
            if not 1 <= cells <= side // INPUT_MULTIPLE:
                raise ValueError(
                    f"embedding_grid {list(self.embedding_grid)} needs a cell per 1/32 feature at least; "
                    f"the 1/32 map of input_size {list(self.input_size)} is "
                    f"{[s // INPUT_MULTIPLE for s in self.input_size]}"
                )


@dataclass
class StereoNetConfig(_NetConfig):
    """Progressive stereo multi-task network: coarse seg -> disparity -> attention-refined seg."""

    mode: str = "stereo"
    matching_channels: int = 32  # features correlated in the cost volume
    correlation_groups: int = 8  # group-wise correlation volumes (matching_channels divides by it)
    aggregation_channels: int = 8  # width of the 3D cost aggregation (it runs on D x H/8 x W/8 voxels)
    refine_channels: int = 16  # 1/2-resolution disparity refinement width
    attention_channels: int = 16  # bottleneck of the seg/disparity attention gates
    max_disparity: int = 96  # input pixels; a multiple of 8 (twice the cost volume stride)
    # ("semantic",) or ("disparity",) build the single-task baselines from the same code.
    tasks: tuple[str, ...] = STEREO_TASKS
    # Cross-task links need both tasks; a single-task config turns them off.
    link_seg_to_disparity: bool = True  # coarse-seg features feed the disparity aggregation
    link_attention: bool = True  # refined seg gated by attention over seg + disparity features
    # Soft-argmin over the candidates within this many of the most probable one (0: over all).
    soft_argmin_radius: int = 0
    # 1/2-res pixels pick one of the matched disparities around them (networks/selection.py).
    hypothesis_selection: bool = False
    # Temperature of the pick's softmax in its uncertainty (selection.pick_log_scale), fitted after
    # training on the validation split (benchmarks/pick_temperature.py); the pick itself is an argmax.
    selection_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        tasks = tuple(self.tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(STEREO_TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {list(STEREO_TASKS)}, got {list(tasks)}")
        # Canonical order, so equal task sets give equal configs (and checkpoints compare equal).
        self.tasks = tuple(task for task in STEREO_TASKS if task in tasks)
        if len(self.tasks) < len(STEREO_TASKS):
            self.link_seg_to_disparity = self.link_attention = False
        # The cost aggregation works on 1/8 features: candidates 2 * COST_VOLUME_STRIDE apart.
        step = 2 * COST_VOLUME_STRIDE
        if self.max_disparity <= 0 or self.max_disparity % step:
            raise ValueError(f"max_disparity must be a positive multiple of {step}, got {self.max_disparity}")
        if self.correlation_groups < 1 or self.matching_channels % self.correlation_groups:
            raise ValueError(
                f"matching_channels {self.matching_channels} must be a multiple of correlation_groups "
                f"{self.correlation_groups}"
            )
        if self.max_disparity >= self.input_size[1]:
            raise ValueError(f"max_disparity {self.max_disparity} must be below the input width")
        if not self.selection_temperature > 0:
            raise ValueError(f"selection_temperature must be > 0, got {self.selection_temperature}")
        if not 0 <= self.soft_argmin_radius < self.num_disparities:
            raise ValueError(
                f"soft_argmin_radius must be in 0..{self.num_disparities - 1}, got {self.soft_argmin_radius}"
            )

    @property
    def num_disparities(self) -> int:
        """Disparity candidates in the 1/4-resolution cost volume."""
        return self.max_disparity // COST_VOLUME_STRIDE


@dataclass
class MonoNetConfig(_NetConfig):
    """Monocular multi-task network: shared encoder, segmentation and metric depth decoders."""

    mode: str = "mono"
    min_depth: float = 0.5  # meters
    max_depth: float = 80.0
    # The camera the metric depth is learned for: focal length in pixels at the input width (the
    # synthetic rig: 90 deg horizontal field of view at 512 px). The runtime scales depth by
    # fx / focal_length for another camera (DESIGN.md, Geometry).
    focal_length: float = 256.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if not self.focal_length > 0:
            raise ValueError(f"focal_length must be > 0 pixels, got {self.focal_length}")


ModelConfig = StereoNetConfig | MonoNetConfig


def model_config_from_dict(data: dict[str, Any] | None, where: str = "model") -> ModelConfig:
    """Build the config named by ``data["mode"]`` (default ``"stereo"``); unknown keys are refused."""
    data = dict(data or {})
    mode = data.get("mode", "stereo")
    config_types: dict[str, type[StereoNetConfig] | type[MonoNetConfig]] = {
        "stereo": StereoNetConfig,
        "mono": MonoNetConfig,
    }
    if mode not in config_types:
        raise ConfigError(f"{where}.mode: must be 'stereo' or 'mono', got {mode!r}")
    return from_dict(config_types[mode], data, where=where)
