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

MODELS = Path(__file__).resolve().parent.parent / "models"
FRAMES = 8
SEQUENCE = "test_0000"

pytest.importorskip("pybullet")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def rendered_test_sequence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One held-out test sequence at the models' 512x256, with its rosbag (ground truth included)."""
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    root = tmp_path_factory.mktemp("shipped") / "synthetic"
    config = GeneratorConfig(sequences={"test": 1}, frames={"test": FRAMES}, bag_sequences={"test": 1})
    generate_dataset(config, root, workers=1, overwrite=True)
    return root


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
    geometry = "disparity" if mode == "stereo" else "depth"
    agreement, worst = [], 0.0
    try:
        for left, right in _frames(rendered_test_sequence):
            feeds = {
                name: (view.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)
                for name, view in zip(onnx.info.inputs, (left, right), strict=False)
            }
            a = {k: np.array(v) for k, v in onnx.infer(feeds).items()}
            b = {k: np.array(v) for k, v in torch_backend.infer(feeds).items()}
            agreement.append(float((a["semantic"] == b["semantic"]).mean()))
            scale = np.abs(b[geometry]).mean()
            worst = max(worst, float(np.abs(a[geometry] - b[geometry]).max() / scale))
    finally:
        onnx.close()
        torch_backend.close()
    # Export parity in the model card: 100 % class agreement, 0.0002 px of disparity.
    assert min(agreement) >= 0.999
    assert worst <= 1e-3  # relative to the map's mean


def _replay(model: Path, root: Path, out: Path) -> dict:
    bag = layout.bag_dir(root, SEQUENCE)
    code = main(["replay", str(bag), "--model", str(model), "--out", str(out), "--backend", "onnxruntime"])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())["accuracy"]


def test_stereo_default_clears_its_model_card(rendered_test_sequence: Path, tmp_path: Path) -> None:
    accuracy = _replay(MODELS / "stereo_default.onnx", rendered_test_sequence, tmp_path / "stereo")
    # Model card (160 test frames): mIoU 83.7 %, D1-all 1.40 %, EPE 0.495 px, AbsRel 0.076; this
    # sequence measured mIoU 84.3 %, D1-all 0.53 %, EPE 0.357 px, AbsRel 0.067 (rendering is seeded).
    assert accuracy["miou"] >= 0.78
    assert accuracy["d1_all"] <= 0.025
    assert accuracy["epe"] <= 0.7
    assert accuracy["abs_rel"] <= 0.11


def test_mono_default_clears_its_model_card(rendered_test_sequence: Path, tmp_path: Path) -> None:
    accuracy = _replay(MODELS / "mono_default.onnx", rendered_test_sequence, tmp_path / "mono")
    # Model card (160 test frames): mIoU 86.4 %, AbsRel 0.100; this sequence: 86.6 %, 0.101.
    assert accuracy["miou"] >= 0.80
    assert accuracy["abs_rel"] <= 0.13
