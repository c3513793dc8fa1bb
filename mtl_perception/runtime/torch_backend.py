"""PyTorch eager backend: a training checkpoint wrapped in the networks' DeployModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mtl_perception.errors import UserError
from mtl_perception.model_info import ModelFileError, check_model_file


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
        from mtl_perception.networks.deploy import describe_deploy_model

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
