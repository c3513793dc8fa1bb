"""Progressive stereo multi-task network: coarse segmentation -> disparity -> refined segmentation.

One backbone sees both views in one batched call. The coarse segmentation features can feed the
disparity aggregation (``link_seg_to_disparity``) and the refined segmentation is gated by
attention over segmentation and disparity features (``link_attention``); both links switch off for
ablations. Everything is built from ops that export to ONNX with static shapes: the cost volume
uses Python-int slicing and padding, the pyramid pooling uses fixed strides, the upsampling fixed
scale factors. Input H and W must be multiples of 32 (at least 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks.backbone import Backbone
from mtl_perception.networks.config import COST_VOLUME_STRIDE, StereoNetConfig
from mtl_perception.networks.heads import ConvBNReLU, FPNDecoder, global_embedding, upsample

SPP_STRIDES = (2, 4, 8)  # pooling strides at 1/4 res (down to 1/32 of the input, which divides evenly)


def correlation_cost_volume(left: torch.Tensor, right: torch.Tensor, num_disparities: int) -> torch.Tensor:
    """Correlation of left features with right features shifted by 0..D-1 pixels -> NxDxHxW.

    ``cost[:, d, y, x] = mean_c left[:, c, y, x] * right[:, c, y, x - d]``, zero where x - d falls
    outside the image. Hand-written because correlation layers in libraries are custom CUDA ops that
    do not export; each shift is a static slice plus a static pad, so no shape is frozen in a trace.
    """
    costs = [(left * right).mean(dim=1)]
    for d in range(1, num_disparities):
        shifted = F.pad(right[..., :-d], (d, 0))
        costs.append((left * shifted).mean(dim=1))
    return torch.stack(costs, dim=1)


def soft_argmin(disparity_logits: torch.Tensor) -> torch.Tensor:
    """Expected disparity under softmax over the D candidates: NxDxHxW -> Nx1xHxW in candidate units."""
    probabilities = torch.softmax(disparity_logits, dim=1)
    candidates = torch.arange(
        disparity_logits.shape[1], dtype=probabilities.dtype, device=probabilities.device
    )
    return (probabilities * candidates.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)


class StridedPyramidPooling(nn.Module):
    """Spatial pyramid pooling with fixed-stride average pools and bilinear upsampling back.

    Adaptive pooling to fixed bins exports badly for sizes that do not divide; fixed strides only
    need the feature size to divide by the largest stride, which the 1/32 input constraint gives.
    """

    def __init__(self, channels: int, strides: tuple[int, ...] = SPP_STRIDES):
        super().__init__()
        self.strides = strides
        branch_channels = channels // 4
        self.branches = nn.ModuleList(ConvBNReLU(channels, branch_channels, kernel_size=1) for _ in strides)
        self.fuse = ConvBNReLU(channels + branch_channels * len(strides), channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [
            upsample(branch(F.avg_pool2d(x, stride, stride)), stride)
            for stride, branch in zip(self.strides, self.branches, strict=True)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class StereoMultiTaskNet(nn.Module):
    """Stereo pair -> refined + coarse semantics, disparity with log scale, frame embedding."""

    def __init__(self, config: StereoNetConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.pretrained, config.pretrained_path)
        c4, c8, c16, c32 = self.backbone.channels
        seg_ch, match_ch = config.decoder_channels, config.matching_channels
        agg_ch = config.aggregation_channels
        num_d = config.num_disparities

        # Coarse segmentation from the deep levels (1/8 .. 1/32), output at 1/8.
        self.seg_decoder = FPNDecoder([c8, c16, c32], seg_ch)
        self.coarse_classifier = nn.Conv2d(seg_ch, config.num_classes, 1)

        # Disparity at 1/4: matching features for both views, correlation, aggregation with SPP.
        self.matching_decoder = FPNDecoder([c4, c8, c16, c32], match_ch)
        agg_in = num_d + match_ch + (seg_ch if config.link_seg_to_disparity else 0)
        # 1x1 first: the concatenated input is wide, and 3x3 convs at 1/4 res dominate the FLOPs.
        self.aggregation = nn.Sequential(
            ConvBNReLU(agg_in, agg_ch, kernel_size=1),
            ConvBNReLU(agg_ch, agg_ch),
            StridedPyramidPooling(agg_ch),
        )
        self.disparity_classifier = nn.Conv2d(agg_ch, num_d, 3, padding=1)

        # Full-resolution refinement guided by the left image and its matching features:
        # outputs a disparity residual and the disparity log scale.
        guide_ch = 8
        self.refine_guide = nn.Conv2d(match_ch, guide_ch, 1)
        self.refine = nn.Sequential(
            ConvBNReLU(1 + 3 + guide_ch, config.refine_channels),
            ConvBNReLU(config.refine_channels, config.refine_channels),
            nn.Conv2d(config.refine_channels, 2, 3, padding=1),
        )

        # Refined segmentation at 1/4 with a skip from the 1/4 backbone level.
        self.seg_skip = nn.Conv2d(c4, seg_ch, 1)
        self.seg_fuse = ConvBNReLU(seg_ch, seg_ch)
        if config.link_attention:
            self.disparity_to_seg = nn.Conv2d(agg_ch, seg_ch, 1)
            self.attention = nn.Conv2d(2 * seg_ch, 2 * seg_ch, 1)  # one sigmoid gate per branch
        self.refined_head = nn.Sequential(
            ConvBNReLU(seg_ch, seg_ch), nn.Conv2d(seg_ch, config.num_classes, 1)
        )

        self.embedding = nn.Linear(c32, config.embedding_dim)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nx3xHxW RGB 0..1 pair -> dict of training outputs (see DESIGN.md, networks contract)."""
        features = self.backbone(torch.cat([left, right], dim=0))
        batch = left.shape[0]
        left_features = [f[:batch] for f in features]

        seg_features = self.seg_decoder(left_features[1:])  # 1/8
        coarse_logits = self.coarse_classifier(seg_features)

        matching = self.matching_decoder(features)  # 1/4, both views
        left_matching, right_matching = matching[:batch], matching[batch:]
        cost = correlation_cost_volume(
            F.normalize(left_matching, dim=1), F.normalize(right_matching, dim=1), self.config.num_disparities
        )
        seg_features_4 = upsample(seg_features, 2)
        aggregation_input = [cost, left_matching]
        if self.config.link_seg_to_disparity:
            aggregation_input.append(seg_features_4)
        disparity_features = self.aggregation(torch.cat(aggregation_input, dim=1))
        coarse_disparity = soft_argmin(self.disparity_classifier(disparity_features))
        # Candidates are 1/4-res pixels: upsampling to input res multiplies disparity by the stride.
        disparity_up = upsample(coarse_disparity, COST_VOLUME_STRIDE) * COST_VOLUME_STRIDE

        guide = upsample(self.refine_guide(left_matching), COST_VOLUME_STRIDE)
        refined = self.refine(torch.cat([disparity_up / self.config.max_disparity, left, guide], dim=1))
        disparity = F.relu(disparity_up + refined[:, :1])
        disparity_log_scale = refined[:, 1:]

        seg = self.seg_fuse(seg_features_4 + self.seg_skip(left_features[0]))
        if self.config.link_attention:
            disparity_for_seg = self.disparity_to_seg(disparity_features)
            seg_gate, disparity_gate = torch.sigmoid(
                self.attention(torch.cat([seg, disparity_for_seg], dim=1))
            ).chunk(2, dim=1)
            seg = seg * seg_gate + disparity_for_seg * disparity_gate
        semantic_logits = upsample(self.refined_head(seg), COST_VOLUME_STRIDE)

        return {
            "semantic_logits": semantic_logits,
            "coarse_semantic_logits": coarse_logits,
            "disparity": disparity,
            "disparity_log_scale": disparity_log_scale,
            "embedding": global_embedding(left_features[-1], self.embedding),
        }
