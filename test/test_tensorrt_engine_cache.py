"""Known answers for the TensorRT engine cache, run against fake tensorrt/CUDA modules that record
every build: when it builds, when it must not, what a torn file or a concurrent builder does."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fixtures_tensorrt import ORIN, RTX, FakeCudart, FakeGpu, FakeTensorRT, engine_payload, install

from mtl_perception.errors import UserError
from mtl_perception.runtime import tensorrt_engine
from mtl_perception.runtime.tensorrt_engine import (
    TensorRTUnavailableError,
    current_key,
    engine_mismatch,
    ensure_engine,
    file_sha256,
    sidecar_path,
)


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    return FakeCudart([ORIN])


@pytest.fixture
def trt(cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    fake = FakeTensorRT(cudart)
    install(fake, cudart, monkeypatch)
    return fake


@pytest.fixture
def onnx(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx graph A")
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "model.engine"


def assert_consistent(engine: Path, onnx: Path) -> None:
    """Engine and sidecar agree with each other and the model, and no temporary file is left."""
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["engine_sha256"] == file_sha256(engine)
    assert sidecar["onnx_sha256"] == file_sha256(onnx)
    assert engine_payload(engine.read_bytes())["onnx_sha256"] == file_sha256(onnx)
    assert not [p.name for p in engine.parent.iterdir() if p.name.endswith(".tmp")]


def test_first_build_then_cache_hit(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    assert ensure_engine(onnx, engine_path=engine) == engine
    assert len(trt.builds) == 1
    assert trt.builds[0].fp16 and trt.builds[0].gpu == "Orin"
    assert_consistent(engine, onnx)
    stored = json.loads(sidecar_path(engine).read_text())
    assert stored["gpu_name"] == "Orin" and stored["compute_capability"] == "8.7"
    assert stored["multiprocessor_count"] == 16 and stored["tensorrt_version"] == "10.3.0"
    assert stored["precision"] == "fp16"
    mtime = engine.stat().st_mtime_ns
    assert ensure_engine(onnx, engine_path=engine) == engine
    assert len(trt.builds) == 1
    assert engine.stat().st_mtime_ns == mtime


def test_default_path_lives_in_the_cache_dir_and_is_reused(
    trt: FakeTensorRT, onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(tmp_path / "engines"))
    first = ensure_engine(onnx)
    assert first.parent == tmp_path / "engines" and first.name.startswith("model-")
    assert ensure_engine(onnx) == first
    assert len(trt.builds) == 1
    assert_consistent(first, onnx)


def _change_model(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    onnx.write_bytes(b"onnx graph B")


def _change_gpu_name(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    cudart.gpus[0] = dataclasses.replace(ORIN, name="NVIDIA Jetson AGX Thor")


def _change_compute_capability(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    cudart.gpus[0] = dataclasses.replace(ORIN, minor=2)


def _change_multiprocessors(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    cudart.gpus[0] = dataclasses.replace(ORIN, multiprocessors=8)  # an Orin NX is "Orin" too


def _change_tensorrt(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    trt.__version__ = "10.4.0"


def _lose_fast_fp16(trt: FakeTensorRT, cudart: FakeCudart, onnx: Path) -> None:
    trt.fast_fp16 = False


@pytest.mark.parametrize(
    "change",
    [
        _change_model,
        _change_gpu_name,
        _change_compute_capability,
        _change_multiprocessors,
        _change_tensorrt,
        _lose_fast_fp16,
    ],
)
@pytest.mark.parametrize("explicit_path", [True, False], ids=["engine_path", "cache_dir"])
def test_any_key_change_rebuilds(
    trt: FakeTensorRT,
    cudart: FakeCudart,
    onnx: Path,
    engine: Path,
    change: object,
    explicit_path: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(engine.parent))
    path = engine if explicit_path else None
    before = ensure_engine(onnx, engine_path=path)
    change(trt, cudart, onnx)  # type: ignore[operator]
    after = ensure_engine(onnx, engine_path=path)
    assert len(trt.builds) == 2
    assert (after == before) is explicit_path  # the default name carries the key digest
    assert_consistent(after, onnx)
    assert ensure_engine(onnx, engine_path=path) == after  # and the new engine is then reused
    assert len(trt.builds) == 2


def test_fp32_request_is_its_own_engine(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    ensure_engine(onnx, engine_path=engine, fp16=True)
    ensure_engine(onnx, engine_path=engine, fp16=False)
    assert [b.fp16 for b in trt.builds] == [True, False]
    assert json.loads(sidecar_path(engine).read_text())["precision"] == "fp32"
    ensure_engine(onnx, engine_path=engine, fp16=True)
    assert [b.fp16 for b in trt.builds] == [True, False, True]


def test_no_fast_fp16_builds_fp32_and_says_so(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    trt.fast_fp16 = False
    ensure_engine(onnx, engine_path=engine, fp16=True)
    assert not trt.builds[0].fp16
    assert json.loads(sidecar_path(engine).read_text())["precision"] == "fp32"
    ensure_engine(onnx, engine_path=engine, fp16=False)  # the same engine: no second build
    assert len(trt.builds) == 1


def test_force_engine_update_rebuilds_a_valid_engine(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    ensure_engine(onnx, engine_path=engine)
    ensure_engine(onnx, engine_path=engine, force_engine_update=True)
    assert len(trt.builds) == 2
    assert trt.builds[1].timing_cache_in == b"+"  # the timing cache of the first build was reused
    assert_consistent(engine, onnx)


def test_key_comes_from_the_device_in_use(onnx: Path, engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cudart = FakeCudart([RTX, ORIN])
    trt = FakeTensorRT(cudart)
    install(trt, cudart, monkeypatch)
    # An explicit device: keyed and built on it, and it becomes the current device.
    ensure_engine(onnx, engine_path=engine, device=1)
    assert (trt.builds[0].gpu, trt.builds[0].device) == ("Orin", 1)
    assert json.loads(sidecar_path(engine).read_text())["gpu_name"] == "Orin"
    assert cudart.current == 1
    # The default is the current device (what the process selected), not device 0.
    assert current_key(onnx, fp16=True).gpu_name == "Orin"
    ensure_engine(onnx, engine_path=engine)
    assert len(trt.builds) == 1
    # Device 0 is another GPU model: its key differs, so the engine is rebuilt for it.
    ensure_engine(onnx, engine_path=engine, device=0)
    assert (trt.builds[1].gpu, trt.builds[1].device) == ("NVIDIA GeForce RTX 4090", 0)
    assert json.loads(sidecar_path(engine).read_text())["compute_capability"] == "8.9"
    with pytest.raises(
        TensorRTUnavailableError, match=r"CUDA device 2 requested, this machine has 2 \(0\.\.1"
    ):
        ensure_engine(onnx, engine_path=engine, device=2)


def test_identical_gpus_share_an_engine(onnx: Path, engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cudart = FakeCudart([ORIN, FakeGpu("Orin", 8, 7, 16)])
    trt = FakeTensorRT(cudart)
    install(trt, cudart, monkeypatch)
    ensure_engine(onnx, engine_path=engine, device=0)
    ensure_engine(onnx, engine_path=engine, device=1)
    assert len(trt.builds) == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda e: e.write_bytes(e.read_bytes()[:1000]), id="truncated-engine"),
        pytest.param(lambda e: e.write_bytes(b""), id="empty-engine"),
        pytest.param(lambda e: e.write_bytes(b"y" * e.stat().st_size), id="same-size-garbage-engine"),
        pytest.param(
            lambda e: sidecar_path(e).write_text(sidecar_path(e).read_text()[:40]), id="torn-sidecar"
        ),
        pytest.param(lambda e: sidecar_path(e).write_text("[]"), id="sidecar-not-an-object"),
        pytest.param(lambda e: sidecar_path(e).write_bytes(b"\xff\xfe"), id="sidecar-not-text"),
        pytest.param(lambda e: sidecar_path(e).unlink(), id="no-sidecar"),
        pytest.param(lambda e: e.unlink(), id="no-engine"),
    ],
)
def test_damaged_cache_is_rebuilt_not_loaded(
    trt: FakeTensorRT, onnx: Path, engine: Path, damage: object
) -> None:
    ensure_engine(onnx, engine_path=engine)
    damage(engine)  # type: ignore[operator]
    assert engine_mismatch(engine, current_key(onnx, fp16=True)) is not None
    ensure_engine(onnx, engine_path=engine)
    assert len(trt.builds) == 2
    assert_consistent(engine, onnx)


def test_corrupt_timing_cache_is_started_afresh(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    engine.parent.mkdir()
    (engine.parent / "timing.cache").write_bytes(b"corrupt")
    ensure_engine(onnx, engine_path=engine)
    assert trt.builds[0].timing_cache_in == b""
    assert (engine.parent / "timing.cache").read_bytes() == b"+"


def test_reader_of_the_old_engine_never_sees_a_torn_one(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    """The new engine replaces the old by rename: a file opened before the rebuild stays whole.

    Written in place instead, the open file would be truncated and refilled under its reader.
    """
    ensure_engine(onnx, engine_path=engine)
    old = engine.read_bytes()
    with engine.open("rb") as reader:
        onnx.write_bytes(b"onnx graph B")
        ensure_engine(onnx, engine_path=engine)
        assert reader.read() == old
    assert engine_payload(engine.read_bytes())["onnx_sha256"] == file_sha256(onnx)


def test_failed_rebuild_keeps_the_previous_engine_usable(trt: FakeTensorRT, onnx: Path, engine: Path) -> None:
    ensure_engine(onnx, engine_path=engine)
    old = engine.read_bytes()
    trt.fail_build = True
    with pytest.raises(UserError, match="engine build failed"):
        ensure_engine(onnx, engine_path=engine, force_engine_update=True)
    assert engine.read_bytes() == old
    trt.fail_build = False
    ensure_engine(onnx, engine_path=engine)  # still valid: no third build
    assert len(trt.builds) == 2
    assert_consistent(engine, onnx)


def test_crash_between_engine_and_sidecar_never_vouches_for_the_new_engine(
    trt: FakeTensorRT, onnx: Path, engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine for A cached; a rebuild for B dies after writing the engine, before its sidecar.

    A's old sidecar must not make B's engine pass for A's when model A comes back.
    """
    ensure_engine(onnx, engine_path=engine)
    graph_a = onnx.read_bytes()
    onnx.write_bytes(b"onnx graph B")

    def die(*args: object, **kwargs: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(tensorrt_engine, "write_sidecar", die)
    with pytest.raises(OSError, match="power cut"):
        ensure_engine(onnx, engine_path=engine)
    monkeypatch.undo()
    install(trt, trt.cudart, monkeypatch)
    onnx.write_bytes(graph_a)
    ensure_engine(onnx, engine_path=engine)
    assert len(trt.builds) == 3
    assert_consistent(engine, onnx)


def test_parse_failure_is_a_clear_error_and_leaves_nothing(trt: FakeTensorRT, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"bad graph")
    engine = tmp_path / "bad.engine"
    with pytest.raises(UserError, match=r"bad\.onnx: TensorRT cannot parse this ONNX file: In node 0"):
        ensure_engine(bad, engine_path=engine)
    assert not engine.exists() and not sidecar_path(engine).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_two_threads_build_once_and_leave_one_valid_engine(
    trt: FakeTensorRT, onnx: Path, engine: Path
) -> None:
    trt.build_delay = 0.3
    start = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            start.wait()
            results.append(ensure_engine(onnx, engine_path=engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and results == [engine, engine]
    assert len(trt.builds) == 1  # the second waited for the lock, then found the engine valid
    assert_consistent(engine, onnx)


def test_two_processes_build_once_and_leave_one_valid_engine(
    onnx: Path, engine: Path, tmp_path: Path
) -> None:
    script = Path(__file__).with_name("fixtures_tensorrt.py")
    log, go = tmp_path / "builds.log", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(onnx), str(engine), str(log), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both are past their imports: they now race for the same engine
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(engine), str(engine)]
    assert len(log.read_text().splitlines()) == 1
    assert_consistent(engine, onnx)


def test_without_tensorrt_the_build_fails_with_one_sentence(
    onnx: Path, engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cudart = FakeCudart([ORIN])
    install(None, cudart, monkeypatch)
    with pytest.raises(
        TensorRTUnavailableError, match=r"tensorrt Python package is not installed \(pip install"
    ):
        ensure_engine(onnx, engine_path=engine)
    install(FakeTensorRT(cudart), None, monkeypatch)
    with pytest.raises(TensorRTUnavailableError, match="cuda-python package is not installed"):
        ensure_engine(onnx, engine_path=engine)
    cudart.gpus.clear()
    install(FakeTensorRT(cudart), cudart, monkeypatch)
    with pytest.raises(
        TensorRTUnavailableError, match=r"no CUDA device found \(cudaErrorNoDevice\)"
    ) as error:
        ensure_engine(onnx, engine_path=engine)
    assert "\n" not in str(error.value)
    assert not engine.parent.exists()
