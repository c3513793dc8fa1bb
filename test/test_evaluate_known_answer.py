"""`mtl-perception evaluate` on a dataset whose answer is known: a textured wall at one disparity.

The right view is the left one shifted by ``DISPARITY`` px, so disparity is that constant wherever
the left pixel has a partner, and depth is fx * baseline / DISPARITY. An oracle model (an ONNX graph
that outputs exactly that) must score perfectly through `evaluate --model`, and SGBM must be right
wherever it answers, with its holes counted as errors of the whole disparity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_data import write_png
from onnx import TensorProto, helper
from test_baseline_sgbm import texture

from mtl_perception.cli import main
from mtl_perception.data import layout
from mtl_perception.data.labels import class_table
from mtl_perception.model_info import FOCAL_LENGTH_KEY, ModelInfo

HEIGHT, WIDTH = 64, 192
DISPARITY = 8  # px; whole pixels, so the disparity PNG (value * 256) holds it exactly
FX, BASELINE = 48.0, 0.5  # depth 3.0 m, exact in the depth PNG too
ROAD = 0
FRAMES = 2


@pytest.fixture(scope="module")
def wall_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic-layout test split of FRAMES textured walls at DISPARITY, all labelled road."""
    root = tmp_path_factory.mktemp("known_answer")
    split, sequence = "test", layout.sequence_name("test", 0)
    manifest = {
        "format": layout.FORMAT,
        "version": layout.VERSION,
        "classes": class_table(),
        "splits": {split: [sequence]},
        "sequences": {sequence: {"split": split, "seed": 0, "frames": FRAMES}},
    }
    layout.manifest_path(root).write_text(json.dumps(manifest))
    calib = {"fx": FX, "baseline": BASELINE, "width": WIDTH, "height": HEIGHT, "rate_hz": layout.RATE_HZ}
    layout.calib_path(root, split, sequence).parent.mkdir(parents=True)
    layout.calib_path(root, split, sequence).write_text(json.dumps(calib))
    rows = [",".join(layout.STEERING_HEADER)] + [f"{f},{layout.frame_stamp_ns(f)},0.0" for f in range(FRAMES)]
    layout.steering_path(root, split, sequence).write_text("\n".join(rows) + "\n")
    # Left pixels x < DISPARITY have no partner in the right view: no label there (0 = invalid).
    has_partner = np.arange(WIDTH)[None, :].repeat(HEIGHT, axis=0) >= DISPARITY
    disparity_png = np.where(has_partner, DISPARITY * layout.DISPARITY_SCALE, 0).astype(np.uint16)
    depth_png = np.where(has_partner, FX * BASELINE / DISPARITY * layout.DEPTH_SCALE, 0).astype(np.uint16)
    for frame in range(FRAMES):
        wide = texture(HEIGHT, WIDTH + DISPARITY, seed=frame)
        views = {
            layout.LEFT_DIR: wide[:, :WIDTH],
            layout.RIGHT_DIR: wide[:, DISPARITY:],  # right(x) = left(x + DISPARITY)
            layout.DISPARITY_DIR: disparity_png,
            layout.DEPTH_DIR: depth_png,
            layout.SEMANTIC_DIR: np.full((HEIGHT, WIDTH), ROAD, np.uint8),
        }
        for kind, image in views.items():
            write_png(layout.frame_path(root, split, sequence, kind, frame), image)
    return root


def oracle_model(path: Path) -> Path:
    """A stereo ONNX model with the runtime's metadata that answers DISPARITY and road everywhere."""
    size = [1, 3, HEIGHT, WIDTH]
    nodes = [
        # A map of the input's size from the input itself (not a constant), so the graph is real.
        helper.make_node("ReduceMean", ["left"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "answer"], ["disparity"]),
        helper.make_node("Cast", ["zeros"], ["zero_ids"], to=TensorProto.INT32),
        helper.make_node("Add", ["zero_ids", "road"], ["semantic"]),
        helper.make_node("Identity", ["right"], ["unused_right"]),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("answer", TensorProto.FLOAT, [], [float(DISPARITY)]),
        helper.make_tensor("road", TensorProto.INT32, [], [ROAD]),
    ]
    graph = helper.make_graph(
        nodes,
        "oracle",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, size) for name in ("left", "right")],
        [
            helper.make_tensor_value_info("semantic", TensorProto.INT32, [1, HEIGHT, WIDTH]),
            helper.make_tensor_value_info("disparity", TensorProto.FLOAT, [1, HEIGHT, WIDTH]),
            helper.make_tensor_value_info("unused_right", TensorProto.FLOAT, size),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        mode="stereo",
        inputs={"left": tuple(size), "right": tuple(size)},
        outputs=("semantic", "disparity", "unused_right"),
        version="oracle",
        embedding_dim=0,
        input_size=(HEIGHT, WIDTH),
        max_disparity=32.0,
        classes=tuple(class_table()),
    )
    onnx.helper.set_model_props(model, info.metadata())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def mono_oracle_model(path: Path, depth: float, focal_length: float) -> Path:
    """A mono ONNX model that answers ``depth`` m and road everywhere, for a camera of ``focal_length`` px."""
    size = [1, 3, HEIGHT, WIDTH]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "answer"], ["depth"]),
        helper.make_node("Cast", ["zeros"], ["zero_ids"], to=TensorProto.INT32),
        helper.make_node("Add", ["zero_ids", "road"], ["semantic"]),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("answer", TensorProto.FLOAT, [], [depth]),
        helper.make_tensor("road", TensorProto.INT32, [], [ROAD]),
    ]
    graph = helper.make_graph(
        nodes,
        "mono_oracle",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, size)],
        [
            helper.make_tensor_value_info("semantic", TensorProto.INT32, [1, HEIGHT, WIDTH]),
            helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, HEIGHT, WIDTH]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        mode="mono",
        inputs={"image": tuple(size)},
        outputs=("semantic", "depth"),
        version="mono_oracle",
        embedding_dim=0,
        input_size=(HEIGHT, WIDTH),
        classes=tuple(class_table()),
        extra={FOCAL_LENGTH_KEY: repr(focal_length)},
    )
    onnx.helper.set_model_props(model, info.metadata())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def evaluate(tmp_path: Path, root: Path, *source: str) -> dict:
    out = tmp_path / "eval.json"
    assert main(["evaluate", *source, "--data", str(root), "--json", str(out)]) == 0
    return json.loads(out.read_text())["metrics"]


def test_oracle_model_scores_perfectly(tmp_path: Path, wall_root: Path) -> None:
    metrics = evaluate(tmp_path, wall_root, "--model", str(oracle_model(tmp_path / "oracle.onnx")))
    assert metrics["epe"] == 0.0 and metrics["d1_all"] == 0.0
    assert metrics["miou"] == 1.0 and metrics["iou"]["road"] == 1.0
    # Depth from the oracle's disparity and the dataset's fx and baseline: 3.0 m, as written.
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_mono_depth_is_scored_in_the_datasets_camera(tmp_path: Path, wall_root: Path) -> None:
    """The wall is 3 m away, seen with fx = 48 px. To a mono model that learned depth for a 96 px lens
    that image looks like a wall at 6 m (half the apparent size), so 6 m is its right answer."""
    wall = FX * BASELINE / DISPARITY
    model = mono_oracle_model(tmp_path / "mono.onnx", depth=wall * 96.0 / FX, focal_length=96.0)
    assert evaluate(tmp_path, wall_root, "--model", str(model))["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    # The same answer read as metric depth for this camera is 100 % off.
    unscaled = mono_oracle_model(tmp_path / "unscaled.onnx", depth=wall * 96.0 / FX, focal_length=FX)
    assert evaluate(tmp_path, wall_root, "--model", str(unscaled))["abs_rel"] == pytest.approx(1.0, abs=1e-6)


def test_sgbm_is_right_wherever_it_answers(tmp_path: Path, wall_root: Path) -> None:
    size = ["--size", str(HEIGHT), str(WIDTH), "--max-disparity", "16"]
    metrics = evaluate(tmp_path, wall_root, "--baseline", "sgbm", *size)
    # SGBM answers no pixel left of x = numDisparities (16): of the labelled columns
    # DISPARITY..WIDTH-1, those up to 15 are holes; the texture leaves no others (1 % slack).
    expected_holes = (16 - DISPARITY) / (WIDTH - DISPARITY)
    holes = 1.0 - metrics["sgbm_density"]
    assert holes == pytest.approx(expected_holes, abs=0.01)
    # Every hole is an error of the whole DISPARITY (predicted 0); every answer is exact here.
    assert metrics["d1_all"] == pytest.approx(holes, abs=1e-6)
    assert metrics["epe"] == pytest.approx(DISPARITY * holes, abs=0.05)
    assert metrics["abs_rel"] == pytest.approx(holes, abs=0.01)
