"""Multi-task training losses with per-sample label masking.

Every term averages over the *valid pixels of the samples that carry that label*; a batch with no
such pixel gives an exact zero that still touches the prediction (``pred.sum() * 0``), so the graph
reaches every head (DDP needs that) and no term is ever NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.training.config import LossConfig

UNCERTAINTY_DISTRIBUTIONS = ("laplace", "gaussian")


def _zero_like(pred: Tensor) -> Tensor:
    """A zero loss connected to ``pred`` (keeps every parameter in the graph)."""
    return pred.sum() * 0.0


def _resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def masked_labels(semantic: Tensor, has_semantic: Tensor) -> Tensor:
    """Labels with every pixel of samples lacking semantic ground truth set to ignore."""
    keep = has_semantic.view(-1, 1, 1).to(torch.bool)
    return torch.where(keep, semantic, torch.full_like(semantic, IGNORE_INDEX))


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE over non-ignored pixels (logits resized to the labels); 0 when none is labelled."""
    logits = _resize_logits(logits.float(), tuple(labels.shape[-2:]))
    count = (labels != IGNORE_INDEX).sum()
    if count == 0:
        return _zero_like(logits)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / count


def _lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted descending."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probs: Tensor, labels: Tensor) -> Tensor:
    """Lovász-softmax loss (Berman et al., CVPR 2018), mean over classes present in ``labels``.

    Hand-written: no maintained pip package ships it (the reference code is a gist-style repo),
    and it is a dozen lines. ``probs`` is NxCxHxW softmax output, ``labels`` NxHxW with ignore.
    Pixels of all images are pooled, as in the paper's "per_image=False" variant.
    """
    num_classes = probs.shape[1]
    flat_probs = probs.permute(0, 2, 3, 1).reshape(-1, num_classes)
    flat_labels = labels.reshape(-1)
    valid = flat_labels != IGNORE_INDEX
    flat_probs, flat_labels = flat_probs[valid], flat_labels[valid]
    losses = []
    for c in range(num_classes):
        fg = (flat_labels == c).to(flat_probs.dtype)
        if fg.sum() == 0:  # absent classes would only add their false-positive term; skip, as the paper
            continue
        errors = (fg - flat_probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    if not losses:
        return _zero_like(probs)
    return torch.stack(losses).mean()


def regression_loss(pred: Tensor, target: Tensor, valid: Tensor, kind: str) -> Tensor:
    """Mean L1 or smooth-L1 over ``valid`` pixels; 0 when there are none."""
    if not valid.any():
        return _zero_like(pred)
    fn = F.l1_loss if kind == "l1" else F.smooth_l1_loss
    return fn(pred[valid], target[valid])


# Floor of the predicted scale in the NLL (output units: px or m), far below any real error. Without it
# the NLL of an exactly-zero residual (a far pixel predicted at exactly 0 px) falls without bound as the
# scale shrinks, until exp(-log_scale) overflows and 0 * inf = NaN (a stage-3 run died of it at step 1229).
MIN_LOG_SCALE = math.log(1e-3)


def nll_loss(mean: Tensor, log_scale: Tensor, target: Tensor, valid: Tensor, distribution: str) -> Tensor:
    """Negative log-likelihood (constants dropped) of ``target`` under Laplace(mean, b) or N(mean, σ²).

    ``log_scale`` is log b (Laplace) or log σ (Gaussian). The caller passes a *detached* mean: the
    regression term alone trains the mean, the NLL trains only the scale. Letting the NLL move the
    mean down-weights hard pixels by 1/b (resp. 1/σ²), which is known to hurt the accuracy of the
    mean (Seitzer et al., ICLR 2022, "pitfalls of heteroscedastic uncertainty").
    """
    if not valid.any():
        return _zero_like(log_scale)
    residual = (target - mean)[valid]
    s = log_scale[valid].clamp_min(MIN_LOG_SCALE)
    if distribution == "laplace":
        return (residual.abs() * torch.exp(-s) + s).mean()
    return (0.5 * residual.square() * torch.exp(-2.0 * s) + s).mean()


# A hypothesis counts as right within this many 1/2-res pixels of the truth (2 input px, under the
# 3 px of KITTI's D1).
CHOICE_TOLERANCE = 1.0


def hypothesis_choice_loss(
    hypotheses: Tensor,
    logits: Tensor,
    target: Tensor,
    valid: Tensor,
    balance: float,
    far_weight: float = 1.0,
) -> Tensor:
    """-log of the probability the logits give to the hypotheses within ``CHOICE_TOLERANCE`` of the truth.

    hypotheses, logits: NxKxhxw at 1/2 resolution (hypotheses in its pixels, the pixel's own match
    first); target, valid: NxHxW at the input resolution, read at every second pixel. Several
    hypotheses are often equal (inside a surface all neighbours match alike), so the loss rewards the
    mass on all the right ones, not one index. Pixels where no hypothesis is right, or every one is,
    teach nothing about the choice and are left out. Of the others (near outlines), those where the
    own match is wrong get the share ``balance`` of the loss, those where it is right 1 - ``balance``.
    Pooled, the choice learned to keep the own match whatever the right view says: its pick left
    5.6 % of random-dot pixels wrong where the best ZNCC alone left 3.0 %. Balanced against every
    own-right pixel, as before ``contested``, a frame's plain sky and road diluted the sky beside
    poles and trees: at balance 0.3, validation sky given near depth 3.45 % against 2.78 % with
    ``contested``. Within each share the "infinitely far" pixels (truth 0) weigh ``far_weight``:
    there a wrong pick is a phantom obstacle (balance 0.5: sky 3.23 % at 1, 2.58 % at 4, 2.27 % at
    10; models/README.md, "Stage 5").
    """
    stride = target.shape[-1] // hypotheses.shape[-1]
    target = target[:, ::stride, ::stride].unsqueeze(1) / stride
    right = (hypotheses - target).abs() <= CHOICE_TOLERANCE
    contested = valid[:, ::stride, ::stride] & right.any(dim=1) & ~right.all(dim=1)
    if not contested.any():
        return _zero_like(logits)
    logits = logits.float()
    right_mass = torch.logsumexp(logits.masked_fill(~right, float("-inf")), dim=1)
    loss = torch.logsumexp(logits, dim=1) - right_mass
    own_right = right[:, 0]
    groups = [(contested & own_right, 1.0 - balance), (contested & ~own_right, balance)]
    weight = torch.where(target[:, 0] == 0, far_weight, 1.0)
    shares = [
        ((loss * weight)[group].sum() / weight[group].sum(), share) for group, share in groups if group.any()
    ]
    return sum(value * share for value, share in shares) / sum(share for _, share in shares)


def scale_invariant_log_loss(pred: Tensor, target: Tensor, valid: Tensor, lam: float) -> Tensor:
    """Eigen et al. (2014) log-depth loss, per image then averaged over images with valid pixels.

    With d = log pred - log gt: mean(d²) - λ·mean(d)². λ = 1 is fully scale invariant; λ < 1 keeps
    a share of the absolute-scale error, so metric depth is still learned.
    """
    per_image = []
    for p, t, v in zip(pred, target, valid, strict=True):
        if v.any():
            d = torch.log(p[v].clamp_min(1e-3)) - torch.log(t[v])
            per_image.append(d.square().mean() - lam * d.mean().square())
    if not per_image:
        return _zero_like(pred)
    return torch.stack(per_image).mean()


def geometry_valid(batch: dict[str, Tensor], key: str) -> Tensor:
    """Pixels with a ``key`` label (``disparity`` or ``depth``), "infinitely far" included.

    The sample's ``<key>_valid`` mask (DESIGN.md "Sample") of the samples flagged ``has_depth``;
    batches without the mask (hand-made ones) fall back to the old rule, gt > 0 and finite.
    """
    has_depth = batch["has_depth"].view(-1, 1, 1).to(torch.bool)
    gt = batch[key]
    mask = batch.get(f"{key}_valid")
    if mask is None:
        mask = (gt > 0) & torch.isfinite(gt)
    return has_depth & mask.to(device=gt.device, dtype=torch.bool)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the multi-task terms; ``forward`` returns ``(total, {name: term})``.

    Terms (present when the model has the output): ``semantic_ce``, ``semantic_lovasz``,
    ``coarse_semantic_ce``, ``disparity`` + ``disparity_nll`` (and ``disparity_choice`` with
    hypothesis selection) for stereo, or ``depth`` + ``depth_nll`` for mono. Both supervise every
    labelled pixel (``disparity_valid`` / ``depth_valid``), "infinitely far" included: disparity
    where gt < ``max_disparity`` (far pixels have target 0, so a phantom obstacle in the sky costs),
    depth with far (+inf) targets clamped to ``max_depth``, the farthest the mono model can predict.

    ``focal_length`` (mono): the camera the network predicts depth for. Each sample's depth label is
    brought to it (depth * focal_length / fx: the same scene seen with a longer lens looks nearer),
    so one network serves every rig; the runtime scales back by fx / focal_length.
    """

    def __init__(
        self,
        config: LossConfig,
        max_disparity: float,
        distribution: str = "laplace",
        max_depth: float = 80.0,
        focal_length: float | None = None,
    ) -> None:
        super().__init__()
        if distribution not in UNCERTAINTY_DISTRIBUTIONS:
            raise ValueError(f"uncertainty distribution {distribution!r} not in {UNCERTAINTY_DISTRIBUTIONS}")
        if not max_depth > 0:
            raise ValueError(f"max_depth must be positive, got {max_depth}")
        self.config = config
        self.max_disparity = float(max_disparity)
        self.max_depth = float(max_depth)
        self.distribution = distribution
        self.focal_length = focal_length

    def forward(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        terms: dict[str, Tensor] = {}
        labels = masked_labels(batch["semantic"], batch["has_semantic"])
        if "semantic_logits" in outputs:
            logits = _resize_logits(outputs["semantic_logits"].float(), tuple(labels.shape[-2:]))
            terms["semantic_ce"] = cross_entropy(logits, labels)
            terms["semantic_lovasz"] = lovasz_softmax(logits.softmax(dim=1), labels)
        if "coarse_semantic_logits" in outputs:
            terms["coarse_semantic_ce"] = cross_entropy(outputs["coarse_semantic_logits"], labels)
        if "disparity" in outputs:
            pred = outputs["disparity"].float()[:, 0]
            gt = batch["disparity"]
            # Far pixels are valid with gt 0: the model must predict 0 there.
            valid = geometry_valid(batch, "disparity") & (gt < self.max_disparity)
            terms["disparity"] = regression_loss(pred, gt, valid, cfg.regression)
            if "disparity_log_scale" in outputs:
                log_scale = outputs["disparity_log_scale"].float()[:, 0]
                terms["disparity_nll"] = nll_loss(pred.detach(), log_scale, gt, valid, self.distribution)
            if "hypothesis_logits" in outputs:
                terms["disparity_choice"] = hypothesis_choice_loss(
                    outputs["disparity_hypotheses"].detach(),
                    outputs["hypothesis_logits"],
                    gt,
                    valid,
                    cfg.disparity_choice_balance,
                    cfg.disparity_choice_far_weight,
                )
        if "depth" in outputs:
            pred = outputs["depth"].float()[:, 0]
            valid = geometry_valid(batch, "depth") & (batch["depth"] > 0)
            gt = batch["depth"]
            if self.focal_length is not None:
                gt = gt * (self.focal_length / batch["fx"].to(gt)).view(-1, 1, 1)
            # Far (+inf) and anything beyond the model's range: the farthest depth it can output.
            gt = gt.clamp(max=self.max_depth)
            terms["depth"] = scale_invariant_log_loss(pred, gt, valid, cfg.silog_lambda)
            if "depth_log_scale" in outputs:
                log_scale = outputs["depth_log_scale"].float()[:, 0]
                terms["depth_nll"] = nll_loss(pred.detach(), log_scale, gt, valid, self.distribution)
        if not terms:
            raise ValueError(f"model outputs {sorted(outputs)} contain nothing MultiTaskLoss supervises")
        weights = cfg.weights()
        total = torch.stack([weights[name] * value for name, value in terms.items()]).sum()
        return total, terms
