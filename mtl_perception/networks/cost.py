"""Model cost figures for model cards: parameters and FLOPs of one deployed forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl_perception.networks.deploy import DeployModel


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    flops: int  # multiply and add counted separately (2 per MAC), batch 1, at the input size
    input_size: tuple[int, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "parameters": self.parameters,
            "parameters_m": round(self.parameters / 1e6, 3),
            "gflops": round(self.flops / 1e9, 3),
            "input_size": list(self.input_size),
        }


def model_cost(model: torch.nn.Module) -> ModelCost:
    """Parameters of ``model`` and the FLOPs of its deployed forward pass (torch's FLOP counter)."""
    deploy = DeployModel(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        deploy(*deploy.example_inputs())
    return ModelCost(
        parameters=sum(p.numel() for p in model.parameters()),
        flops=counter.get_total_flops(),
        input_size=tuple(deploy.config.input_size),
    )
