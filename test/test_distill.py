"""Deep-ensemble teacher and its distillation (training/distill.py): known answers for the ensemble's
maths, the student's loss, and a distillation run end to end on tiny models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_training import ShiftedStereoDataset, tiny_model_dict, tiny_train_config

from mtl_perception.data.augment import AugmentConfig
from mtl_perception.errors import UserError
from mtl_perception.networks import build_model, model_config_from_dict, save_checkpoint
from mtl_perception.networks.heads import log_scale_to_std
from mtl_perception.sim.generator import GeneratorConfig, generate_dataset
from mtl_perception.training.distill import (
    TARGETS_MANIFEST,
    DistillationLoss,
    EnsembleNet,
    TeacherTargets,
    entropy_decomposition,
    expected_nll,
    follow_region,
    total_mean_and_std,
)
from mtl_perception.training.trainer import Trainer


def _tiny_members(count: int, mode: str = "stereo") -> list[torch.nn.Module]:
    config = model_config_from_dict(tiny_model_dict(mode))
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        members.append(build_model(config).eval())
    return members


def test_total_variance_adds_the_members_disagreement() -> None:
    means = torch.tensor([[1.0], [3.0]])
    variances = torch.tensor([[1.0], [1.0]])
    mean, std = total_mean_and_std(means, variances)
    assert mean.item() == 2.0
    assert std.item() == pytest.approx(math.sqrt(2.0))  # mean variance 1 + variance of the means 1


def test_entropy_decomposition_separates_noise_from_disagreement() -> None:
    uniform = torch.full((2, 1, 2), 0.5)  # both members unsure in the same way: all aleatoric
    total, aleatoric, epistemic = entropy_decomposition(uniform)
    assert total.item() == pytest.approx(math.log(2.0)) and epistemic.item() == pytest.approx(0.0)
    opposed = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # each sure, of different classes: all epistemic
    total, aleatoric, epistemic = entropy_decomposition(opposed)
    assert aleatoric.item() == pytest.approx(0.0, abs=1e-6)
    assert epistemic.item() == pytest.approx(math.log(2.0))


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_ensemble_outputs_are_the_mixture_of_its_members(mode: str) -> None:
    members = _tiny_members(3, mode)
    ensemble = EnsembleNet(members)
    inputs = [torch.rand(1, 3, 64, 128) for _ in range(2 if mode == "stereo" else 1)]
    with torch.no_grad():
        outs = [m(*inputs) for m in members]
        got = ensemble(*inputs)
    probs = torch.stack([o["semantic_logits"].softmax(1) for o in outs]).mean(0)
    torch.testing.assert_close(got["semantic_logits"].softmax(1), probs)
    key = "disparity" if mode == "stereo" else "depth"
    dist = members[0].config.uncertainty_distribution
    means = torch.stack([o[key] for o in outs])
    variances = torch.stack([log_scale_to_std(o[f"{key}_log_scale"], dist) ** 2 for o in outs])
    torch.testing.assert_close(got[key], means.mean(0))
    expected_std = (variances.mean(0) + means.var(0, unbiased=False)).sqrt()
    torch.testing.assert_close(log_scale_to_std(got[f"{key}_log_scale"], dist), expected_std)
    # One member repeated is that member: no disagreement, no extra variance.
    with torch.no_grad():
        same = EnsembleNet([members[0], members[0]])(*inputs)
    torch.testing.assert_close(same[key], outs[0][key])
    torch.testing.assert_close(same[f"{key}_log_scale"], outs[0][f"{key}_log_scale"])


def test_ensemble_refuses_members_of_different_models() -> None:
    with pytest.raises(UserError, match="must share"):
        EnsembleNet([_tiny_members(1, "stereo")[0], _tiny_members(1, "mono")[0]])


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_expected_nll_matches_sampling_and_is_least_at_the_teachers_answer(distribution: str) -> None:
    torch.manual_seed(0)
    target_mean, target_std = torch.tensor(5.0), torch.tensor(2.0)
    samples = target_mean + target_std * torch.randn(400_000)

    def sampled_nll(mean: float, log_scale: float) -> float:
        scale = math.exp(log_scale)
        if distribution == "gaussian":
            return float((log_scale + (samples - mean) ** 2 / (2 * scale**2)).mean())
        return float((log_scale + (samples - mean).abs() / scale).mean())

    for mean, log_scale in [(5.0, 0.7), (6.5, 0.2), (2.0, 1.5)]:
        student = torch.tensor(mean), torch.tensor(log_scale)
        closed = expected_nll(*student, target_mean, target_std, distribution)
        assert closed.item() == pytest.approx(sampled_nll(mean, log_scale), abs=0.01)
    # Best student: the teacher's mean, and the scale whose standard deviation is the teacher's.
    log_scales = torch.linspace(-1.0, 2.0, 301)
    values = expected_nll(torch.tensor(5.0), log_scales, target_mean, target_std, distribution)
    best_std = log_scale_to_std(log_scales[values.argmin()], distribution)
    # Gaussian: sigma = sigma_t exactly; Laplace: b = E|y - mu| = sigma_t sqrt(2/pi), std = sqrt(2) b.
    expected = 2.0 if distribution == "gaussian" else math.sqrt(2.0) * 2.0 * math.sqrt(2.0 / math.pi)
    assert best_std.item() == pytest.approx(expected, rel=0.02)
    means = torch.linspace(2.0, 8.0, 121)
    values = expected_nll(means, torch.tensor(0.7), target_mean, target_std, distribution)
    assert means[values.argmin()].item() == pytest.approx(5.0, abs=0.06)


def _teacher_checkpoints(tmp_path: Path, count: int = 2) -> list[str]:
    paths = []
    for index, member in enumerate(_tiny_members(count)):
        paths.append(str(save_checkpoint(tmp_path / f"member{index}.pt", member, member.config)))
    return paths


def test_distillation_run_writes_the_teachers_targets_and_learns_them(tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path / "student", max_steps=6)
    config.distill.teachers = tuple(_teacher_checkpoints(tmp_path))
    # The distillation terms alone, so what the student learns is the teacher's answer.
    for name in ("semantic_ce", "semantic_lovasz", "coarse_semantic_ce", "disparity", "disparity_nll"):
        setattr(config.loss, name, 0.0)
    data = ShiftedStereoDataset(length=2)
    trainer = Trainer(config, train_set=data, val_set=data)
    targets = tmp_path / "student" / "teacher_targets"
    assert (targets / TARGETS_MANIFEST).is_file() and len(list(targets.glob("*.npz"))) == 2
    sample = trainer.train_set[0]
    assert sample["teacher_probs"].shape == (10, 16, 32)  # 1/4 of 64x128
    assert sample["teacher_disparity_mean"].shape == (1, 32, 64)  # 1/2
    assert torch.allclose(sample["teacher_probs"].sum(0), torch.ones(16, 32), atol=1e-2)
    trainer.train()
    assert trainer.loss_history[-1] < trainer.loss_history[0]


def test_teacher_maps_follow_the_region_and_the_zoom() -> None:
    """Maps linear in the stored frame's coordinates come back exactly at the image's pixel centres;
    disparity grows with the zoom and a mono network's canonical depth shrinks with it; pixels showing
    padding beyond the frame are marked unknown."""
    h, w = 16, 32  # the stored maps of a 64x128 frame at 1/4 (probs) and 1/2 (geometry)
    u4 = (torch.arange(w) + 0.5) / w
    probs = torch.stack([u4.expand(h, w), 1 - u4.expand(h, w)])
    maps = {
        "probs": probs,
        "disparity_mean": torch.full((1, 2 * h, 2 * w), 10.0),
        "disparity_std": torch.full((1, 2 * h, 2 * w), 1.0),
        "depth_mean": torch.full((1, 2 * h, 2 * w), 20.0),
    }
    region = torch.tensor([0.1, 0.2, 0.85, 0.95])  # a zoom by 1 / 0.75
    out, valid = follow_region(maps, region, (64, 128))
    expected = 0.1 + 0.75 * (torch.arange(w) + 0.5) / w
    assert torch.allclose(out["probs"][0], expected.expand(h, w), atol=1e-5)
    assert torch.allclose(out["probs"].sum(0), torch.ones(h, w), atol=1e-5)
    assert torch.allclose(out["disparity_mean"], torch.full((1, 2 * h, 2 * w), 10.0 / 0.75))
    assert torch.allclose(out["disparity_std"], torch.full((1, 2 * h, 2 * w), 1.0 / 0.75))
    assert torch.allclose(out["depth_mean"], torch.full((1, 2 * h, 2 * w), 20.0 * 0.75))
    assert valid["valid_probs"].all() and valid["valid_geometry"].all()
    # Zoomed out: the image's outer columns and rows show padding.
    out, valid = follow_region(maps, torch.tensor([-0.25, -0.25, 1.25, 1.25]), (64, 128))
    known = valid["valid_probs"]
    u = -0.25 + 1.5 * (torch.arange(w) + 0.5) / w
    assert torch.equal(known[h // 2], (u >= 0) & (u <= 1)) and 0 < known.sum() < known.numel()
    inside = (u >= 0.5 / w) & (u <= 1 - 0.5 / w)  # between the stored map's outer pixel centres
    assert torch.allclose(out["probs"][0][:, inside], u[inside].expand(h, -1), atol=1e-5)


def test_distillation_loss_ignores_pixels_the_teacher_never_saw() -> None:
    loss = DistillationLoss("laplace")
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    probs = torch.full((1, 2, 4, 4), 0.5)
    probs[..., 2:] = torch.tensor([0.999, 0.001]).view(1, 2, 1, 1)  # a wrong target beyond the frame
    batch = {"has_teacher": torch.tensor([True]), "teacher_probs": probs}
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[..., 2:] = False
    everywhere = loss({"semantic_logits": logits}, batch)["distill_kl"]
    known = loss({"semantic_logits": logits}, batch | {"teacher_valid_probs": valid})["distill_kl"]
    assert everywhere.item() > 0.1 and known.item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_trains_with_zoom_and_crop(tmp_path: Path) -> None:
    """The teachers' augmentation is allowed: each sample's targets are its stored maps brought to its
    zoom and crop (what the tests above check), and the run learns them."""
    root = tmp_path / "data"
    generate_dataset(GeneratorConfig(sequences={"train": 1, "val": 1}, frames={"train": 3, "val": 2}), root)
    config = tiny_train_config(tmp_path / "student", max_steps=4)
    config.data.kind, config.data.root = "synthetic", str(root)
    config.data.augmentation = AugmentConfig(zoom_range=(1.1, 1.4), crop_size=(64, 128))
    config.distill.teachers = tuple(_teacher_checkpoints(tmp_path))
    trainer = Trainer(config)
    sample = trainer.train_set[0]
    with np.load(tmp_path / "student" / "teacher_targets" / "000000.npz") as stored:
        maps = {key: torch.from_numpy(stored[key].astype(np.float32)) for key in stored.files}
    expected, _ = follow_region(maps, sample["source_region"], (64, 128))
    assert not torch.equal(sample["source_region"], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(sample["teacher_probs"], expected["probs"], atol=1e-6)
    trainer.train()
    assert len(trainer.loss_history) == 4


def test_stale_teacher_targets_are_refused(tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path / "student", max_steps=1)
    config.distill.teachers = tuple(_teacher_checkpoints(tmp_path))
    Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
    with pytest.raises(UserError, match="delete the directory"):
        TeacherTargets(ShiftedStereoDataset(3), tmp_path / "student" / "teacher_targets")


def test_targets_of_other_teachers_are_refused(tmp_path: Path) -> None:
    """Same sample count, other members: the manifest's checkpoint digests tell them apart."""
    config = tiny_train_config(tmp_path / "student", max_steps=1)
    first, second = _teacher_checkpoints(tmp_path / "a"), _teacher_checkpoints(tmp_path / "b", count=3)[1:]
    config.distill.teachers = tuple(first)
    Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
    Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))  # same: reused
    config.distill.teachers = tuple(second)
    with pytest.raises(UserError, match="other teacher checkpoints"):
        Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
