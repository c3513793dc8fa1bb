"""TensorRT engine cache logic and the clear failure on machines without TensorRT/CUDA (CPU-testable)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import pytest

from mtl_perception.export.tensorrt_engine import (
    EngineKey,
    TensorRTUnavailableError,
    engine_mismatch,
    engine_path_for,
    file_sha256,
    tensorrt_modules,
    write_sidecar,
)
from mtl_perception.runtime.backend import BackendUnavailableError, create_backend

KEY = EngineKey(
    onnx_sha256="ab" * 32,
    gpu_name="NVIDIA Orin",
    compute_capability="8.7",
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
        ("tensorrt_version", "10.4.0"),
        ("precision", "fp32"),
    ]:
        paths.add(engine_path_for("models/stereo.onnx", dataclasses.replace(KEY, **{name: value}), tmp_path))
    assert len(paths) == 6
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
