"""ONNX export of a tiny real network: names, metadata, parity with PyTorch, steering graph, CLI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mtl_perception.cli import main
from mtl_perception.contract import STEREO_OUTPUTS
from mtl_perception.data.frames import frame_feeds, procedural_frames
from mtl_perception.errors import UserError
from mtl_perception.export.parity import ParityTolerance, check_parity
from mtl_perception.model_info import steering_path_for
from mtl_perception.networks import (
    MonoNetConfig,
    SteeringHead,
    StereoNetConfig,
    build_model,
    load_steering_head,
    save_checkpoint,
    save_steering_head,
)
from mtl_perception.runtime import (
    CameraModel,
    ModelFileError,
    Pipeline,
    create_backend,
    read_model_info,
)

TINY = {
    "pretrained": False,
    "input_size": (64, 128),
    "decoder_channels": 16,
}
TINY_STEREO = StereoNetConfig(
    **TINY, max_disparity=16, matching_channels=8, aggregation_channels=4, refine_channels=8
)
WINDOW = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny stereo model saved as checkpoint, exported with the CLI."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model(TINY_STEREO)
    checkpoint = save_checkpoint(root / "tiny.pt", model, TINY_STEREO)
    save_steering_head(root / "steer.pt", SteeringHead.for_model(model, window=WINDOW))
    assert main(["export", str(checkpoint), "--frames", "2", "--steering", str(root / "steer.pt")]) == 0
    return root / "tiny.onnx"


def test_graph_has_design_names_static_shapes_and_metadata(exported: Path) -> None:
    model = onnx.load(str(exported))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["left", "right"]
    outputs = [o.name for o in model.graph.output]
    assert outputs == list(STEREO_OUTPUTS)
    assert STEREO_OUTPUTS[:3] == ("semantic", "semantic_uncertainty", "semantic_confidence")
    info = read_model_info(exported)
    assert info.mode == "stereo"
    assert info.input_size == (64, 128)
    assert info.inputs["left"] == (1, 3, 64, 128)
    assert info.max_disparity == 16.0
    assert info.embedding_dim == build_model(TINY_STEREO).embedding_dim > 0
    assert [c["name"] for c in info.classes][:2] == ["road", "sidewalk"]
    assert info.version


def test_onnxruntime_and_torch_agree_on_real_frames(exported: Path) -> None:
    ort_backend = create_backend("onnxruntime", exported, threads=1)
    torch_backend = create_backend("torch", exported.with_suffix(".pt"))
    assert ort_backend.info.outputs == torch_backend.info.outputs
    feeds = frame_feeds(procedural_frames((96, 256), 3, seed=5), ort_backend.info)
    report = check_parity(torch_backend.infer, ort_backend.infer, feeds, ParityTolerance())
    assert report.passed, report.summary()
    assert report.segmentation_agreement > 99.5
    # And through the whole pipeline at input resolution, with metric depth.
    left, right = procedural_frames((96, 256), 1, seed=6)[0]
    camera = CameraModel(fx=200.0, baseline=0.3)
    a = Pipeline(ort_backend).process(left, right, camera=camera)
    b = Pipeline(torch_backend).process(left, right, camera=camera)
    assert np.mean(a.semantic == b.semantic) > 0.995
    np.testing.assert_allclose(a.disparity, b.disparity, atol=0.05)
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-3, equal_nan=True)


def test_parity_detects_a_different_model(exported: Path) -> None:
    torch.manual_seed(1)
    other = build_model(TINY_STEREO)
    backend = create_backend("onnxruntime", exported)
    from mtl_perception.export.onnx_export import torch_infer
    from mtl_perception.networks import DeployModel

    feeds = frame_feeds(procedural_frames((64, 128), 1), backend.info)
    report = check_parity(torch_infer(DeployModel(other).eval(), backend.info), backend.infer, feeds)
    assert not report.passed
    assert any("disparity" in failure for failure in report.failures)


def test_geometry_parity_counts_pixels_within_tolerance_and_catches_a_wrong_border() -> None:
    """A few flipped near-ties pass (hard per-pixel choices, see ParityTolerance); a wrong border
    column or a shifted map fails; the maximum stays in the report either way."""
    want = np.random.default_rng(0).uniform(0, 30, (1, 64, 128)).astype(np.float32)

    def check(got: np.ndarray) -> object:
        return check_parity(lambda _: {"disparity": want}, lambda _: {"disparity": got}, [{}])

    flipped = want.copy()
    flipped.flat[::256] += 4.0  # 0.4 % of the pixels
    report = check(flipped)
    assert report.passed and report.max_abs["disparity"] == pytest.approx(4.0)
    assert report.within["disparity"] == pytest.approx(99.6, abs=0.01)
    border = want.copy()
    border[..., -2:] = 0.0  # 1.6 % of the pixels
    assert not check(border).passed
    assert not check(want + 0.1).passed
    nan = want.copy()
    nan[..., :4] = np.nan
    assert not check(nan).passed


def test_steering_graph_matches_torch_head_through_the_pipeline(exported: Path) -> None:
    steering_file = steering_path_for(exported)
    info = read_model_info(steering_file)
    # Single-threaded whatever is asked: a pool of its own would spin on the perception's cores.
    single = create_backend("onnxruntime", steering_file, threads=4)
    assert single._session.get_session_options().intra_op_num_threads == 1
    head, _ = load_steering_head(exported.parent / "steer.pt")
    assert (info.mode, info.window, info.embedding_dim) == ("steering", WINDOW, head.embedding_dim)
    model = create_backend("onnxruntime", exported)
    pipeline = Pipeline(model, steering_backend=create_backend("onnxruntime", steering_file))
    frames = procedural_frames((64, 128), WINDOW, seed=2)
    results = [pipeline.process(left, right) for left, right in frames]
    assert all(r.steering is None for r in results[:-1])
    embeddings = torch.from_numpy(np.stack([r.embedding for r in results])[None])
    assert results[-1].steering == pytest.approx(float(head(embeddings).detach()), abs=1e-4)


def test_mono_export_has_depth_outputs(tmp_path: Path) -> None:
    config = MonoNetConfig(**TINY)
    checkpoint = save_checkpoint(tmp_path / "mono.pt", build_model(config), config)
    assert main(["export", str(checkpoint), "--frames", "1", "--no-simplify"]) == 0
    backend = create_backend("auto", tmp_path / "mono.onnx")
    assert backend.info.mode == "mono" and "depth" in backend.info.outputs
    image = procedural_frames((64, 128), 1)[0][0]
    result = Pipeline(backend).process(image)
    assert result.depth.shape == (64, 128) and result.disparity is None


def test_auto_picks_onnxruntime_and_says_why(exported: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        backend = create_backend("auto", exported)
    assert backend.name == "onnxruntime"
    assert "auto -> onnxruntime" in caplog.text and "tensorrt:" in caplog.text


def test_torch_backend_found_beside_onnx(exported: Path) -> None:
    assert create_backend("torch", exported).name == "torch"


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        create_backend("auto", tmp_path / "nothing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ModelFileError, match=r"corrupt\.onnx"):
        create_backend("onnxruntime", corrupt)
    bad_checkpoint = tmp_path / "bad.pt"
    bad_checkpoint.write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"bad\.pt"):
        create_backend("torch", bad_checkpoint)
    with pytest.raises(UserError, match="unknown backend"):
        create_backend("tflite", corrupt)


def test_export_exits_non_zero_past_tolerance(exported: Path, tmp_path: Path) -> None:
    checkpoint = exported.with_suffix(".pt")
    args = ["export", str(checkpoint), "-o", str(tmp_path / "strict.onnx"), "--frames", "1", "--no-simplify"]
    assert main([*args, "--tol-segmentation", "100.1"]) == 1
    assert not (tmp_path / "strict.onnx").exists()
    assert onnx_mode(tmp_path / "strict.onnx.rejected") == "stereo"  # kept for inspection


def onnx_mode(path: Path) -> str:
    """The mode in an ONNX file's metadata (read_model_info insists on the .onnx suffix)."""
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}["mode"]


class EngineRequests:
    """Stands in for ensure_engine: records each request with the model file's bytes at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, bytes]] = []

    def __call__(self, onnx_path: str | Path, **kwargs: object) -> Path:
        self.calls.append((Path(onnx_path), Path(onnx_path).read_bytes()))
        return Path(f"{onnx_path}.engine")


def test_failed_parity_leaves_the_previous_model_and_builds_no_engine(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtl_perception.runtime import tensorrt_engine

    engine_requests = EngineRequests()
    monkeypatch.setattr(tensorrt_engine, "ensure_engine", engine_requests)
    target, steering = tmp_path / "model.onnx", tmp_path / "model.steering.onnx"
    target.write_bytes(exported.read_bytes())
    steering.write_bytes(b"previous steering graph")
    before = {path: path.read_bytes() for path in (target, steering)}
    args = ["export", str(exported.with_suffix(".pt")), "-o", str(target), "--frames", "1", "--no-simplify"]
    args += ["--steering", str(exported.parent / "steer.pt"), "--tensorrt", "--tol-segmentation", "100.1"]
    assert main(args) == 1
    assert {path: path.read_bytes() for path in (target, steering)} == before
    assert engine_requests.calls == []
    assert onnx_mode(Path(f"{target}.rejected")) == "stereo"
    assert onnx_mode(Path(f"{steering}.rejected")) == "steering"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx", "model.onnx.rejected", "model.steering.onnx", "model.steering.onnx.rejected"]
    )
    # A later export that passes replaces the model, then (only then) builds the engine for it.
    assert main([*args[:-2]]) == 0
    assert [path for path, _ in engine_requests.calls] == [target]
    assert engine_requests.calls[0][1] == target.read_bytes() != before[target]
    assert read_model_info(steering).mode == "steering"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.steering.onnx"]


def test_export_tensorrt_without_tensorrt_says_so_after_writing_the_model(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt now raises ImportError
    target = tmp_path / "model.onnx"
    args = ["export", str(exported.with_suffix(".pt")), "-o", str(target), "--frames", "1", "--no-simplify"]
    assert main([*args, "--tensorrt"]) == 2
    error = capsys.readouterr().err
    assert "TensorRT backend unavailable: the tensorrt Python package is not installed" in error
    assert read_model_info(target).mode == "stereo"


def test_onnxruntime_without_spin_wait_sets_the_session_option_and_keeps_results(exported: Path) -> None:
    backend = create_backend("onnxruntime", exported, threads=2, spin_wait=False)
    options = backend._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # spinning (the library default) leaves the entry unset
        create_backend("onnxruntime", exported)._session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning"
        )
    feeds = frame_feeds(procedural_frames((64, 128), 1, seed=2), backend.info)[0]
    reference = create_backend("onnxruntime", exported, threads=1).infer(feeds)
    outputs = backend.infer(feeds)
    for name, value in reference.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
