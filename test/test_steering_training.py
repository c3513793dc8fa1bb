"""Steering head training: it must learn what the frames say, and only that; the trained head ships
through export into the runtime unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_networks import tiny_stereo_config

from mtl_perception.cli import main
from mtl_perception.data.image_io import read_rgb
from mtl_perception.model_info import read_model_info, steering_path_for
from mtl_perception.networks import SteeringHead, build_model, load_steering_head, save_checkpoint
from mtl_perception.networks.heads import grid_embedding
from mtl_perception.runtime import Pipeline, create_backend
from mtl_perception.sim.generator import GeneratorConfig, generate_dataset
from mtl_perception.training.steering import (
    SteeringOptimConfig,
    SteeringTrainer,
    fit_head,
    predict,
    run_steering_training,
    steering_config_from_dict,
    steering_errors,
    weighted_mse,
)
from mtl_perception.training.steering_data import EncoderTail, SequenceFeatures, sequence_records

CHANNELS, CELLS, WINDOW, FRAMES = 4, 8, 4, 100
OPTIM = SteeringOptimConfig(steps=600, batch_size=32, lr=3e-3, warmup_steps=10, loss_lambda=2.0)


def toy_sequences(count: int, seed: int, informative: bool = True) -> list[SequenceFeatures]:
    """Random grid embeddings whose steering is "left cell brighter than right cell" of the newest frame
    (informative) or noise of the same spread drawn independently of the frames."""
    rng = np.random.default_rng(seed)
    sequences = []
    for index in range(count):
        features = rng.normal(size=(FRAMES, CHANNELS, CELLS)).astype(np.float32)
        signal = 0.1 * (features[:, 0, 0] - features[:, 0, CELLS - 1])
        steering = signal if informative else rng.permutation(signal)
        sequences.append(
            SequenceFeatures(
                f"s{index}", features.reshape(FRAMES, -1).astype(np.float16), steering.astype(np.float32)
            )
        )
    return sequences


def held_out_mse(train: list[SequenceFeatures], val: list[SequenceFeatures]) -> tuple[float, float]:
    """(head MSE, steer-straight MSE) on ``val`` after training on ``train``, in deg^2."""
    head = SteeringHead(CHANNELS * CELLS, window=WINDOW, width=16, queries=2, hidden=16)
    fit = fit_head(train, head, EncoderTail(None, (2, 4)), OPTIM, seed=0, desc="toy")
    prediction, target = predict(fit, val)
    return (
        steering_errors(prediction, target, OPTIM.loss_lambda)["mse_deg2"],
        steering_errors(np.zeros_like(target), target, OPTIM.loss_lambda)["mse_deg2"],
    )


def test_head_learns_steering_that_the_frames_determine():
    mse, straight = held_out_mse(toy_sequences(6, seed=0), toy_sequences(2, seed=1))
    assert mse < 0.15 * straight, (mse, straight)


def test_head_cannot_beat_straight_when_the_frames_say_nothing():
    """The control for the test above: same spread of labels, no relation to the frames."""
    mse, straight = held_out_mse(
        toy_sequences(6, seed=0, informative=False), toy_sequences(2, seed=1, informative=False)
    )
    assert mse > 0.7 * straight, (mse, straight)


def test_head_follows_the_newest_frame_under_the_shipped_recipe():
    """Labels set by the newest frame alone (frames independent, so the window's average says
    nothing), trained with the shipped config's head and schedule: the head must read the newest
    frame. A head whose regressor saw only the attention-pooled window failed this (MSE 6.3 against
    6.1 for steering straight): its queries stayed uniform over time within the schedule."""
    config = yaml.safe_load(Path("config/train/steering.yaml").read_text())["steering"]
    optim = SteeringOptimConfig(**config["optim"])
    dim, frames = 256, 100
    rng = np.random.default_rng(0)

    def sequences(count: int) -> list[SequenceFeatures]:
        out = []
        for index in range(count):
            features = rng.normal(size=(frames, dim)).astype(np.float32)
            steering = 0.03 * (features[:, 0] - features[:, 1])
            out.append(SequenceFeatures(f"s{index}", features.astype(np.float16), steering))
        return out

    torch.manual_seed(0)
    head = SteeringHead(dim, **config["head"])
    fit = fit_head(sequences(24), head, EncoderTail(None, (2, 4)), optim, seed=0, desc="newest")
    prediction, target = predict(fit, sequences(6))
    mse = steering_errors(prediction, target, optim.loss_lambda)["mse_deg2"]
    straight = steering_errors(np.zeros_like(target), target, optim.loss_lambda)["mse_deg2"]
    assert mse < 0.5 * straight, (mse, straight)


def test_weighted_mse_weights_each_error_by_exp_lambda_abs_target():
    prediction, target = torch.tensor([0.0, 0.0]), torch.tensor([0.1, -0.3])
    expected = (np.exp(2.0 * 0.1) * 0.01 + np.exp(2.0 * 0.3) * 0.09) / 2
    assert float(weighted_mse(prediction, target, 2.0)) == pytest.approx(expected, rel=1e-6)


def driving_data_config() -> GeneratorConfig:
    """Two tiny training drives and one test drive."""
    return GeneratorConfig(
        width=128,
        height=64,
        sequences={"train": 2, "test": 1},
        frames={"train": 6, "test": 6},
        bag_sequences={},
        density=0.5,
        rate_hz=5.0,  # not the default, so the head's recorded frame period must come from the data
    )


@pytest.fixture(scope="module")
def driving_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("steering") / "data"
    generate_dataset(driving_data_config(), root)
    return root


def test_steering_training_exports_a_head_the_runtime_runs_unchanged(driving_data: Path, tmp_path: Path):
    torch.manual_seed(0)
    config = tiny_stereo_config()
    model = build_model(config)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model, config)
    steering_yaml = tmp_path / "steering.yaml"
    steering_yaml.write_text(
        yaml.safe_dump(
            {
                "steering": {
                    "model": str(checkpoint),
                    "folds": 2,
                    "output_dir": str(tmp_path / "run"),
                    "cache_dir": str(tmp_path / "cache"),
                    "data": {"root": str(driving_data)},
                    "head": {"window": WINDOW, "width": 8, "queries": 2, "hidden": 8},
                    "optim": {"steps": 5, "batch_size": 4, "warmup_steps": 1},
                }
            }
        )
    )
    assert main(["train", "--config", str(steering_yaml)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["cross_validation"]["folds"] == 2
    assert metrics["scale"]["train_sequences"] == 2 and metrics["test"]["windows"] == 6 - WINDOW + 1
    # A second run reuses the finished folds and the encoded frames.
    fold_file = tmp_path / "run" / "folds" / "fold_0.json"
    stamp = fold_file.stat().st_mtime_ns
    assert main(["train", "--config", str(steering_yaml)]) == 0
    assert fold_file.stat().st_mtime_ns == stamp
    # Other data under the same root (a regenerated manifest) is not the same run: folds are redone.
    manifest = driving_data / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    assert main(["train", "--config", str(steering_yaml)]) == 0
    assert fold_file.stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"] != metrics["dataset"]

    head_file = tmp_path / "run" / "steering_head.pt"
    assert main(["export", str(checkpoint), "--frames", "1", "--steering", str(head_file)]) == 0
    onnx_path = checkpoint.with_suffix(".onnx")
    assert read_model_info(steering_path_for(onnx_path)).frame_period == pytest.approx(0.2)

    # The runtime's steering on the test sequence equals the trained head on the torch embeddings.
    head, _ = load_steering_head(head_file)
    records = next(iter(sequence_records(driving_data, "test").values()))
    pipeline = Pipeline(
        create_backend("onnxruntime", onnx_path),
        steering_backend=create_backend("onnxruntime", steering_path_for(onnx_path)),
    )
    lefts = [read_rgb(r.left) for r in records]
    published = [
        pipeline.process(left, read_rgb(r.right)).steering for left, r in zip(lefts, records, strict=True)
    ]
    assert all(s is None for s in published[: WINDOW - 1])
    with torch.no_grad():
        images = torch.from_numpy(np.stack(lefts)).permute(0, 3, 1, 2).float() / 255.0
        embeddings = grid_embedding(model.eval().backbone(images)[-1], config.embedding_grid)
        expected = [float(head(embeddings[end - WINDOW + 1 : end + 1][None])) for end in range(WINDOW - 1, 6)]
    np.testing.assert_allclose(published[WINDOW - 1 :], expected, atol=1e-4)


def test_a_steering_config_with_a_bad_encoder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "steering.yaml"
    path.write_text(yaml.safe_dump({"steering": {"model": "x.pt", "encoder": "resnet"}}))
    assert main(["train", "--config", str(path)]) == 2
    assert "encoder must be one of" in capsys.readouterr().err


def test_the_finetuned_variant_trains_only_the_last_encoder_step(driving_data: Path, tmp_path: Path):
    torch.manual_seed(0)
    config = tiny_stereo_config()
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", build_model(config), config)
    steering = steering_config_from_dict(
        {
            "steering": {
                "model": str(checkpoint),
                "encoder": "multitask_finetuned",
                "folds": 2,
                "output_dir": str(tmp_path / "run"),
                "cache_dir": str(tmp_path / "cache"),
                "data": {"root": str(driving_data)},
                "head": {"window": WINDOW, "width": 8, "queries": 2, "hidden": 8},
                "optim": {
                    "steps": 3,
                    "batch_size": 4,
                    "warmup_steps": 1,
                    "encoder_lr": 0.1,
                    "consecutive_windows": 2,
                },
            }
        }
    )
    trainer = SteeringTrainer(steering)
    head, tail = trainer.new_fit_parts()
    before = {k: v.clone() for k, v in tail.backbone.state_dict().items()}
    fit_head(trainer.train, head, tail, steering.optim, seed=0, desc="finetune")
    changed = {k for k, v in tail.backbone.state_dict().items() if not torch.equal(v, before[k])}
    last_step = {k for k in before if k.startswith(f"body.blocks.{len(tail.backbone.body.blocks) - 1}.")}
    assert changed and changed <= last_step
    metrics = run_steering_training(steering)
    assert metrics["encoder"] == "multitask_finetuned"
    # The head ships with its own encoder: the model with the trained last step, exportable together.
    finetuned, head = tmp_path / "run" / "finetuned_model.pt", tmp_path / "run" / "steering_head.pt"
    assert main(["export", str(finetuned), "--frames", "1", "--steering", str(head)]) == 0


def test_expert_labels_are_rebuilt_from_the_seed_and_checked_against_the_stored_drive(driving_data: Path):
    from mtl_perception.data.synthetic import read_steering
    from mtl_perception.errors import UserError
    from mtl_perception.training.steering_data import expert_labels

    stored = read_steering(driving_data / "test" / "test_0000" / "steering.csv")
    driven = np.array([stored[f] for f in range(len(stored))], np.float32)
    expert = expert_labels(driving_data, "test", "test_0000", driven)
    assert expert.shape == driven.shape and np.all(np.abs(expert) <= 0.5)
    assert not np.allclose(expert, driven)  # the driver's wander is not in the expert's command
    with pytest.raises(UserError, match="does not reproduce the stored steering"):
        expert_labels(driving_data, "test", "test_0000", driven + 0.01)


def test_the_expert_steers_back_to_the_lane_centre():
    from mtl_perception.sim.ego import pure_pursuit
    from mtl_perception.sim.road import random_road

    road = random_road(np.random.default_rng(0), length=100.0, max_curvature=0.0)  # straight along +x
    centre = -road.lane_width / 2
    left_of_centre = np.array([0.0, centre + 1.0])
    right_of_centre = np.array([0.0, centre - 1.0])
    assert pure_pursuit(road, left_of_centre, 0.0, 0.0, centre, 10.0) < 0  # right turn
    assert pure_pursuit(road, right_of_centre, 0.0, 0.0, centre, 10.0) > 0
    assert pure_pursuit(road, np.array([0.0, centre]), 0.0, 0.0, centre, 10.0) == pytest.approx(0.0, abs=1e-9)
