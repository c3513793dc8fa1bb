"""PyTorch eager backend: a training checkpoint wrapped in the networks' DeployModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception import __version__
from mtl_perception.data.labels import class_table
from mtl_perception.errors import UserError
from mtl_perception.runtime.model_info import ModelFileError, ModelInfo, check_model_file


def describe_deploy_model(deploy: torch.nn.Module, config: Any) -> ModelInfo:
    """The ModelInfo of a DeployModel built from ``config`` (what export writes into the ONNX file)."""
    height, width = (int(v) for v in config.input_size)
    extra = {}
    if config.mode == "mono":
        extra = {"min_depth": repr(float(config.min_depth)), "max_depth": repr(float(config.max_depth))}
    return ModelInfo(
        mode=str(config.mode),
        inputs={name: (1, 3, height, width) for name in deploy.input_names},
        outputs=tuple(deploy.output_names),
        version=__version__,
        embedding_dim=int(config.embedding_dim),
        input_size=(height, width),
        max_disparity=float(getattr(config, "max_disparity", 0.0)),
        classes=tuple(class_table()[: int(config.num_classes)]),
        extra=extra,
    )


class TorchBackend:
    """Eager PyTorch inference on a checkpoint (CPU, or CUDA when present).

    channels_last is used on CUDA only, where NHWC convolution kernels are the fast path; on CPU
    this backend serves parity checks and debugging (ONNX Runtime is the fast CPU backend).
    """

    name = "torch"

    def __init__(
        self, checkpoint: str | Path, *, threads: int | None = None, device: str | None = None
    ) -> None:
        from mtl_perception.networks import DeployModel, load_checkpoint

        path = check_model_file(checkpoint, ".pt")
        try:
            model, config, _meta = load_checkpoint(path)
        except UserError:
            raise
        except Exception as exc:  # torch.load raises many types for a bad file
            raise ModelFileError(f"{path}: not a readable checkpoint ({exc}); retrain or re-save it") from exc
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        deploy = DeployModel(model).eval()
        self.info = describe_deploy_model(deploy, config)
        self._memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self._model = deploy.to(self.device, memory_format=self._memory_format)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on float32 NCHW arrays keyed by the input names."""
        tensors = [
            torch.from_numpy(np.ascontiguousarray(inputs[name], np.float32)).to(
                self.device, memory_format=self._memory_format
            )
            for name in self.info.inputs
        ]
        with torch.inference_mode():
            outputs = self._model(*tensors)
        return {name: out.cpu().numpy() for name, out in zip(self.info.outputs, outputs, strict=True)}

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]
