"""Trainer: strict config, loss goes down, exact resume, 2-process gloo DDP, evaluate's JSON."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from fixtures_data import make_synthetic
from fixtures_training import ShiftedStereoDataset, tiny_model_dict, tiny_train_config

from mtl_perception.cli import main
from mtl_perception.config import ConfigError
from mtl_perception.contract import STEREO_OUTPUTS
from mtl_perception.errors import UserError
from mtl_perception.networks.backbone import sequential_steps
from mtl_perception.training.config import load_train_config, read_training_yaml, train_config_from_dict
from mtl_perception.training.state import latest_state
from mtl_perception.training.steering import is_steering_config, steering_config_from_dict
from mtl_perception.training.trainer import BEST_NAME, FINAL_NAME, Trainer

REPO = Path(__file__).resolve().parents[1]


def test_config_refuses_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        train_config_from_dict({"optim": {"learning_rate": 1e-3}})
    with pytest.raises(ConfigError, match="optim: lr: expected float"):
        train_config_from_dict({"optim": {"lr": "fast"}})
    path = tmp_path / "t.yaml"
    path.write_text("train:\n  max_steps: 5\n")
    assert load_train_config(path, ["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(path, ["train.max_step=4"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_train_config(path, ["train.max_steps=true"])


TRAIN_CONFIGS = sorted((REPO / "config" / "train").glob("*.yaml"))
NETWORK_CONFIGS = [path.name for path in TRAIN_CONFIGS if not is_steering_config(read_training_yaml(path))]
STEERING_CONFIGS = [path.name for path in TRAIN_CONFIGS if is_steering_config(read_training_yaml(path))]


@pytest.mark.parametrize("name", STEERING_CONFIGS)
def test_shipped_steering_configs_load(name: str) -> None:
    steering_config_from_dict(read_training_yaml(REPO / "config" / "train" / name))


@pytest.mark.parametrize("name", NETWORK_CONFIGS)
def test_shipped_configs_load(name: str) -> None:
    from mtl_perception.networks import model_config_from_dict

    config = load_train_config(REPO / "config" / "train" / name)
    model_config_from_dict(config.model)


def test_the_stereo_students_teachers_are_committed_and_fit_it() -> None:
    """stereo_distilled.yaml distils from committed checkpoints (models/teachers), so a fresh clone can
    rerun it; each member loads as a network of the student's mode, input size and range."""
    from mtl_perception.networks import load_checkpoint
    from mtl_perception.training.distill import teacher_fingerprint

    config = load_train_config(REPO / "config" / "train" / "stereo_distilled.yaml")
    teachers = [str(REPO / path) for path in config.distill.teachers]
    assert len(set(teacher_fingerprint(teachers))) == len(teachers) >= 3  # three different networks
    for path in teachers:
        model, _, _ = load_checkpoint(path)
        assert model.config.mode == config.model["mode"]
        assert list(model.config.input_size) == list(config.model["input_size"])
        assert model.config.max_disparity == config.model["max_disparity"]


def test_three_steps_lower_the_loss_and_write_checkpoints(tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path, max_steps=3, eval_every=3)
    # Two fully labelled samples = one batch, so every step sees the same data.
    data = ShiftedStereoDataset(length=2)
    for sample in data.samples:
        sample["has_semantic"] = sample["has_depth"] = True
    trainer = Trainer(config, train_set=data, val_set=data)
    metrics = trainer.train()
    assert len(trainer.loss_history) == 3
    assert trainer.loss_history[-1] < trainer.loss_history[0]
    assert {"miou", "epe", "d1_all", "score"} <= set(metrics)
    assert (tmp_path / BEST_NAME).is_file() and (tmp_path / FINAL_NAME).is_file()
    assert latest_state(tmp_path).name == "step_00000003.pt"


def test_resume_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    data = ShiftedStereoDataset(length=8)  # 4 steps per epoch: the run crosses an epoch boundary
    full = Trainer(tiny_train_config(tmp_path / "full", max_steps=6), train_set=data, val_set=data)
    full.train()

    cut_dir = tmp_path / "cut"
    first = Trainer(tiny_train_config(cut_dir, max_steps=6), train_set=data, val_set=data, max_minutes=0.0)
    first.train()  # budget already spent: stops after one step with a saved state
    assert first.step == 1 and latest_state(cut_dir) is not None
    resumed = Trainer(tiny_train_config(cut_dir, max_steps=6), train_set=data, val_set=data, resume=True)
    assert resumed.step == 1
    resumed.train()

    assert first.loss_history[0] == pytest.approx(full.loss_history[0], rel=1e-6)
    torch.testing.assert_close(torch.tensor(resumed.loss_history), torch.tensor(full.loss_history[1:]))
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def _ddp_worker(rank: int, world_size: int, port: int, output_dir: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    data = ShiftedStereoDataset(length=8)
    trainer = Trainer(tiny_train_config(Path(output_dir), max_steps=2), train_set=data, val_set=data)
    trainer.train()
    # Parameters only: BatchNorm running statistics stay per rank (DDP broadcasts rank 0's before
    # each forward, and only rank 0 saves checkpoints).
    weights = {name: p.detach() for name, p in trainer.model.named_parameters()}
    torch.save({"weights": weights, "losses": trainer.loss_history}, Path(output_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0["losses"] != rank1["losses"]  # each rank trained on its own shard
    for name, value in rank0["weights"].items():
        torch.testing.assert_close(value, rank1["weights"][name], msg=name)
    data = ShiftedStereoDataset(4)
    initial = dict(
        Trainer(tiny_train_config(tmp_path / "init"), train_set=data, val_set=data).model.named_parameters()
    )
    assert any(not torch.equal(initial[k], v) for k, v in rank0["weights"].items())


def test_evaluate_writes_json_for_checkpoint_and_sgbm(tmp_path: Path) -> None:
    from mtl_perception.networks import build_model, model_config_from_dict, save_checkpoint

    make_synthetic(tmp_path / "data", frames={"test": 2})
    config = model_config_from_dict(tiny_model_dict("stereo"))
    save_checkpoint(tmp_path / "model.pt", build_model(config), config, data_kind="synthetic")
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "model.pt"),
                "--data",
                str(tmp_path / "data"),
                "--split",
                "test",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())["metrics"]
    for key in (
        "miou",
        "pixel_accuracy",
        "epe",
        "d1_all",
        "abs_rel",
        "seg_ause",
        "disparity_ause",
    ):
        assert isinstance(metrics[key], float), key
    # ECE is of the top-class probability: measured once the model outputs semantic_confidence.
    assert isinstance(metrics["seg_ece"], float) == ("semantic_confidence" in STEREO_OUTPUTS)
    assert set(metrics["iou"]) >= {"road", "car"}
    assert len(metrics["disparity_sparsification"]["curve"]) == 20

    assert (
        main(
            [
                "evaluate",
                "--baseline",
                "sgbm",
                "--data",
                str(tmp_path / "data"),
                "--split",
                "test",
                "--size",
                "64",
                "128",
                "--max-disparity",
                "32",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    sgbm = json.loads(out.read_text())["metrics"]
    assert sgbm["epe"] > 0 and 0 <= sgbm["d1_all"] <= 1 and 0 <= sgbm["sgbm_density"] <= 1
    assert sgbm["miou"] is None  # SGBM has no segmentation


def test_procedural_kind_trains_and_validates_on_fixed_pairs(tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path, max_steps=2, eval_every=2)
    config.data.kind = "procedural"
    config.data.procedural_val_pairs = 2
    trainer = Trainer(config)
    assert len(trainer.train_set) == 2 * config.data.batch_size  # a fresh pair per sample of the run
    metrics = trainer.train()
    assert 0.0 <= metrics["d1_all"] <= 1.0 and metrics["epe"] > 0  # disparity is scored on them
    assert len(trainer.loss_history) == 2 and trainer.loss_history[0] > 0


def test_procedural_share_mixes_pairs_into_the_training_split(tmp_path: Path) -> None:
    make_synthetic(tmp_path / "data", frames={"train": 4, "val": 1})
    config = tiny_train_config(tmp_path / "run")
    config.data.root = str(tmp_path / "data")
    config.data.procedural_share = 0.5
    trainer = Trainer(config)
    sources = [type(part).__name__ for part in trainer.train_set.datasets]
    assert sources == ["SyntheticDataset", "ProceduralStereoDataset"]
    assert len(trainer.train_set.datasets[1]) == len(trainer.train_set.datasets[0])  # half of the mix


def test_mix_root_brings_its_share_of_another_dataset_into_training_only(tmp_path: Path) -> None:
    make_synthetic(tmp_path / "data", frames={"train": 6, "val": 1})
    make_synthetic(tmp_path / "flying", frames={"train": 2, "val": 1}, seed=5)
    config = tiny_train_config(tmp_path / "run")
    config.data.root = str(tmp_path / "data")
    config.data.mix_root = str(tmp_path / "flying")
    config.data.mix_share = 0.25
    config.data.procedural_share = 0.25
    trainer = Trainer(config)
    own, procedural, mixed = trainer.train_set.datasets
    # Half of 12 samples are the root's 6 frames, a quarter each procedural and mixed-in (cycled).
    assert (len(own), len(procedural), len(mixed)) == (6, 3, 3)
    assert [mixed.dataset.records[i].frame for i in mixed.indices] == [0, 1, 0]
    assert mixed.dataset.root == tmp_path / "flying"
    assert trainer.val_set.root == tmp_path / "data"  # validation stays on root


def test_init_checkpoint_starts_from_its_weights_and_refuses_another_model(tmp_path: Path) -> None:
    first = Trainer(
        tiny_train_config(tmp_path / "a", max_steps=1),
        train_set=ShiftedStereoDataset(2),
        val_set=ShiftedStereoDataset(2),
    )
    first.train()
    start = tiny_train_config(tmp_path / "b", init_checkpoint=str(tmp_path / "a" / FINAL_NAME))
    second = Trainer(start, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor, msg=name)
    other = tiny_train_config(tmp_path / "c", init_checkpoint=str(tmp_path / "a" / FINAL_NAME))
    other.model["matching_channels"] = 16
    with pytest.raises(UserError, match="init_checkpoint"):
        Trainer(other, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))


def test_a_module_added_to_a_trained_net_trains_alone_and_the_rest_stays_as_loaded(tmp_path: Path) -> None:
    """init_checkpoint + a model section that adds hypothesis selection + optim.trainable: the new
    module starts fresh and trains, the refinement trains, every other weight and batch-norm
    statistic stays bit-identical to the checkpoint (what keeps the steering head valid)."""
    first = Trainer(
        tiny_train_config(tmp_path / "a", max_steps=1),
        train_set=ShiftedStereoDataset(2),
        val_set=ShiftedStereoDataset(2),
    )
    first.train()
    loaded = {name: tensor.clone() for name, tensor in first.model.state_dict().items()}
    config = tiny_train_config(tmp_path / "b", max_steps=2, init_checkpoint=str(tmp_path / "a" / FINAL_NAME))
    config.model["hypothesis_selection"] = True
    config.optim.trainable = ("hypothesis_selection.", "refine.")
    second = Trainer(config, train_set=ShiftedStereoDataset(4), val_set=ShiftedStereoDataset(2))
    fresh = {name: tensor.clone() for name, tensor in second.model.state_dict().items()}
    second.train()
    after = second.model.state_dict()
    trained = [name for name in after if name.startswith(("hypothesis_selection.", "refine."))]
    assert any(not torch.equal(after[name], fresh[name]) for name in trained if "selection" in name)
    assert any(not torch.equal(after[name], loaded[name]) for name in trained if name.startswith("refine."))
    for name, tensor in after.items():
        if name not in trained:
            assert torch.equal(tensor, loaded[name]), name  # running statistics included

    back = tiny_train_config(tmp_path / "c", init_checkpoint=str(tmp_path / "b" / FINAL_NAME))
    with pytest.raises(UserError, match="lacks"):  # weights of a module this model does not have
        Trainer(back, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
    config.optim.trainable = ("no_such_module.",)
    with pytest.raises(UserError, match="no_such_module"):
        Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))


def test_frozen_backbone_levels_keep_their_weights_and_statistics(tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path, max_steps=2)
    config.optim.frozen_backbone_levels = 1
    trainer = Trainer(config, train_set=ShiftedStereoDataset(2), val_set=ShiftedStereoDataset(2))
    backbone = trainer.model.backbone
    frozen_end = backbone.level_steps[0] + 1  # every step up to the 1/4 features
    before = {name: t.clone() for name, t in backbone.state_dict().items()}
    trainer.train()
    after = backbone.state_dict()
    prefixes = [f"body.{step}." for step in sequential_steps(backbone.body)[0][:frozen_end]]
    frozen = {name for name in after if name.startswith(tuple(prefixes))}
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)  # BN running stats too
    changed = [name for name in after if name not in frozen and not torch.equal(before[name], after[name])]
    assert changed  # the deeper stages did train
    assert all(not module.training for module in backbone.steps[:frozen_end])
    assert not any(p.requires_grad for step in backbone.steps[:frozen_end] for p in step.parameters())
