"""Progressive stereo multi-task network: coarse segmentation -> disparity -> refined segmentation.

One backbone sees both views in one batched call down to 1/16; only the left view goes on to the
1/32 stage (the segmentation and embedding need it, the cost volume does not). Decoders run at 1/4
resolution with depthwise-separable convolutions and disparity is refined at 1/2 resolution, which
keeps the heads well below the backbone's cost. The coarse segmentation features can feed the
disparity aggregation (``link_seg_to_disparity``) and the refined segmentation is gated by
attention over segmentation and disparity features (``link_attention``); both links switch off for
ablations. Everything is built from ops that export to ONNX with static shapes: the cost volume
is one MatMul plus pads and reshapes, the pyramid pooling uses fixed strides, the upsampling fixed
scale factors. Input H and W must be multiples of 32 (at least 64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.networks.backbone import Backbone
from mtl_perception.networks.config import COST_VOLUME_STRIDE, REFINE_STRIDE, StereoNetConfig
from mtl_perception.networks.heads import (
    ConvBNReLU,
    FPNDecoder,
    SeparableConvBNReLU,
    global_embedding,
    upsample,
)

SPP_STRIDES = (2, 4, 8)  # pooling strides at 1/4 res (down to 1/32 of the input, which divides evenly)


def correlation_cost_volume(left: torch.Tensor, right: torch.Tensor, num_disparities: int) -> torch.Tensor:
    """Correlation of left features with right features shifted by 0..D-1 pixels -> NxDxHxW.

    ``cost[:, d, y, x] = mean_c left[:, c, y, x] * right[:, c, y, x - d]``, zero where x - d falls
    outside the image. Hand-written because correlation layers in libraries are custom CUDA ops that
    do not export. One batched MatMul correlates every pair of columns in a row (W x W per row); the
    D diagonals wanted are then read out by padding and reshaping ("skewing"). Per shift slices and
    channel means cost ~10x more in ONNX Runtime on CPU (D strided reductions), although the MatMul
    does W/D times the multiply-adds. Shapes are read with ``.shape`` so a trace records them as
    graph ops and the exported cost volume works at any input size.
    """
    channels, width = left.shape[1], left.shape[-1]
    # rows[n, y, x, x'] = sum_c left[n, c, y, x] * right[n, c, y, x']
    rows = torch.matmul(left.permute(0, 2, 3, 1), right.permute(0, 2, 1, 3))
    # Left-pad each row with D-1 zeros (row length L = W + D - 1): rows[x, x - d] sits at flat index
    # x * (L + 1) + (D - 1 - d), so rows of length L + 1 hold the D diagonals in their first D columns,
    # last shift first; x - d < 0 lands in the zero padding.
    padded = F.pad(rows, (num_disparities - 1, 0)).flatten(2)
    skewed = F.pad(padded, (0, width)).unflatten(2, (width, width + num_disparities))
    diagonals = skewed[..., :num_disparities].flip(-1)  # NxHxWxD, shift 0 first
    return diagonals.permute(0, 3, 1, 2) / channels


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
    """Stereo pair -> refined + coarse semantics, disparity with log scale, frame embedding.

    ``config.tasks`` picks the heads: ("semantic",) takes the left view only (outputs
    ``semantic_logits``, ``coarse_semantic_logits``, ``embedding``); ("disparity",) takes the pair
    and outputs ``disparity`` and ``disparity_log_scale`` without the 1/32 stage at all.
    ``semantic_logits`` are predicted at 1/``SEMANTIC_LOGITS_STRIDE`` and upsampled to the input size
    unless ``forward(..., upsample_semantic_logits=False)``.
    """

    SEMANTIC_LOGITS_STRIDE = COST_VOLUME_STRIDE  # the refined segmentation head runs at 1/4

    def __init__(self, config: StereoNetConfig):
        super().__init__()
        self.config = config
        self.semantic = "semantic" in config.tasks
        self.disparity = "disparity" in config.tasks
        # Without segmentation nothing reads the 1/32 level: the backbone stops at 1/16.
        self.backbone = Backbone(
            config.backbone, config.pretrained, config.pretrained_path, max_levels=4 if self.semantic else 3
        )
        c4, c8, c16, c32 = self.backbone.channels
        seg_ch, match_ch = config.decoder_channels, config.matching_channels
        agg_ch = config.aggregation_channels

        if self.semantic:
            # Coarse segmentation from the deep levels (1/8 .. 1/32), output at 1/8.
            self.seg_decoder = FPNDecoder([c8, c16, c32], seg_ch)
            self.coarse_classifier = nn.Conv2d(seg_ch, config.num_classes, 1)
            # Refined segmentation at 1/4 with a skip from the 1/4 backbone level.
            self.seg_skip = nn.Conv2d(c4, seg_ch, 1)
            self.seg_fuse = SeparableConvBNReLU(seg_ch, seg_ch)
            self.refined_head = nn.Sequential(
                SeparableConvBNReLU(seg_ch, seg_ch), nn.Conv2d(seg_ch, config.num_classes, 1)
            )
            self.embedding = nn.Linear(c32, config.embedding_dim)

        if self.disparity:
            # Matching features stop at 1/16 so the right view never runs the 1/32 stage.
            self.matching_decoder = FPNDecoder([c4, c8, c16], match_ch)
            agg_in = config.num_disparities + match_ch + (seg_ch if config.link_seg_to_disparity else 0)
            # 1x1 first: the concatenated input is wide and everything here runs at 1/4 res.
            self.aggregation = nn.Sequential(
                ConvBNReLU(agg_in, agg_ch, kernel_size=1),
                SeparableConvBNReLU(agg_ch, agg_ch),
                StridedPyramidPooling(agg_ch),
            )
            self.disparity_classifier = nn.Sequential(
                SeparableConvBNReLU(agg_ch, agg_ch), nn.Conv2d(agg_ch, config.num_disparities, 1)
            )
            # 1/2-resolution refinement guided by the left image and its matching features:
            # outputs a disparity residual and the disparity log scale.
            guide_ch = 8
            self.refine_guide = nn.Conv2d(match_ch, guide_ch, 1)
            self.refine = nn.Sequential(
                SeparableConvBNReLU(1 + 3 + guide_ch, config.refine_channels),
                SeparableConvBNReLU(config.refine_channels, config.refine_channels),
                nn.Conv2d(config.refine_channels, 2, 3, padding=1),
            )

        if config.link_attention:
            self.disparity_to_seg = nn.Conv2d(agg_ch, seg_ch, 1)
            # One sigmoid gate per branch and channel, through a narrow bottleneck: a dense
            # 2C -> 2C 1x1 at 1/4 res would cost as much as the rest of the segmentation head.
            self.attention = nn.Sequential(
                nn.Conv2d(2 * seg_ch, config.attention_channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(config.attention_channels, 2 * seg_ch, 1),
            )

    def forward(
        self, left: torch.Tensor, right: torch.Tensor | None = None, *, upsample_semantic_logits: bool = True
    ) -> dict[str, torch.Tensor]:
        """Nx3xHxW RGB 0..1 pair (left only for a semantic-only net) -> dict of training outputs.

        ``upsample_semantic_logits=False`` leaves ``semantic_logits`` at their native 1/4 resolution
        (for ``DeployModel``, which takes per-pixel maps such as the entropy there).
        """
        if not self.disparity:
            return self._segment(self.backbone(left), None, upsample_logits=upsample_semantic_logits)
        if right is None:
            raise ValueError("a disparity network needs both the left and the right view")
        batch = left.shape[0]
        # Both views share one batched pass down to 1/16; only the left view goes on to 1/32.
        shared = self.backbone(torch.cat([left, right], dim=0), levels=3)
        if not self.semantic:
            return self._disparity(left, shared, None)[0]
        left_features = self.backbone.extend([f[:batch] for f in shared])
        seg_features = self.seg_decoder(left_features[1:])
        out, disparity_features = self._disparity(left, shared, seg_features)
        segment = self._segment(left_features, disparity_features, seg_features, upsample_semantic_logits)
        return {**out, **segment}

    def _disparity(
        self,
        left: torch.Tensor,
        pair_features: list[torch.Tensor],
        seg_features: torch.Tensor | None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Cost volume, aggregation (seeing coarse-seg features when linked), 1/2-res refinement.

        ``pair_features`` are the 1/4..1/16 levels of left and right stacked on the batch axis.
        Returns the disparity outputs and the aggregated features the attention link reads.
        """
        batch = left.shape[0]
        matching = self.matching_decoder(pair_features)
        left_matching, right_matching = matching[:batch], matching[batch:]
        cost = correlation_cost_volume(
            F.normalize(left_matching, dim=1), F.normalize(right_matching, dim=1), self.config.num_disparities
        )
        aggregation_input = [cost, left_matching]
        if self.config.link_seg_to_disparity:
            aggregation_input.append(upsample(seg_features, 2))
        disparity_features = self.aggregation(torch.cat(aggregation_input, dim=1))
        coarse_disparity = soft_argmin(self.disparity_classifier(disparity_features))

        # Candidates are 1/4-res pixels; at 1/2 res a disparity is (4 / 2) times larger.
        up = COST_VOLUME_STRIDE // REFINE_STRIDE
        disparity_half = upsample(coarse_disparity, up) * up
        guide = upsample(self.refine_guide(left_matching), up)
        image_half = F.avg_pool2d(left, REFINE_STRIDE)
        normalised = disparity_half * REFINE_STRIDE / self.config.max_disparity
        refined = self.refine(torch.cat([normalised, image_half, guide], dim=1))
        disparity_half = F.relu(disparity_half + refined[:, :1])
        return {
            "disparity": upsample(disparity_half, REFINE_STRIDE) * REFINE_STRIDE,
            # A scale in 1/2-res pixels is REFINE_STRIDE times larger in input pixels.
            "disparity_log_scale": upsample(refined[:, 1:], REFINE_STRIDE) + math.log(REFINE_STRIDE),
        }, disparity_features

    def _segment(
        self,
        left_features: list[torch.Tensor],
        disparity_features: torch.Tensor | None,
        seg_features: torch.Tensor | None = None,
        upsample_logits: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Coarse seg at 1/8, refined seg at 1/4 (attention-gated with disparity features when linked)."""
        if seg_features is None:
            seg_features = self.seg_decoder(left_features[1:])
        seg = self.seg_fuse(upsample(seg_features, 2) + self.seg_skip(left_features[0]))
        if self.config.link_attention:
            disparity_for_seg = self.disparity_to_seg(disparity_features)
            seg_gate, disparity_gate = torch.sigmoid(
                self.attention(torch.cat([seg, disparity_for_seg], dim=1))
            ).chunk(2, dim=1)
            seg = seg * seg_gate + disparity_for_seg * disparity_gate
        logits = self.refined_head(seg)
        return {
            "semantic_logits": upsample(logits, self.SEMANTIC_LOGITS_STRIDE) if upsample_logits else logits,
            "coarse_semantic_logits": self.coarse_classifier(seg_features),
            "embedding": global_embedding(left_features[-1], self.embedding),
        }
