"""TensorRT engine: cache key and sidecar, the clear failure without TensorRT/CUDA, and, on a machine
with TensorRT and a GPU, parity of the engine with ONNX Runtime on the shipped models.

The cache's build/rebuild/concurrency behaviour is in test_tensorrt_engine_cache.py (fake TensorRT).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mtl_perception.data.frames import frame_feeds, procedural_frames
from mtl_perception.export.parity import ParityTolerance, check_parity
from mtl_perception.runtime.backend import BackendUnavailableError, create_backend
from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend
from mtl_perception.runtime.tensorrt_engine import (
    EngineKey,
    TensorRTUnavailableError,
    engine_mismatch,
    engine_path_for,
    file_sha256,
    tensorrt_modules,
    write_sidecar,
)

MODELS = Path(__file__).resolve().parents[1] / "models"
KEY = EngineKey(
    onnx_sha256="ab" * 32,
    gpu_name="Orin",
    compute_capability="8.7",
    multiprocessor_count=16,
    tensorrt_version="10.3.0",
    precision="fp16",
)


def has_tensorrt_gpu() -> bool:
    try:
        tensorrt_modules()
    except TensorRTUnavailableError:
        return False
    return True


def test_cache_path_depends_on_every_key_field(tmp_path: Path) -> None:
    paths = {engine_path_for("models/stereo.onnx", KEY, tmp_path)}
    for name, value in [
        ("onnx_sha256", "cd" * 32),
        ("gpu_name", "NVIDIA H100"),
        ("compute_capability", "9.0"),
        ("multiprocessor_count", 8),
        ("tensorrt_version", "10.4.0"),
        ("precision", "fp32"),
    ]:
        paths.add(engine_path_for("models/stereo.onnx", dataclasses.replace(KEY, **{name: value}), tmp_path))
    assert len(paths) == 7
    assert engine_path_for("models/stereo.onnx", KEY, tmp_path) == engine_path_for(
        "x/stereo.onnx", KEY, tmp_path
    )
    assert engine_path_for("a.onnx", KEY, tmp_path).name.startswith("a-")


def test_sidecar_verification(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    assert "no engine" in engine_mismatch(engine, KEY)
    engine.write_bytes(b"serialized")
    assert "no sidecar" in engine_mismatch(engine, KEY)
    write_sidecar(engine, KEY)
    assert engine_mismatch(engine, KEY) is None
    other_gpu = dataclasses.replace(KEY, gpu_name="NVIDIA GeForce RTX 4090", tensorrt_version="10.5.0")
    reason = engine_mismatch(engine, other_gpu)
    assert "gpu_name" in reason and "tensorrt_version" in reason and "precision" not in reason
    engine.write_bytes(b"serializes")  # same size, other bytes: the sidecar no longer vouches for it
    assert "differ from the sha256" in engine_mismatch(engine, KEY)
    engine.write_bytes(b"serial")
    assert "torn or replaced" in engine_mismatch(engine, KEY)
    Path(f"{engine}.json").write_text("{not json")
    assert "unreadable sidecar" in engine_mismatch(engine, KEY)


def test_file_sha256_matches_hashlib_over_several_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 << 12)  # 5 MiB: more than one 1 MiB read
    model = tmp_path / "a.onnx"
    model.write_bytes(data)
    assert file_sha256(model) == hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(has_tensorrt_gpu(), reason="this machine has TensorRT and a GPU")
def test_tensorrt_backend_fails_with_one_clear_sentence(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"unused: the environment check comes first")
    with pytest.raises(BackendUnavailableError, match="TensorRT backend unavailable") as error:
        create_backend("tensorrt", model)
    message = str(error.value)
    expected = "pip install .[gpu]" if importlib.util.find_spec("tensorrt") is None else "no CUDA device"
    assert expected in message
    assert "\n" not in message


# The engine against ONNX Runtime on the CPU (the reference export checks PyTorch against), on the
# shipped models and real-looking frames. Limits: an FP32 engine may use TF32 on Ampere and newer,
# so it is held to a few tenths of a pixel; FP16 (about 3 significant digits) to a pixel / meter,
# 5e-2 on embedding, 97 % class agreement and 97 % of the geometry pixels (hard per-pixel choices
# flip on near-ties, more often at lower precision). A wrong input order, lost normalisation or
# swapped outputs miss these by tens of pixels and tens of percent.
ENGINE_TOLERANCE = {
    False: ParityTolerance(disparity=0.25, depth=0.25, other=1e-2, segmentation_agreement=99.0),
    True: ParityTolerance(
        disparity=1.0, depth=1.0, other=5e-2, segmentation_agreement=97.0, geometry_agreement=97.0
    ),
}


@pytest.mark.slow
@pytest.mark.skipif(
    not has_tensorrt_gpu(), reason="needs the tensorrt and cuda-python packages and a CUDA GPU"
)
@pytest.mark.parametrize(
    ("model", "fp16"),
    [("stereo_default.onnx", False), ("stereo_default.onnx", True), ("mono_default.onnx", True)],
)
def test_tensorrt_engine_matches_onnxruntime(model: str, fp16: bool, tmp_path: Path) -> None:
    onnx_path = MODELS / model
    engine = tmp_path / "model.engine"
    reference = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"])
    tensorrt = create_backend("tensorrt", onnx_path, engine_path=engine, fp16=fp16)
    assert tensorrt.name == "tensorrt" and tensorrt.info.outputs == reference.info.outputs
    feeds = frame_feeds(procedural_frames(reference.info.input_size, 3, seed=11), reference.info)
    report = check_parity(reference.infer, tensorrt.infer, feeds, ENGINE_TOLERANCE[fp16])
    assert report.passed, report.summary()
    first = {name: np.array(value) for name, value in tensorrt.infer(feeds[0]).items()}
    tensorrt.close()
    # A second backend loads the cached engine (no rebuild) and gives the same numbers.
    built = engine.stat().st_mtime_ns
    again = create_backend("tensorrt", onnx_path, engine_path=engine, fp16=fp16)
    assert engine.stat().st_mtime_ns == built
    for name, value in again.infer(feeds[0]).items():
        np.testing.assert_allclose(value, first[name], rtol=0, atol=1e-5)
    again.close()
