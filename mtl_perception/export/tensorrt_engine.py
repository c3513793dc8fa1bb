"""TensorRT engine build from an ONNX file, with a cache a robot can trust.

An engine only runs on the GPU model and TensorRT version it was built with, so every engine has a
JSON sidecar (``<engine>.json``) holding its ``EngineKey``: ONNX sha256, GPU name, compute
capability, TensorRT version and precision. The sidecar is checked before every load; any
mismatch (or ``force_engine_update``) rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mtl_perception.errors import UserError

WORKSPACE_BYTES = 1 << 30
INSTALL_HINT = "pip install .[gpu]"


class TensorRTUnavailableError(UserError):
    """TensorRT cannot be used on this machine (package missing or no CUDA device)."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; equal keys mean the cached engine is valid here."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str  # "fp16" | "fp32"

    def digest(self) -> str:
        """Short stable hash of the key, used in default engine file names."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed: models can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$MTL_PERCEPTION_CACHE`` or ``$XDG_CACHE_HOME/mtl_perception/engines`` (~/.cache by default)."""
    if os.environ.get("MTL_PERCEPTION_CACHE"):
        return Path(os.environ["MTL_PERCEPTION_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mtl_perception" / "engines"


def engine_path_for(onnx_path: str | Path, key: EngineKey, cache_dir: str | Path | None = None) -> Path:
    """Default engine file for this model on this machine: ``<cache>/<stem>-<key digest>.engine``."""
    return Path(cache_dir or default_cache_dir()) / f"{Path(onnx_path).stem}-{key.digest()}.engine"


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(f"{engine_path}.json")


def write_sidecar(engine_path: str | Path, key: EngineKey) -> None:
    sidecar_path(engine_path).write_text(json.dumps(asdict(key), indent=2, sort_keys=True) + "\n")


def engine_mismatch(engine_path: str | Path, key: EngineKey) -> str | None:
    """Why the engine at ``engine_path`` must not be loaded for ``key``, or None when it is valid."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return f"no engine at {engine_path}"
    sidecar = sidecar_path(engine_path)
    if not sidecar.is_file():
        return f"no sidecar {sidecar.name} to verify it"
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable sidecar {sidecar.name} ({exc})"
    differing = [f"{k}: {stored.get(k)!r} != {v!r}" for k, v in asdict(key).items() if stored.get(k) != v]
    return "built for another setup (" + "; ".join(differing) + ")" if differing else None


def tensorrt_modules() -> tuple[Any, Any]:
    """(tensorrt, cudart) modules, or TensorRTUnavailableError with the reason in one sentence."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: the tensorrt Python package is not installed ({INSTALL_HINT})"
        ) from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: the cuda-python package is not installed ({INSTALL_HINT})"
        ) from exc
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise TensorRTUnavailableError(f"TensorRT backend unavailable: no CUDA device found ({err.name})")
    return trt, cudart


def current_key(onnx_path: str | Path, fp16: bool) -> EngineKey:
    """The EngineKey for building ``onnx_path`` on this machine's GPU 0 with this TensorRT."""
    trt, cudart = tensorrt_modules()
    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: cannot query the CUDA device ({err.name})"
        )
    name = (
        props.name.decode(errors="replace").rstrip("\x00")
        if isinstance(props.name, bytes)
        else str(props.name)
    )
    return EngineKey(
        onnx_sha256=file_sha256(onnx_path),
        gpu_name=name,
        compute_capability=f"{props.major}.{props.minor}",
        tensorrt_version=trt.__version__,
        precision="fp16" if fp16 and _has_fast_fp16(trt) else "fp32",
    )


def ensure_engine(
    onnx_path: str | Path,
    *,
    engine_path: str | Path | None = None,
    force_engine_update: bool = False,
    fp16: bool = True,
    logger: logging.Logger | None = None,
) -> Path:
    """Path of a verified engine for ``onnx_path`` on this machine, building it when needed."""
    log = logger or logging.getLogger(__name__)
    key = current_key(onnx_path, fp16)
    target = Path(engine_path) if engine_path else engine_path_for(onnx_path, key)
    reason = "force_engine_update is set" if force_engine_update else engine_mismatch(target, key)
    if reason is None:
        log.info("TensorRT engine %s matches this GPU and model", target)
        return target
    log.info("building TensorRT engine %s: %s (this takes a while once)", target, reason)
    build_engine(onnx_path, target, fp16=key.precision == "fp16", logger=log)
    write_sidecar(target, key)
    return target


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    fp16: bool = True,
    workspace_bytes: int = WORKSPACE_BYTES,
    timing_cache: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> Path:
    """Parse the ONNX file and serialize an engine to ``engine_path`` (TensorRT >= 10 API).

    The timing cache (default ``<engine dir>/timing.cache``) makes later builds on the same GPU fast.
    """
    trt, _ = tensorrt_modules()
    log = logger or logging.getLogger(__name__)
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    timing_cache = Path(timing_cache) if timing_cache else engine_path.parent / "timing.cache"
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT cannot parse this ONNX file: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and _has_fast_fp16(trt, builder):
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("TensorRT engine written: %s (%s)", engine_path, "fp16" if fp16 else "fp32")
    return engine_path


def _has_fast_fp16(trt: Any, builder: Any = None) -> bool:
    builder = builder or trt.Builder(trt.Logger(trt.Logger.ERROR))
    return bool(builder.platform_has_fast_fp16)
