"""Single-task baselines cut from the stereo network, for the multi-task vs single-task speed comparison.

The networks package has no switch to drop a task, so these wrap a ``StereoMultiTaskNet`` built with
both cross-task links off and run only one task's path through its blocks: the same backbone and
heads, so the comparison measures the cost of running two networks instead of one.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks import StereoNetConfig, build_model
from mtl_perception.networks.config import COST_VOLUME_STRIDE
from mtl_perception.networks.heads import global_embedding, log_scale_to_std, normalized_entropy, upsample
from mtl_perception.networks.stereo import correlation_cost_volume, soft_argmin


def unlinked(config: StereoNetConfig) -> nn.Module:
    """The stereo network without cross-task links (each task's path then stands alone)."""
    return build_model(dataclasses.replace(config, link_seg_to_disparity=False, link_attention=False))


class SegmentationOnly(nn.Module):
    """Left image -> class ids, entropy, embedding: backbone + segmentation decoder only."""

    input_names = ("left",)
    output_names = ("semantic", "semantic_uncertainty", "embedding")

    def __init__(self, config: StereoNetConfig) -> None:
        super().__init__()
        self.net = unlinked(config).eval()

    def forward(self, left: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net = self.net
        features = net.backbone(left)
        seg = upsample(net.seg_decoder(features[1:]), 2)
        seg = net.seg_fuse(seg + net.seg_skip(features[0]))
        logits = upsample(net.refined_head(seg), COST_VOLUME_STRIDE)
        embedding = global_embedding(features[-1], net.embedding)
        uncertainty = normalized_entropy(logits, net.config.num_classes)
        return logits.argmax(dim=1).to(torch.int32), uncertainty, embedding


class DisparityOnly(nn.Module):
    """Stereo pair -> disparity and its sigma: backbone + matching, cost volume, refinement only."""

    input_names = ("left", "right")
    output_names = ("disparity", "disparity_uncertainty")

    def __init__(self, config: StereoNetConfig) -> None:
        super().__init__()
        self.net = unlinked(config).eval()

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net, config = self.net, self.net.config
        matching = net.matching_decoder(net.backbone(torch.cat([left, right], dim=0)))
        left_matching, right_matching = matching[:1], matching[1:]
        cost = correlation_cost_volume(
            F.normalize(left_matching, dim=1), F.normalize(right_matching, dim=1), config.num_disparities
        )
        features = net.aggregation(torch.cat([cost, left_matching], dim=1))
        disparity_up = upsample(soft_argmin(net.disparity_classifier(features)), COST_VOLUME_STRIDE)
        disparity_up = disparity_up * COST_VOLUME_STRIDE
        guide = upsample(net.refine_guide(left_matching), COST_VOLUME_STRIDE)
        refined = net.refine(torch.cat([disparity_up / config.max_disparity, left, guide], dim=1))
        disparity = F.relu(disparity_up + refined[:, :1])
        std = log_scale_to_std(refined[:, 1:], config.uncertainty_distribution)
        return disparity.squeeze(1), std.squeeze(1)
