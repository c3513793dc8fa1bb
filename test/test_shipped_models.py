"""The models that ship in models/: the ONNX files match their checkpoints, and the defaults still
reach figures close to their model card on a freshly rendered, held-out test sequence.

The bag is rendered by the same generator as the training data, from the test split (seeds never
used in training), through `mtl-perception replay` in pipeline mode: the whole path a user scores a
bag with. Thresholds sit a little below the model card's split-wide figures (one short sequence
varies more than 160 frames); a model that ignored an input or a replay that scored the wrong
ground truth lands far outside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtl_perception.cli import main
from mtl_perception.data import layout
from mtl_perception.export.parity import check_parity

MODELS = Path(__file__).resolve().parent.parent / "models"
FRAMES = 8
SEQUENCE = "test_0000"

pytest.importorskip("pybullet")
pytest.importorskip("torch")


def _render(tmp_path_factory: pytest.TempPathFactory, rig_preset: str) -> Path:
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    root = tmp_path_factory.mktemp(f"shipped_{rig_preset}") / "synthetic"
    config = GeneratorConfig(
        sequences={"test": 1}, frames={"test": FRAMES}, bag_sequences={"test": 1}, rig_preset=rig_preset
    )
    generate_dataset(config, root, workers=1, overwrite=True)
    return root


@pytest.fixture(scope="module")
def rendered_test_sequence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One held-out test sequence at the models' 512x256 with its rosbag (ground truth included),
    its camera rig drawn from the sequence seed as in the models' training data."""
    return _render(tmp_path_factory, "random")


def _frames(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    import cv2

    sequence = root / "test" / SEQUENCE
    pairs = []
    for index in range(FRAMES):
        views = [
            cv2.cvtColor(cv2.imread(str(sequence / view / f"{index:06d}.png")), cv2.COLOR_BGR2RGB)
            for view in (layout.LEFT_DIR, layout.RIGHT_DIR)
        ]
        pairs.append((views[0], views[1]))
    return pairs


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_committed_onnx_matches_its_checkpoint(mode: str, rendered_test_sequence: Path) -> None:
    from mtl_perception.runtime import create_backend

    onnx = create_backend("onnxruntime", MODELS / f"{mode}_default.onnx", threads=1)
    torch_backend = create_backend("torch", MODELS / f"{mode}_default.pt", threads=1)
    assert onnx.info.input_size == torch_backend.info.input_size
    try:
        feeds = [
            {
                name: (view.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)
                for name, view in zip(onnx.info.inputs, (left, right), strict=False)
            }
            for left, right in _frames(rendered_test_sequence)
        ]
        # The export's own rule (export/parity.py): 99.5 % of class ids and 99 % of geometry pixels
        # agree, every other output within 1e-3.
        report = check_parity(torch_backend.infer, onnx.infer, feeds)
    finally:
        onnx.close()
        torch_backend.close()
    assert report.passed, report.summary()


def _replay(model: Path, root: Path, out: Path) -> dict:
    bag = layout.bag_dir(root, SEQUENCE)
    code = main(["replay", str(bag), "--model", str(model), "--out", str(out), "--backend", "onnxruntime"])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())["accuracy"]


def test_stereo_default_clears_its_model_card(rendered_test_sequence: Path, tmp_path: Path) -> None:
    accuracy = _replay(MODELS / "stereo_default.onnx", rendered_test_sequence, tmp_path / "stereo")
    # Model card (160 test frames): mIoU 77.0 %, D1-all 0.78 %, EPE 0.406 px, AbsRel 0.163; this
    # sequence measured mIoU 78.8 %, D1-all 1.28 %, EPE 0.608 px, AbsRel 0.166 (rendering is seeded;
    # the previous model, stage 3: 72.1 %, 1.34 %, 0.612, 0.154).
    assert accuracy["miou"] >= 0.74
    assert accuracy["d1_all"] <= 0.025
    assert accuracy["epe"] <= 0.8
    assert accuracy["abs_rel"] <= 0.2


def test_mono_default_clears_its_model_card(rendered_test_sequence: Path, tmp_path: Path) -> None:
    accuracy = _replay(MODELS / "mono_default.onnx", rendered_test_sequence, tmp_path / "mono")
    # Model card (160 test frames, a rig per sequence): mIoU 80.6 %, AbsRel 0.168; this sequence:
    # 81.5 %, 0.141 (its depth scaled by the runtime with the sequence's own fx).
    assert accuracy["miou"] >= 0.77
    assert accuracy["abs_rel"] <= 0.19


@pytest.fixture(scope="module")
def stereo_probes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The known-answer probes (mtl_perception/probes.py) on the shipped stereo model, through
    `mtl-perception evaluate --probes`."""
    out = tmp_path_factory.mktemp("probes") / "probes.json"
    main(["evaluate", "--model", str(MODELS / "stereo_default.onnx"), "--probes", "--json", str(out)])
    return json.loads(out.read_text())["probes"]


def test_stereo_default_follows_the_right_view(stereo_probes: dict) -> None:
    """Gates a disparity guessed from the left image cannot reach (the previous model: the right view
    replaced moved its disparity by 0.00-0.01 of the range, shifted textures came out at 22-33 px
    whatever the shift, random-dot D1 94 %). Measured: 0.34-0.45; within 0.0-0.8 px from 4 to 86 px;
    random-dot D1 6.9 %."""
    assert min(stereo_probes["right_view_change_of_range"].values()) >= 0.25
    for shift, median in stereo_probes["shift_median_prediction_px"].items():
        assert abs(median - float(shift)) <= 2.5, shift
    assert stereo_probes["random_dots_d1"] <= 0.10


@pytest.mark.xfail(
    strict=True,
    reason="issue 11 target not reached: random-dot D1 6.9 % (target 5 %)",
)
def test_stereo_default_passes_the_issue_probe_targets(stereo_probes: dict) -> None:
    """The probes' own thresholds: every shift within 1 px, random-dot D1 <= 5 %."""
    assert stereo_probes["failures"] == [] and stereo_probes["passed"]


STEERING_SEQUENCES, STEERING_FRAMES = 2, 40


@pytest.fixture(scope="module")
def held_out_drives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two test-split drives of 40 frames (4 s) with rosbags: seeds the steering head never saw (its
    data and its k-fold selection use the seed-7000 driving set, see config/train/steering.yaml)."""
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    root = tmp_path_factory.mktemp("shipped_steering") / "synthetic"
    config = GeneratorConfig(
        sequences={"test": STEERING_SEQUENCES},
        frames={"test": STEERING_FRAMES},
        bag_sequences={"test": STEERING_SEQUENCES},
    )
    generate_dataset(config, root, workers=1, overwrite=True)
    return root


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_shipped_steering_beats_steering_straight_on_held_out_drives(
    mode: str, held_out_drives: Path, tmp_path: Path
) -> None:
    """The shipped steering graph, run by `replay` as a user would, against the "steer straight"
    baseline on the same scored frames, both scored against the lane keeper's commands (the heads'
    `expert` labels, rebuilt from each drive's seed). A head that ignored the images (a constant) or a
    runtime that fed it the wrong frames would score at or above the baseline. The steering read back
    from the replay's predictions bag must be what replay scored against the bag's own (driven)
    commands."""
    from mtl_perception.data.rosbag_io import read_bag, steering_from_msg
    from mtl_perception.data.synthetic import read_steering
    from mtl_perception.replay.prediction_bag import NAMESPACE
    from mtl_perception.replay.session import PREDICTIONS_BAG
    from mtl_perception.training.steering_data import expert_labels

    model_se, straight_se, scored = 0.0, 0.0, 0
    for index in range(STEERING_SEQUENCES):
        sequence = layout.sequence_name("test", index)
        bag = layout.bag_dir(held_out_drives, sequence)
        out = tmp_path / sequence
        model = str(MODELS / f"{mode}_default.onnx")
        code = main(["replay", str(bag), "--model", model, "--out", str(out), "--backend", "onnxruntime"])
        assert code == 0
        steering = json.loads((out / "metrics.json").read_text())["steering"]
        # A full window of 16 consecutive frames: every frame from the 16th on is scored.
        assert steering["frames_scored"] == STEERING_FRAMES - 15
        topic = f"{NAMESPACE}/steering"
        predicted = np.degrees(
            [steering_from_msg(m.msg) for m in read_bag(out / PREDICTIONS_BAG, [topic]) if m.topic == topic]
        )
        truth = read_steering(layout.steering_path(held_out_drives, "test", sequence))
        driven = np.array([truth[frame] for frame in range(STEERING_FRAMES)], np.float32)
        expert = np.degrees(expert_labels(held_out_drives, "test", sequence, driven)[15:])
        assert len(predicted) == steering["frames_scored"]
        assert np.mean((predicted - np.degrees(driven[15:])) ** 2) == pytest.approx(
            steering["mse_deg2"], rel=1e-3
        )
        model_se += float(np.sum((predicted - expert) ** 2))
        straight_se += float(np.sum(expert**2))
        scored += len(predicted)
    model_mse, straight_mse = model_se / scored, straight_se / scored
    print(f"steering MSE {model_mse:.2f} deg^2, steer straight {straight_mse:.2f} deg^2 over {scored} frames")
    assert model_mse < 0.8 * straight_mse, (model_mse, straight_mse)
