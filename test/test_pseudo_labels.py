"""Partial labels and pseudo-labels (issue 14): label shares, the guided teacher, the writer, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_data import make_synthetic, write_png
from fixtures_training import tiny_model_dict

from mtl_perception.cli import main
from mtl_perception.data import layout
from mtl_perception.data.base import FrameRecord
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.partial_labels import (
    PSEUDO_MANIFEST,
    LabelShares,
    apply_partial_labels,
    frame_key,
    labelled_subset,
)
from mtl_perception.data.synthetic import SyntheticDataset
from mtl_perception.errors import UserError
from mtl_perception.networks import MonoNetConfig, model_config_from_dict, save_checkpoint
from mtl_perception.networks.guided import GuidedTeacherNet, guidance_map, teacher_meta
from mtl_perception.networks.mono import MonoMultiTaskNet
from mtl_perception.training.config import LossConfig, train_config_from_dict
from mtl_perception.training.losses import MultiTaskLoss
from mtl_perception.training.pseudo_labels import semantic_pseudo_label, write_pseudo_labels

TRAIN_FRAMES = 8


def _dataset(root: Path) -> SyntheticDataset:
    return SyntheticDataset(root, "train")


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """8 train frames, 2 val; train frame 0 has "far" pixels (FAR) in its geometry labels."""
    root = tmp_path / "synthetic"
    make_synthetic(root, frames={"train": TRAIN_FRAMES, "val": 2, "test": 2})
    sequence = layout.sequence_name("train", 0)
    for kind in (layout.DISPARITY_DIR, layout.DEPTH_DIR):
        path = layout.frame_path(root, "train", sequence, kind, 0)
        raw = np.full((32, 64), 10 * 256, dtype=np.uint16)
        raw[:8] = layout.FAR  # sky: a real label
        write_png(path, raw)
    return root


# -- label shares ---------------------------------------------------------------------------------


def test_label_subset_is_deterministic_exact_sized_and_nested() -> None:
    keys = [frame_key("train_0000", i) for i in range(100)]
    quarter = labelled_subset(keys, 0.25, "semantic", seed=0)
    assert len(quarter) == 25
    assert quarter == labelled_subset(reversed(keys), 0.25, "semantic", seed=0)  # order-free
    half = labelled_subset(keys, 0.5, "semantic", seed=0)
    assert len(half) == 50 and quarter < half  # a larger share keeps the smaller one's frames
    assert labelled_subset(keys, 0.25, "semantic", seed=1) != quarter  # the seed draws another subset
    assert labelled_subset(keys, 0.25, "depth", seed=0) != quarter  # each task its own draw
    assert labelled_subset(keys, 1.0, "semantic", seed=0) == frozenset(keys)


def _config(root: Path, out: Path, **data: object) -> dict:
    return {
        "data": {
            "kind": "synthetic",
            "root": str(root),
            "batch_size": 2,
            "workers": 0,
            "augmentation": {"zoom_range": [2.0, 2.0], "crop_size": [64, 128]},
        }
        | data,
        "model": tiny_model_dict("mono"),
        "optim": {"lr": 2e-3, "warmup_steps": 1},
        "train": {"max_steps": 2, "eval_every": 1000, "eval_batches": 1, "output_dir": str(out)},
        "checkpoints": {"every_steps": 1000},
    }


def test_share_is_the_same_for_every_train_seed(synthetic: Path, tmp_path: Path) -> None:
    from mtl_perception.training.trainer import Trainer

    dropped = []
    for seed in (0, 7):
        raw = _config(synthetic, tmp_path / f"s{seed}", semantic_label_share=0.5)
        raw["train"]["seed"] = seed
        trainer = Trainer(train_config_from_dict(raw))
        dropped.append(trainer.train_set.label_filter.drop_semantic)
    assert dropped[0] == dropped[1] and len(dropped[0]) == TRAIN_FRAMES // 2


def test_removed_labels_are_unknown_not_far(synthetic: Path) -> None:
    plain = _dataset(synthetic).load_arrays(0)
    assert (plain.disparity_valid & (plain.disparity == 0)).any()  # the source has far pixels here
    dataset = apply_partial_labels(_dataset(synthetic), "synthetic", LabelShares(semantic=0.0, depth=0.0))
    arrays = dataset.load_arrays(0)
    assert not arrays.has_semantic and not arrays.has_depth
    assert (arrays.semantic == IGNORE_INDEX).all()
    assert not arrays.disparity_valid.any() and not arrays.depth_valid.any()  # unknown everywhere
    assert not np.isinf(arrays.depth).any()  # far would be +inf: nothing reads as far
    sample = dataset[0]
    assert not sample["has_semantic"] and not sample["has_depth"]


def test_require_all_labels_keeps_only_frames_with_both(synthetic: Path) -> None:
    shares = LabelShares(semantic=0.5, depth=0.5)
    full = apply_partial_labels(_dataset(synthetic), "synthetic", shares)
    both = apply_partial_labels(_dataset(synthetic), "synthetic", shares, require_all_labels=True)
    plan = full.label_filter
    expected = [r.frame for r in full.records if not plan.lacks(frame_key(r.sequence, r.frame), "semantic")]
    expected = [f for f in expected if not plan.lacks(frame_key("train_0000", f), "depth")]
    assert [r.frame for r in both.records] == expected
    assert len(both) < len(full)


def test_batch_without_any_label_of_a_task_gives_zero_loss_not_nan(synthetic: Path) -> None:
    dataset = apply_partial_labels(_dataset(synthetic), "synthetic", LabelShares(semantic=0.0, depth=0.0))
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    size = tuple(batch["semantic"].shape[-2:])
    outputs = {
        "semantic_logits": torch.randn(2, 19, *size, requires_grad=True),
        "depth": (torch.rand(2, 1, *size) + 1.0).requires_grad_(),
        "depth_log_scale": torch.zeros(2, 1, *size, requires_grad=True),
    }
    total, terms = MultiTaskLoss(LossConfig(), 0.0, focal_length=40.0)(outputs, batch)
    assert total.item() == 0.0 and all(torch.isfinite(t) and t.item() == 0.0 for t in terms.values())
    total.backward()  # the graph still reaches every output (DDP needs it)
    assert outputs["depth"].grad is not None


# -- the guided teacher ---------------------------------------------------------------------------


def _tiny_mono(**changes: object) -> MonoNetConfig:
    config = model_config_from_dict(tiny_model_dict("mono") | changes)
    assert isinstance(config, MonoNetConfig)
    return config


def test_zero_initialised_guidance_gives_exactly_the_image_only_output() -> None:
    torch.manual_seed(0)
    config = _tiny_mono()
    image_only = MonoMultiTaskNet(config).eval()
    guided = GuidedTeacherNet(config, "depth").eval()
    missing, unexpected = guided.load_state_dict(image_only.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("guide.") for k in missing)
    image = torch.rand(2, 3, 64, 128)
    guidance = torch.rand(2, 2, 64, 128)
    with torch.no_grad():
        expected = image_only(image)
        got = guided(image, guidance)
    for key in ("semantic_logits", "depth", "depth_log_scale"):
        assert torch.equal(expected[key], got[key]), key
    assert GuidedTeacherNet(config, "none").state_dict().keys() == image_only.state_dict().keys()


def _depth_only_task(count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Noise images; each half of a frame is near (2 m) or far (20 m) at random, class = near/far.

    The image says nothing about the class: only a net that reads the depth can label it.
    """
    near_left = torch.rand(count, generator=generator) < 0.5
    depth = torch.full((count, 64, 128), 20.0)
    left_half = torch.zeros(64, 128, dtype=torch.bool)
    left_half[:, :64] = True
    near = torch.where(near_left.view(-1, 1, 1), left_half, ~left_half)
    depth[near] = 2.0
    return {
        "left": torch.rand(count, 3, 64, 128, generator=generator),
        "semantic": (~near).long(),  # class 0 near, 1 far
        "depth": depth,
        "depth_valid": torch.ones(count, 64, 128, dtype=torch.bool),
        "has_depth": torch.ones(count, dtype=torch.bool),
        "has_semantic": torch.ones(count, dtype=torch.bool),
        "fx": torch.full((count,), 128.0),
    }


def _fit_and_score(guidance: str) -> float:
    """Pixel accuracy on held-out frames after 40 Adam steps on the depth-only task."""
    torch.manual_seed(0)
    config = _tiny_mono(num_classes=2, focal_length=128.0)
    net = GuidedTeacherNet(config, guidance)
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss = torch.nn.CrossEntropyLoss()
    for _ in range(40):
        batch = _depth_only_task(4, generator)
        logits = net(batch["left"], guidance_map(guidance, batch, config))["semantic_logits"]
        optimizer.zero_grad()
        loss(logits, batch["semantic"]).backward()
        optimizer.step()
    net.eval()
    test = _depth_only_task(16, torch.Generator().manual_seed(99))
    with torch.no_grad():
        logits = net(test["left"], guidance_map(guidance, test, config))["semantic_logits"]
    return float((logits.argmax(1) == test["semantic"]).float().mean())


def test_guided_teacher_uses_its_guidance() -> None:
    guided, image_only = _fit_and_score("depth"), _fit_and_score("none")
    assert guided > 0.9, guided
    assert image_only < 0.7, image_only


def test_guidance_maps_tell_far_from_unknown() -> None:
    config = _tiny_mono()
    batch = {
        "depth": torch.tensor([[[0.25, float("inf"), 0.0]]]),
        "depth_valid": torch.tensor([[[True, True, False]]]),
        "has_depth": torch.tensor([True]),
        "fx": torch.tensor([config.focal_length]),
        "semantic": torch.tensor([[[3, IGNORE_INDEX, 1]]]),
        "has_semantic": torch.tensor([True]),
    }
    depth = guidance_map("depth", batch, config)
    assert depth[0, :, 0, 0].tolist() == [1.0, 1.0]  # nearer than min_depth: clamped to 1
    assert depth[0, :, 0, 1].tolist() == [0.0, 1.0]  # far: inverse 0, but labelled
    assert depth[0, :, 0, 2].tolist() == [0.0, 0.0]  # unknown
    semantic = guidance_map("semantic", batch, config)
    assert semantic.shape[1] == config.num_classes + 1
    assert semantic[0, 3, 0, 0] == 1 and semantic[0, -1, 0, 1] == 1 and semantic[0, 1, 0, 2] == 1


# -- writing and reading pseudo-labels ------------------------------------------------------------


def test_semantic_pseudo_label_keeps_only_confident_pixels() -> None:
    probs = torch.tensor([[0.95, 0.85], [0.9, 0.5]])  # top-class probability per pixel, class 1
    logits = torch.stack([torch.log1p(-probs.clamp(max=0.999)), torch.log(probs)])[None]
    labels, keep = semantic_pseudo_label(logits, (2, 2), threshold=0.9)
    assert keep.tolist() == [[True, False], [True, False]]
    assert labels.tolist() == [[1, IGNORE_INDEX], [1, IGNORE_INDEX]]


def _teacher_checkpoint(path: Path, guidance: str = "depth", target: str = "semantic") -> Path:
    torch.manual_seed(0)
    net = GuidedTeacherNet(_tiny_mono(), guidance)
    save_checkpoint(path, net, net.config, **teacher_meta(net, target, 16))
    return path


def _train_config(root: Path, out: Path, **data: object):
    return train_config_from_dict(_config(root, out, **data))


def test_writer_labels_only_frames_without_the_label_and_real_labels_win(
    synthetic: Path, tmp_path: Path
) -> None:
    teacher = _teacher_checkpoint(tmp_path / "teacher.pt")
    config = _train_config(synthetic, tmp_path / "run", semantic_label_share=0.5)
    config = dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, threshold=0.05))
    out = tmp_path / "pseudo"
    manifest = write_pseudo_labels(config, teacher, out, progress=False)
    plan = apply_partial_labels(_dataset(synthetic), "synthetic", LabelShares(semantic=0.5)).label_filter
    assert set(manifest["frames"]) == set(plan.drop_semantic)  # exactly the frames that lost the label
    written = {f"{p.parent.name}/{p.stem}" for p in (out / "semantic").rglob("*.png")}
    assert written == set(plan.drop_semantic)

    student = apply_partial_labels(
        _dataset(synthetic), "synthetic", LabelShares(semantic=0.5), pseudo_labels=out, teacher=str(teacher)
    )
    plain = _dataset(synthetic)
    for index, record in enumerate(student.records):
        arrays = student.load_arrays(index)
        assert arrays.has_semantic
        if frame_key(record.sequence, record.frame) in plan.drop_semantic:
            assert not np.array_equal(arrays.semantic, plain.load_arrays(index).semantic)
        else:  # a real label: never replaced, even if a file for this frame were in the folder
            assert np.array_equal(arrays.semantic, plain.load_arrays(index).semantic)
    # A pseudo-label planted for a labelled frame is still not read.
    kept = next(r for r in student.records if frame_key(r.sequence, r.frame) not in plan.drop_semantic)
    write_png(out / "semantic" / kept.sequence / f"{kept.frame:06d}.png", np.zeros((32, 64), np.uint8))
    manifest_path = out / PSEUDO_MANIFEST
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(
        json.dumps(data | {"frames": [*data["frames"], frame_key(kept.sequence, kept.frame)]})
    )
    index = student.records.index(kept)
    reopened = apply_partial_labels(
        _dataset(synthetic), "synthetic", LabelShares(semantic=0.5), pseudo_labels=out
    )
    assert np.array_equal(reopened.load_arrays(index).semantic, plain.load_arrays(index).semantic)
    # Rerunning with the same teacher and data keeps the folder (resumable), manifest untouched.
    before = manifest_path.read_text()
    write_pseudo_labels(config, teacher, out, progress=False)
    assert manifest_path.read_text() == before


def test_depth_pseudo_labels_are_valid_where_confident(synthetic: Path, tmp_path: Path) -> None:
    teacher = _teacher_checkpoint(tmp_path / "teacher.pt", guidance="semantic", target="depth")
    config = _train_config(synthetic, tmp_path / "run", depth_label_share=0.25)
    config = dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, depth_threshold=1e6))
    out = tmp_path / "pseudo_depth"
    manifest = write_pseudo_labels(config, teacher, out, progress=False)
    assert manifest["target"] == "depth" and len(manifest["frames"]) == 6
    student = apply_partial_labels(
        _dataset(synthetic), "synthetic", LabelShares(depth=0.25), pseudo_labels=out
    )
    key = manifest["frames"][0]
    index = next(i for i, r in enumerate(student.records) if frame_key(r.sequence, r.frame) == key)
    arrays = student.load_arrays(index)
    assert arrays.has_depth and arrays.depth_valid.all()  # a threshold nothing fails keeps every pixel
    finite = np.isfinite(arrays.depth)
    assert (arrays.depth[finite] > 0).all()
    # depth and disparity agree: d = fx * B / z (to the PNG's 1/256 quantisation)
    measured = finite & (arrays.disparity > 0)
    recon = arrays.fx * arrays.baseline / arrays.depth[measured]
    np.testing.assert_allclose(arrays.disparity[measured], recon, rtol=0.02, atol=2 / 256)


def test_a_student_trains_on_pseudo_depth(synthetic: Path, tmp_path: Path) -> None:
    from mtl_perception.training.trainer import Trainer

    teacher = _teacher_checkpoint(tmp_path / "teacher.pt", guidance="semantic", target="depth")
    config = _train_config(synthetic, tmp_path / "teacher_run", depth_label_share=0.25)
    write_pseudo_labels(config, teacher, tmp_path / "pseudo", progress=False)
    student = _train_config(
        synthetic, tmp_path / "student", depth_label_share=0.25, pseudo_labels=str(tmp_path / "pseudo")
    )
    trainer = Trainer(student)
    assert all(trainer.train_set[i]["has_depth"] for i in range(len(trainer.train_set)))
    trainer.train()
    assert (tmp_path / "student" / "final.pt").is_file()


def test_stale_pseudo_labels_are_refused(synthetic: Path, tmp_path: Path) -> None:
    teacher = _teacher_checkpoint(tmp_path / "teacher.pt")
    config = _train_config(synthetic, tmp_path / "run", semantic_label_share=0.5)
    out = tmp_path / "pseudo"
    write_pseudo_labels(config, teacher, out, progress=False)
    shares = LabelShares(semantic=0.5)
    with pytest.raises(UserError, match="stale pseudo-labels: made for label shares"):
        apply_partial_labels(
            _dataset(synthetic), "synthetic", LabelShares(semantic=0.5, seed=1), pseudo_labels=out
        )
    other = _teacher_checkpoint(tmp_path / "retrained.pt", guidance="none")  # other content
    with pytest.raises(UserError, match="stale pseudo-labels: made by a teacher"):
        apply_partial_labels(_dataset(synthetic), "synthetic", shares, pseudo_labels=out, teacher=str(other))
    copy = tmp_path / "copy_of_teacher.pt"  # the same content under another path is fine
    copy.write_bytes(teacher.read_bytes())
    apply_partial_labels(_dataset(synthetic), "synthetic", shares, pseudo_labels=out, teacher=str(copy))
    # Another frame list (a regenerated dataset) is stale too.
    make_synthetic(tmp_path / "other", frames={"train": TRAIN_FRAMES + 1, "val": 1})
    with pytest.raises(UserError, match="frames_sha256"):
        apply_partial_labels(
            SyntheticDataset(tmp_path / "other", "train"), "synthetic", shares, pseudo_labels=out
        )
    (out / PSEUDO_MANIFEST).unlink()  # an unfinished folder
    with pytest.raises(UserError, match="no finished pseudo-labels"):
        apply_partial_labels(_dataset(synthetic), "synthetic", shares, pseudo_labels=out)


# -- command line ---------------------------------------------------------------------------------


def test_cli_teacher_pseudo_labels_and_student(synthetic: Path, tmp_path: Path, capsys) -> None:
    teacher_yaml = tmp_path / "teacher.yaml"
    teacher_raw = _config(synthetic, tmp_path / "teacher", semantic_label_share=0.5)
    teacher_raw["teacher"] = {"guidance": "depth", "target": "semantic", "threshold": 0.05}
    teacher_yaml.write_text(yaml.safe_dump(teacher_raw))
    assert main(["train", "--config", str(teacher_yaml)]) == 2  # a teacher is not `train`'s
    assert "pseudo-label" in capsys.readouterr().err
    assert main(["pseudo-label", "--config", str(teacher_yaml)]) == 0
    out = tmp_path / "teacher" / "pseudo_labels"
    manifest = json.loads((out / PSEUDO_MANIFEST).read_text())
    assert len(manifest["frames"]) == TRAIN_FRAMES // 2 and manifest["teacher"]["guidance"] == "depth"
    assert (tmp_path / "teacher" / "final.pt").is_file()

    student_yaml = tmp_path / "student.yaml"
    student_raw = _config(
        synthetic,
        tmp_path / "student",
        semantic_label_share=0.5,
        pseudo_labels=str(out),
        pseudo_label_teacher=str(tmp_path / "teacher" / "best.pt"),
    )
    student_yaml.write_text(yaml.safe_dump(student_raw))
    assert main(["train", "--config", str(student_yaml)]) == 0
    assert (tmp_path / "student" / "final.pt").is_file()
    # The same student with another share: refused, with the reason.
    assert main(["train", "--config", str(student_yaml), "--set", "data.semantic_label_share=0.25"]) == 2
    assert "stale pseudo-labels" in capsys.readouterr().err


def test_frame_records_of_the_fixture_are_what_the_tests_assume(synthetic: Path) -> None:
    records = _dataset(synthetic).records
    assert len(records) == TRAIN_FRAMES and all(isinstance(r, FrameRecord) for r in records)
