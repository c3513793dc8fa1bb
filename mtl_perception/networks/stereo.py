"""Progressive stereo multi-task network: coarse segmentation -> disparity -> refined segmentation.

One backbone sees both views in one batched call down to 1/16; only the left view goes on to the
1/32 stage (the segmentation and embedding need it, the cost volume does not). Decoders run at 1/4
resolution with depthwise-separable convolutions and disparity is refined at 1/2 resolution, which
keeps the heads well below the backbone's cost. Disparity is read from the matching cost by
construction (``networks/matching.py``): a group-correlation volume aggregated by 3D convolutions,
soft-argmin (optionally windowed around the strongest mode) and a 1/2-resolution refinement whose
residual is bounded, so the right view cannot be bypassed; optionally each 1/2-res pixel then picks
one of the disparities around it by how well the right view agrees (``networks/selection.py``:
sharp depth edges). The coarse segmentation features are context for the cost aggregation
(``link_seg_to_disparity``) and the refined segmentation is gated by attention over segmentation
features and the match distribution (``link_attention``); both links switch off for ablations.
Everything is built from ops that export to ONNX with static shapes; the upsampling uses fixed
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
    FPNDecoder,
    SeparableConvBNReLU,
    grid_embedding,
    upsample,
)
from mtl_perception.networks.matching import (
    CostAggregation,
    correlation_cost_volume,
    group_correlation_volume,
    match_distribution,
)
from mtl_perception.networks.selection import HypothesisSelection, pick_log_scale, upsample_keeping_edges

# The 1/2-resolution refinement may move the matched disparity by at most this many 1/2-res pixels:
# enough for sub-candidate detail (candidates are 2 of them apart), too little to replace the match.
MAX_REFINE_RESIDUAL = 2.0


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
        # The embedding pools the 1/32 level, which only a net with segmentation computes.
        rows, cols = config.embedding_grid
        self.embedding_dim = c32 * rows * cols if self.semantic else 0

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

        if self.disparity:
            # Matching features stop at 1/16 so the right view never runs the 1/32 stage.
            self.matching_decoder = FPNDecoder([c4, c8, c16], match_ch)
            context_in = match_ch + (seg_ch if config.link_seg_to_disparity else 0)
            self.cost_aggregation = CostAggregation(config.correlation_groups, context_in, agg_ch)
            # 1/2-resolution refinement guided by the left image, its matching features and the
            # match's spread and peak: a bounded disparity residual and the disparity log scale.
            guide_ch = 8
            self.refine_guide = nn.Conv2d(match_ch, guide_ch, 1)
            self.refine = nn.Sequential(
                SeparableConvBNReLU(3 + 3 + guide_ch, config.refine_channels),
                SeparableConvBNReLU(config.refine_channels, config.refine_channels),
                nn.Conv2d(config.refine_channels, 2, 3, padding=1),
            )
            self.hypothesis_selection = HypothesisSelection() if config.hypothesis_selection else None

        if config.link_attention:
            # The segmentation reads the match distribution (D probabilities) and matching features.
            self.disparity_to_seg = nn.Conv2d(config.num_disparities + match_ch, seg_ch, 1)
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
            return self._disparity(left, right, shared, None)[0]
        left_features = self.backbone.extend([f[:batch] for f in shared])
        seg_features = self.seg_decoder(left_features[1:])
        out, disparity_features = self._disparity(left, right, shared, seg_features)
        segment = self._segment(left_features, disparity_features, seg_features, upsample_semantic_logits)
        return {**out, **segment}

    def _disparity(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        pair_features: list[torch.Tensor],
        seg_features: torch.Tensor | None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Group-correlation volume, 3D aggregation with image context, soft-argmin, 1/2-res refinement.

        ``pair_features`` are the 1/4..1/16 levels of left and right stacked on the batch axis.
        Returns the disparity outputs and the features the attention link reads (the match
        probabilities beside the left matching features). With ``hypothesis_selection`` the outputs
        also hold the 1/2-res ``disparity_hypotheses`` and ``hypothesis_logits`` its loss reads.
        """
        batch = left.shape[0]
        matching = self.matching_decoder(pair_features)
        fine = F.normalize(matching, dim=1)
        coarse = F.normalize(F.avg_pool2d(matching, 2), dim=1)
        num_disparities = self.config.num_disparities
        fine_volume = correlation_cost_volume(fine[:batch], fine[batch:], num_disparities)
        coarse_volume = group_correlation_volume(
            coarse[:batch], coarse[batch:], num_disparities // 2, self.config.correlation_groups
        )
        left_matching = matching[:batch]
        context = [coarse[:batch]]
        if self.config.link_seg_to_disparity:
            context.append(seg_features)
        logits = self.cost_aggregation(fine_volume, coarse_volume, torch.cat(context, dim=1))
        probabilities, coarse_disparity, spread, peak = match_distribution(
            logits, self.config.soft_argmin_radius
        )

        # Candidates are 1/4-res pixels; at 1/2 res a disparity is (4 / 2) times larger.
        up = COST_VOLUME_STRIDE // REFINE_STRIDE
        scale = REFINE_STRIDE / self.config.max_disparity
        match_quality = upsample(torch.cat([spread * up * scale, peak], dim=1), up)
        image_half = F.avg_pool2d(left, REFINE_STRIDE)
        disparity_half = upsample(coarse_disparity, up) * up
        guide = upsample(self.refine_guide(left_matching), up)
        refined = self.refine(torch.cat([disparity_half * scale, match_quality, image_half, guide], dim=1))
        residual = MAX_REFINE_RESIDUAL * torch.tanh(refined[:, :1])
        disparity_half = F.relu(disparity_half + residual)
        log_scale_half = refined[:, 1:]
        selection: dict[str, torch.Tensor] = {}
        if self.hypothesis_selection is not None:
            # After the refinement: it sees no match of its own and would smooth a picked edge
            # back toward the 1/4 smear (measured: +1.0 to +1.6 points of random-dot D1).
            hypotheses, choice = self.hypothesis_selection(
                disparity_half, image_half, F.avg_pool2d(right, REFINE_STRIDE), match_quality, scale
            )
            # A hard pick (see selection.py): the choice loss trains the logits; the disparity loss
            # reaches the refinement through the picked value.
            disparity_half = hypotheses.gather(1, choice.argmax(dim=1, keepdim=True))
            selection = {"disparity_hypotheses": hypotheses, "hypothesis_logits": choice}
            log_scale_half = pick_log_scale(
                log_scale_half,
                hypotheses,
                choice / self.config.selection_temperature,
                disparity_half,
                self.config.uncertainty_distribution,
            )
        disparity_features = torch.cat([probabilities, left_matching], dim=1)
        return {
            "disparity": upsample_keeping_edges(disparity_half, REFINE_STRIDE)
            if selection
            else upsample(disparity_half, REFINE_STRIDE) * REFINE_STRIDE,
            # A scale in 1/2-res pixels is REFINE_STRIDE times larger in input pixels.
            "disparity_log_scale": upsample(log_scale_half, REFINE_STRIDE) + math.log(REFINE_STRIDE),
            **selection,
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
            "embedding": grid_embedding(left_features[-1], self.config.embedding_grid),
        }
