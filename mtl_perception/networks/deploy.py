"""``DeployModel``: the exported interface (used by both ONNX export and the torch runtime backend)."""

from __future__ import annotations

import torch
from torch import nn

from mtl_perception import __version__
from mtl_perception.contract import MONO_INPUTS, MONO_OUTPUTS, STEREO_INPUTS, STEREO_OUTPUTS
from mtl_perception.data.labels import class_table
from mtl_perception.model_info import FOCAL_LENGTH_KEY, UNCERTAINTY_DISTRIBUTION_KEY, ModelInfo
from mtl_perception.networks.config import ModelConfig, StereoNetConfig
from mtl_perception.networks.heads import log_scale_to_std, softmax_confidence, upsample


def deploy_signature(config: ModelConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the exported graph: the contract's, less any task not built.

    A semantic-only stereo net reads the left view alone; a disparity-only one has no semantic
    outputs and no embedding (it never runs the 1/32 stage the embedding pools).
    """
    if not isinstance(config, StereoNetConfig):
        return MONO_INPUTS, MONO_OUTPUTS
    inputs = STEREO_INPUTS if "disparity" in config.tasks else STEREO_INPUTS[:1]
    dropped = set()
    if "semantic" not in config.tasks:
        dropped = {"semantic", "semantic_uncertainty", "semantic_confidence", "embedding"}
    if "disparity" not in config.tasks:
        dropped |= {"disparity", "disparity_uncertainty"}
    return inputs, tuple(name for name in STEREO_OUTPUTS if name not in dropped)


class DeployModel(nn.Module):
    """Wraps a training network; forward(*inputs) returns a tuple ordered as ``output_names``.

    ``semantic`` is int32 class ids: ONNX ArgMax yields int64, which TensorRT handles poorly as an
    engine output, so the graph casts once here and every backend sees the same dtype.
    ``*_uncertainty`` are standard deviations in output units (pixels or meters); for Laplace
    that is sqrt(2) * b. ``semantic_uncertainty`` is the normalised entropy (0..1) and
    ``semantic_confidence`` the top-class probability (what ECE and reliability diagrams bin).

    The wrapped net is asked for its semantic logits at their native resolution (1/4): the class
    ids come from the logits upsampled to the input size (full-resolution boundaries), while the
    entropy and the top-class probability are taken at 1/4 and upsampled. The logits are a bilinear x4
    upsample, so full-resolution entropy cost 16x the LogSoftmax work (the graph's largest cost
    after the convolutions). The maps differ near class boundaries only: there entropy of the
    interpolated logits peaks on a thin line between two confident 1/4-res pixels, which the
    upsampled 1/4-res entropy does not draw.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config: ModelConfig = model.config
        self.stereo = isinstance(self.config, StereoNetConfig)
        self.input_names, self.output_names = deploy_signature(self.config)
        # Inference only: a wrapper left in train mode would make torch.onnx.export restore train
        # mode on the wrapped net afterwards, silently switching BatchNorm to batch statistics.
        self.eval()

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(left, right), (left) or (image), Nx3xHxW RGB 0..1 -> outputs (each NxHxW, embedding NxD)."""
        out = self.model(*inputs, upsample_semantic_logits=False)
        results = {}
        if "semantic_logits" in out:
            logits, stride = out["semantic_logits"], self.model.SEMANTIC_LOGITS_STRIDE
            results["semantic"] = upsample(logits, stride).argmax(dim=1).to(torch.int32)
            confidence, entropy = softmax_confidence(logits, self.config.num_classes)
            results["semantic_uncertainty"] = upsample(entropy.unsqueeze(1), stride).squeeze(1)
            results["semantic_confidence"] = upsample(confidence.unsqueeze(1), stride).squeeze(1)
        for geometry in ("disparity", "depth"):
            if geometry in out:
                std = log_scale_to_std(out[f"{geometry}_log_scale"], self.config.uncertainty_distribution)
                results[geometry] = out[geometry].squeeze(1)
                results[f"{geometry}_uncertainty"] = std.squeeze(1)
        if "embedding" in out:
            results["embedding"] = out["embedding"]
        return tuple(results[name] for name in self.output_names)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs at the configured input size, for tracing and export."""
        height, width = self.config.input_size
        return tuple(torch.zeros(batch, 3, height, width) for _ in self.input_names)


def describe_deploy_model(deploy: DeployModel, config: ModelConfig) -> ModelInfo:
    """The ModelInfo of a DeployModel built from ``config`` (what export writes into the ONNX file)."""
    height, width = (int(v) for v in config.input_size)
    extra = {UNCERTAINTY_DISTRIBUTION_KEY: str(config.uncertainty_distribution)}
    if config.mode == "mono":
        extra |= {
            "min_depth": repr(float(config.min_depth)),
            "max_depth": repr(float(config.max_depth)),
            FOCAL_LENGTH_KEY: repr(float(config.focal_length)),
        }
    return ModelInfo(
        mode=str(config.mode),
        inputs={name: (1, 3, height, width) for name in deploy.input_names},
        outputs=tuple(deploy.output_names),
        version=__version__,
        embedding_dim=int(deploy.model.embedding_dim),
        input_size=(height, width),
        max_disparity=float(getattr(config, "max_disparity", 0.0)),
        classes=tuple(class_table()[: int(config.num_classes)]),
        extra=extra,
    )
