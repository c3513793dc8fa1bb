"""Fake ``tensorrt`` and ``cuda.bindings.runtime`` modules that record engine builds (no GPU needed).

They implement just the calls ``mtl_perception.runtime.tensorrt_engine`` makes, with the same shapes
as the real APIs (cuda-python returns ``(error, value...)`` tuples, device names are NUL-padded
bytes). A built "engine" is JSON naming what it was built from, so a test can tell which build a
file came from. Run as a script, this module is a second process racing for the same engine.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class CudaError(enum.IntEnum):
    """The few cudaError_t members the cache code can see."""

    cudaSuccess = 0  # noqa: N815 (cuda-python's spelling)
    cudaErrorNoDevice = 100  # noqa: N815
    cudaErrorInvalidDevice = 101  # noqa: N815


@dataclass(frozen=True)
class FakeGpu:
    name: str
    major: int
    minor: int
    multiprocessors: int


ORIN = FakeGpu("Orin", 8, 7, 16)
RTX = FakeGpu("NVIDIA GeForce RTX 4090", 8, 9, 128)


class FakeCudart:
    """``cuda.bindings.runtime`` with a configurable list of GPUs; the current device is per thread."""

    cudaError_t = CudaError  # noqa: N815

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = list(gpus)
        self._local = threading.local()

    @property
    def current(self) -> int:
        return getattr(self._local, "device", 0)

    def cudaGetDeviceCount(self) -> tuple[CudaError, int]:  # noqa: N802
        return (CudaError.cudaSuccess, len(self.gpus)) if self.gpus else (CudaError.cudaErrorNoDevice, 0)

    def cudaGetDevice(self) -> tuple[CudaError, int]:  # noqa: N802
        return CudaError.cudaSuccess, self.current

    def cudaSetDevice(self, device: int) -> tuple[CudaError]:  # noqa: N802
        if not 0 <= device < len(self.gpus):
            return (CudaError.cudaErrorInvalidDevice,)
        self._local.device = device
        return (CudaError.cudaSuccess,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[CudaError, Any]:  # noqa: N802
        if not 0 <= device < len(self.gpus):
            return CudaError.cudaErrorInvalidDevice, None
        gpu = self.gpus[device]
        props = types.SimpleNamespace(
            name=gpu.name.encode().ljust(256, b"\x00"),
            major=gpu.major,
            minor=gpu.minor,
            multiProcessorCount=gpu.multiprocessors,
        )
        return CudaError.cudaSuccess, props


@dataclass
class Build:
    onnx_sha256: str
    fp16: bool
    gpu: str
    device: int
    timing_cache_in: bytes


@dataclass
class FakeTensorRT:
    """``tensorrt`` with a Builder that records every engine build and can be slowed or broken."""

    cudart: FakeCudart
    __version__: str = "10.3.0"
    fast_fp16: bool = True
    build_delay: float = 0.0
    fail_build: bool = False
    build_log: Path | None = None  # builds are appended here too, for builds in other processes
    builds: list[Build] = field(default_factory=list)

    class Logger:
        ERROR = 1
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = types.SimpleNamespace(FP16="fp16")

    def Builder(self, logger: Any) -> _Builder:  # noqa: N802
        return _Builder(self)

    def OnnxParser(self, network: _Network, logger: Any) -> _Parser:  # noqa: N802
        return _Parser(network)

    def record(self, build: Build) -> None:
        self.builds.append(build)
        if self.build_log is not None:
            with self.build_log.open("a") as log:  # one short append: atomic between processes
                log.write(json.dumps(build.__dict__, default=str) + "\n")


def engine_payload(data: bytes) -> dict[str, Any]:
    """What a fake engine file says it was built from."""
    return json.loads(data)


class _Network:
    onnx: bytes = b""


class _Parser:
    def __init__(self, network: _Network) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        self.network.onnx = Path(path).read_bytes()
        if self.network.onnx.startswith(b"bad"):
            self.errors.append("In node 0 (importConv): unsupported attribute")
            return False
        return True


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+"


class _Config:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.cache: _TimingCache | None = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        assert pool == "workspace" and size > 0

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        if data.startswith(b"corrupt"):
            raise RuntimeError("timing cache is corrupt")
        return _TimingCache(data)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> None:
        self.cache = cache

    def get_timing_cache(self) -> _TimingCache:
        assert self.cache is not None
        return self.cache


class _Builder:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    @property
    def platform_has_fast_fp16(self) -> bool:
        return self.trt.fast_fp16

    def create_network(self, flags: int) -> _Network:
        return _Network()

    def create_builder_config(self) -> _Config:
        return _Config()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        cudart = self.trt.cudart
        build = Build(
            onnx_sha256=hashlib.sha256(network.onnx).hexdigest(),
            fp16="fp16" in config.flags,
            gpu=cudart.gpus[cudart.current].name,
            device=cudart.current,
            timing_cache_in=config.cache.data if config.cache else b"",
        )
        time.sleep(self.trt.build_delay)  # a real build takes minutes: long enough to race
        self.trt.record(build)
        if self.trt.fail_build:
            return None
        payload = {k: v for k, v in build.__dict__.items() if k != "timing_cache_in"}
        # A few hundred KiB, so a torn write would be visible as a short file.
        return json.dumps(payload | {"trt": self.trt.__version__, "pad": "x" * (256 << 10)}).encode()


def install(trt: FakeTensorRT | None, cudart: FakeCudart | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` / ``from cuda.bindings import runtime`` give the fakes (None: missing)."""
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, module in _cuda_modules(cudart).items():
        monkeypatch.setitem(sys.modules, name, module)


def _cuda_modules(cudart: FakeCudart | None) -> dict[str, Any]:
    if cudart is None:  # a None entry in sys.modules makes the import raise ImportError
        return {"cuda": None, "cuda.bindings": None, "cuda.bindings.runtime": None}
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    bindings.runtime = cudart  # type: ignore[attr-defined]
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart}


def race_in_child(onnx: str, engine: str, build_log: str, ready: str, go: str) -> None:
    """One process of a multi-process race: fakes in place, signal ready, wait for go, ensure."""
    from mtl_perception.runtime.tensorrt_engine import ensure_engine

    cudart = FakeCudart([ORIN])
    sys.modules.update(_cuda_modules(cudart))
    sys.modules["tensorrt"] = FakeTensorRT(cudart, build_delay=0.5, build_log=Path(build_log))  # type: ignore[assignment]
    Path(ready).touch()
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.005)
    print(ensure_engine(onnx, engine_path=engine, fp16=True))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    race_in_child(*sys.argv[1:6])
