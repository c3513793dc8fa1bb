"""Losses: label masking, Lovász-softmax against a brute-force Lovász extension, NLL gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.training.config import LossConfig
from mtl_perception.training.losses import MultiTaskLoss, lovasz_softmax, nll_loss, scale_invariant_log_loss


def _jaccard_loss_of_mistakes(mistakes: torch.Tensor, fg: torch.Tensor) -> float:
    """Δ_J(M) = |M| / |fg ∪ M| (Berman et al., eq. 4): the set function Lovász extends."""
    union = (fg.bool() | mistakes).sum()
    return float(mistakes.sum().double() / union.double()) if union > 0 else 0.0


def _brute_force_lovasz(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Lovász extension as ∫₀¹ Δ({i: m_i ≥ t}) dt over the errors m, per present class, averaged."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).double()
        if fg.sum() == 0:
            continue
        m = (fg - probs[:, c].double()).abs()
        thresholds = torch.cat([torch.zeros(1, dtype=torch.float64), torch.sort(m).values])
        total = 0.0
        for lo, hi in itertools.pairwise(thresholds.tolist()):
            if hi > lo:
                total += (hi - lo) * _jaccard_loss_of_mistakes(m >= hi, fg)
        losses.append(total)
    return sum(losses) / len(losses)


def test_lovasz_matches_brute_force_extension() -> None:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(1, 3, 3, 4, dtype=torch.float64), dim=1)
    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 1, 0], [0, 255, 1, 2]]])
    valid = labels.reshape(-1) != 255
    expected = _brute_force_lovasz(probs.permute(0, 2, 3, 1).reshape(-1, 3)[valid], labels.reshape(-1)[valid])
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(expected, rel=1e-12)


def test_lovasz_on_hard_predictions_is_one_minus_iou() -> None:
    labels = torch.tensor([[[0, 0, 0, 1], [1, 1, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1], [1, 0, 0, 0]]])
    probs = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).double()
    iou0, iou1 = 4 / 6, 2 / 4  # class 0: 4 shared of 6; class 1: 2 shared of 4
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(1 - (iou0 + iou1) / 2)


def _outputs(
    batch_size: int = 2, size: tuple[int, int] = (4, 6), classes: int = 3
) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "semantic_logits": torch.randn(batch_size, classes, *size, requires_grad=True),
        "coarse_semantic_logits": torch.randn(
            batch_size, classes, size[0] // 2, size[1] // 2, requires_grad=True
        ),
        "disparity": (torch.rand(batch_size, 1, *size) * 10).requires_grad_(),
        "disparity_log_scale": torch.zeros(batch_size, 1, *size, requires_grad=True),
    }


def _batch(
    has_semantic: list[bool], has_depth: list[bool], size: tuple[int, int] = (4, 6)
) -> dict[str, torch.Tensor]:
    n = len(has_semantic)
    return {
        "semantic": torch.randint(0, 3, (n, *size)),
        "disparity": torch.rand(n, *size) * 10 + 1,
        "depth": torch.rand(n, *size) * 10 + 1,
        "has_semantic": torch.tensor(has_semantic),
        "has_depth": torch.tensor(has_depth),
    }


def test_batch_without_any_label_gives_zero_finite_loss_and_zero_grads() -> None:
    outputs = _outputs()
    total, terms = MultiTaskLoss(LossConfig(), max_disparity=32)(
        outputs, _batch([False, False], [False, False])
    )
    assert torch.isfinite(total) and float(total.detach()) == 0.0
    assert set(terms) == {
        "semantic_ce",
        "semantic_lovasz",
        "coarse_semantic_ce",
        "disparity",
        "disparity_nll",
    }
    total.backward()
    for tensor in outputs.values():
        assert tensor.grad is not None and torch.count_nonzero(tensor.grad) == 0


def test_sample_without_labels_contributes_nothing() -> None:
    loss = MultiTaskLoss(LossConfig(), max_disparity=32)
    outputs = _outputs()
    batch = _batch([True, False], [False, True])
    total, terms = loss(outputs, batch)
    total.backward()
    # Sample 1's semantic and sample 0's disparity must not receive gradient.
    assert torch.count_nonzero(outputs["semantic_logits"].grad[1]) == 0
    assert torch.count_nonzero(outputs["semantic_logits"].grad[0]) > 0
    assert torch.count_nonzero(outputs["disparity"].grad[0]) == 0
    assert torch.count_nonzero(outputs["disparity"].grad[1]) > 0
    # Changing the masked sample's labels changes nothing.
    batch["semantic"][1] = (batch["semantic"][1] + 1) % 3
    batch["disparity"][0] += 5
    _, again = loss({k: v.detach() for k, v in outputs.items()}, batch)
    for name in terms:
        assert float(again[name]) == pytest.approx(float(terms[name].detach()))


def test_disparity_beyond_max_is_not_supervised() -> None:
    outputs = _outputs(batch_size=1)
    batch = _batch([True], [True])
    batch["disparity"][:] = 40.0  # all above max_disparity
    _, terms = MultiTaskLoss(LossConfig(), max_disparity=32)(outputs, batch)
    assert terms["disparity"].item() == 0.0 and terms["disparity_nll"].item() == 0.0


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_nll_scale_gradient_points_to_the_residual(distribution: str) -> None:
    """d NLL / d log_scale < 0 when the scale is below the residual, > 0 when above; optimum at it."""
    target = torch.full((1, 8), 3.0)
    mean = torch.zeros(1, 8)
    valid = torch.ones(1, 8, dtype=torch.bool)
    for log_scale_value, sign in ((0.0, -1.0), (3.0, 1.0)):
        log_scale = torch.full((1, 8), log_scale_value, requires_grad=True)
        nll_loss(mean, log_scale, target, valid, distribution).backward()
        assert torch.all(torch.sign(log_scale.grad) == sign)
    optimum = torch.full((1, 8), float(torch.log(torch.tensor(3.0))), requires_grad=True)
    nll_loss(mean, optimum, target, valid, distribution).backward()
    assert torch.allclose(optimum.grad, torch.zeros_like(optimum.grad), atol=1e-6)


def test_nll_does_not_move_the_mean() -> None:
    outputs = _outputs(batch_size=1)
    weights = LossConfig(semantic_ce=0, semantic_lovasz=0, coarse_semantic_ce=0, disparity=0, disparity_nll=1)
    total, _ = MultiTaskLoss(weights, max_disparity=32)(outputs, _batch([True], [True]))
    total.backward()
    assert torch.count_nonzero(outputs["disparity"].grad) == 0
    assert torch.count_nonzero(outputs["disparity_log_scale"].grad) > 0


def test_scale_invariant_log_loss_ignores_global_scale_at_lambda_one() -> None:
    target = torch.rand(2, 5, 5) * 20 + 1
    valid = torch.ones_like(target, dtype=torch.bool)
    assert float(scale_invariant_log_loss(target * 3.0, target, valid, lam=1.0)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(scale_invariant_log_loss(target * 3.0, target, valid, lam=0.85)) > 0.1


def _far_batch(far: torch.Tensor, unknown: torch.Tensor) -> dict[str, torch.Tensor]:
    """One 2x3 sample: 5 px measured, ``far`` (valid, d = 0, z = +inf), ``unknown`` (invalid)."""
    disparity = torch.full((1, 2, 3), 5.0)
    depth = torch.full((1, 2, 3), 4.0)
    disparity[far | unknown] = 0.0
    depth[far] = math.inf
    depth[unknown] = 0.0
    return {
        "semantic": torch.full((1, 2, 3), IGNORE_INDEX),
        "disparity": disparity,
        "depth": depth,
        "disparity_valid": ~unknown,
        "depth_valid": ~unknown,
        "has_semantic": torch.tensor([False]),
        "has_depth": torch.tensor([True]),
    }


def test_disparity_on_a_far_pixel_is_supervised_towards_zero() -> None:
    far = torch.zeros(1, 2, 3, dtype=torch.bool)
    far[0, 0, 0] = True
    unknown = torch.zeros_like(far)
    unknown[0, 1, 2] = True
    batch = _far_batch(far, unknown)
    loss = MultiTaskLoss(LossConfig(regression="l1"), max_disparity=32)
    pred = batch["disparity"].clone()[:, None]  # exact everywhere...
    pred[0, 0, 1, 2] = 50.0  # ...and anything on the unknown pixel: not supervised
    _, terms = loss({"disparity": pred}, batch)
    assert terms["disparity"].item() == 0.0
    pred[0, 0, 0, 0] = 10.0  # a phantom obstacle of 10 px in the sky
    _, terms = loss({"disparity": pred}, batch)
    assert terms["disparity"].item() == pytest.approx(10.0 / 5)  # L1 mean over the 5 valid pixels


def test_mono_depth_far_targets_clamp_to_max_depth() -> None:
    far = torch.zeros(1, 2, 3, dtype=torch.bool)
    far[0, 0, :2] = True
    unknown = torch.zeros_like(far)
    unknown[0, 1, 0] = True
    batch = _far_batch(far, unknown)
    loss = MultiTaskLoss(LossConfig(silog_lambda=0.0), max_disparity=32, max_depth=80.0)
    pred = torch.where(far, torch.tensor(80.0), torch.tensor(4.0))[:, None]
    pred[0, 0, 1, 0] = 0.5  # unknown: not supervised
    _, terms = loss({"depth": pred, "depth_log_scale": torch.zeros_like(pred)}, batch)
    assert terms["depth"].item() == pytest.approx(0.0, abs=1e-10)
    assert torch.isfinite(terms["depth_nll"])
    pred[0, 0, 0, 0] = 8.0  # a far pixel predicted at 8 m: log(8 / 80)^2 over 5 valid pixels
    _, terms = loss({"depth": pred}, batch)
    assert terms["depth"].item() == pytest.approx(math.log(10.0) ** 2 / 5, rel=1e-5)


def test_mono_depth_is_supervised_in_the_canonical_camera() -> None:
    """A longer lens (fx = 512 against the network's 256 px) sees the scene as if nearer: the target is
    depth * 256 / 512, so the prediction that matches the raw depth is wrong and half of it is right."""
    batch = _batch([False, False], [True, True])
    batch["fx"] = torch.tensor([512.0, 256.0])
    loss = MultiTaskLoss(LossConfig(silog_lambda=0.0), max_disparity=32, focal_length=256.0)
    canonical = batch["depth"].clone()
    canonical[0] *= 0.5
    _, terms = loss({"depth": canonical[:, None]}, batch)
    assert terms["depth"].item() == pytest.approx(0.0, abs=1e-10)
    _, terms = loss({"depth": batch["depth"][:, None]}, batch)  # ignores the camera: log(2)^2 on image 0
    assert terms["depth"].item() == pytest.approx(math.log(2.0) ** 2 / 2, rel=1e-5)


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_nll_of_exact_answers_is_bounded_below(distribution: str) -> None:
    """A far pixel predicted at exactly 0 px: shrinking the scale further must not keep lowering the loss
    (it did, until exp(-log_scale) overflowed and the loss became NaN)."""
    zero = torch.zeros(1, 4)
    valid = torch.ones(1, 4, dtype=torch.bool)
    floor = nll_loss(zero, torch.full((1, 4), math.log(1e-3)), zero, valid, distribution)
    log_scale = torch.full((1, 4), -200.0, requires_grad=True)
    loss = nll_loss(zero, log_scale, zero, valid, distribution)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(floor.item())
    loss.backward()
    assert torch.isfinite(log_scale.grad).all() and (log_scale.grad == 0).all()
