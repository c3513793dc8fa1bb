"""TensorRT engine build from an ONNX file, with a cache a robot can trust.

An engine only runs on the GPU model and TensorRT version it was built with, so every engine has a
JSON sidecar (``<engine>.json``) holding its ``EngineKey`` (ONNX sha256, GPU name, compute
capability, multiprocessor count, TensorRT version, precision) and the sha256 and size of the engine
bytes it vouches for. The sidecar is checked before every load; any mismatch, a torn file or
``force_engine_update`` rebuilds.

Several processes may share the cache (a node and an export, two nodes): builds of one engine file
are serialised by an flock on ``<engine>.lock``, and every file is written to a temporary name in
the same directory, fsynced and renamed into place, so a reader only ever sees a whole old file or
a whole new one. The sidecar is removed before a new engine replaces the old one and written after,
so at no moment does a sidecar vouch for bytes it was not computed from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
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
    """Everything an engine depends on; equal keys mean the cached engine is valid here.

    The device index is deliberately not part of it: an engine runs on any device of the same model,
    so the key holds what describes the device actually used (name, compute capability, and the
    multiprocessor count, which tells apart Jetson modules that all report the name "Orin").
    """

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    multiprocessor_count: int
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A temporary file in the same directory (same file system, so the rename is atomic) is fsynced
    before the rename: after a power cut the name holds either version, not an empty file.
    """
    path = Path(path)
    staged = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with staged.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)


def write_sidecar(engine_path: str | Path, key: EngineKey, engine_sha256: str | None = None) -> None:
    """Vouch for the engine now at ``engine_path`` (its sha256 is computed unless given)."""
    engine_path = Path(engine_path)
    record = asdict(key) | {
        "engine_sha256": engine_sha256 or file_sha256(engine_path),
        "engine_bytes": engine_path.stat().st_size,
    }
    atomic_write_bytes(
        sidecar_path(engine_path), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    )


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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable sidecar {sidecar.name} ({exc})"
    if not isinstance(stored, dict):
        return f"unreadable sidecar {sidecar.name} (not a JSON object)"
    differing = [f"{k}: {stored.get(k)!r} != {v!r}" for k, v in asdict(key).items() if stored.get(k) != v]
    if differing:
        return "built for another setup (" + "; ".join(differing) + ")"
    size = engine_path.stat().st_size
    if stored.get("engine_bytes") != size:
        return f"engine is {size} bytes, its sidecar says {stored.get('engine_bytes')!r} (torn or replaced)"
    if stored.get("engine_sha256") != file_sha256(engine_path):
        return "engine bytes differ from the sha256 in its sidecar (torn or replaced)"
    return None


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
    _device_count(cudart)
    return trt, cudart


def _device_count(cudart: Any) -> int:
    """Number of visible CUDA devices; TensorRTUnavailableError when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        reason = err.name if err != cudart.cudaError_t.cudaSuccess else "0 visible"
        raise TensorRTUnavailableError(f"TensorRT backend unavailable: no CUDA device found ({reason})")
    return int(count)


def select_device(cudart: Any, device: int | None = None) -> int:
    """Make ``device`` the calling thread's CUDA device and return it; None keeps the current one.

    The current device is what CUDA allocates on and TensorRT builds for (0 unless the process chose
    another; ``CUDA_VISIBLE_DEVICES`` picks which physical GPUs those indices name).
    """
    count = _device_count(cudart)
    if device is None:
        err, device = cudart.cudaGetDevice()
        if err != cudart.cudaError_t.cudaSuccess:
            raise TensorRTUnavailableError(
                f"TensorRT backend unavailable: cannot query the current CUDA device ({err.name})"
            )
        return int(device)
    if not 0 <= device < count:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: CUDA device {device} requested, this machine has "
            f"{count} (0..{count - 1}, as numbered under CUDA_VISIBLE_DEVICES)"
        )
    (err,) = cudart.cudaSetDevice(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: cannot use CUDA device {device} ({err.name})"
        )
    return device


def current_key(onnx_path: str | Path, fp16: bool, device: int | None = None) -> EngineKey:
    """The EngineKey for building ``onnx_path`` on CUDA ``device`` (default: the current one)."""
    trt, cudart = tensorrt_modules()
    device = select_device(cudart, device)
    err, props = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise TensorRTUnavailableError(
            f"TensorRT backend unavailable: cannot query CUDA device {device} ({err.name})"
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
        multiprocessor_count=int(props.multiProcessorCount),
        tensorrt_version=trt.__version__,
        precision="fp16" if fp16 and _has_fast_fp16(trt) else "fp32",
    )


def ensure_engine(
    onnx_path: str | Path,
    *,
    engine_path: str | Path | None = None,
    force_engine_update: bool = False,
    fp16: bool = True,
    device: int | None = None,
    logger: logging.Logger | None = None,
) -> Path:
    """Path of a verified engine for ``onnx_path`` on CUDA ``device``, building it when needed.

    ``device`` None means the current CUDA device; otherwise it becomes the current device of the
    calling thread, so the engine is built, keyed and later run on the same GPU.
    """
    log = logger or logging.getLogger(__name__)
    key = current_key(onnx_path, fp16, device)
    target = Path(engine_path) if engine_path else engine_path_for(onnx_path, key)
    if not force_engine_update and engine_mismatch(target, key) is None:
        log.info("TensorRT engine %s matches this GPU and model", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target, log):
        # Checked again under the lock: another process may have built it while this one waited.
        reason = "force_engine_update is set" if force_engine_update else engine_mismatch(target, key)
        if reason is None:
            log.info("TensorRT engine %s was built by another process meanwhile", target)
            return target
        log.info("building TensorRT engine %s: %s (this takes a while once)", target, reason)
        data = serialize_engine(onnx_path, fp16=key.precision == "fp16", timing_cache=_timing_cache(target))
        # Until the new sidecar is written, no sidecar may vouch for the new bytes (nor the old one).
        sidecar_path(target).unlink(missing_ok=True)
        atomic_write_bytes(target, data)
        write_sidecar(target, key, hashlib.sha256(data).hexdigest())
    log.info("TensorRT engine written: %s (%s)", target, key.precision)
    return target


@contextlib.contextmanager
def _build_lock(target: Path, log: logging.Logger) -> Iterator[None]:
    """Exclusive flock on ``<engine>.lock`` for the duration of one build (released if we die).

    The lock file is left in place: deleting it would let a third process lock a fresh inode while
    a second one still holds the old.
    """
    with Path(f"{target}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _timing_cache(engine_path: Path) -> Path:
    return engine_path.parent / "timing.cache"


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    fp16: bool = True,
    workspace_bytes: int = WORKSPACE_BYTES,
    timing_cache: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> Path:
    """Build an engine for ``onnx_path`` and write it atomically to ``engine_path`` (no sidecar).

    ``ensure_engine`` is what applications want: it also keys, verifies and locks.
    """
    log = logger or logging.getLogger(__name__)
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    data = serialize_engine(
        onnx_path,
        fp16=fp16,
        workspace_bytes=workspace_bytes,
        timing_cache=Path(timing_cache) if timing_cache else _timing_cache(engine_path),
    )
    atomic_write_bytes(engine_path, data)
    log.info("TensorRT engine written: %s (%s)", engine_path, "fp16" if fp16 else "fp32")
    return engine_path


def serialize_engine(
    onnx_path: str | Path,
    *,
    fp16: bool = True,
    workspace_bytes: int = WORKSPACE_BYTES,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse the ONNX file and build a serialized engine on the current device (TensorRT >= 10 API).

    The timing cache makes later builds on the same GPU fast; it is shared by the engines of one
    directory, so it is replaced atomically, and an unreadable one is started afresh.
    """
    trt, _ = tensorrt_modules()
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
    if timing_cache is not None:
        cache = _load_timing_cache(config, timing_cache)
        config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _load_timing_cache(config: Any, path: Path) -> Any:
    """The timing cache stored at ``path``, or an empty one when it is missing or unusable."""
    if path.is_file():
        try:
            cache = config.create_timing_cache(path.read_bytes())
        except Exception as exc:  # TensorRT raises its own error types for a corrupt cache
            logging.getLogger(__name__).warning("ignoring unusable timing cache %s (%s)", path, exc)
        else:
            if cache is not None:
                return cache
    return config.create_timing_cache(b"")


def _has_fast_fp16(trt: Any, builder: Any = None) -> bool:
    builder = builder or trt.Builder(trt.Logger(trt.Logger.ERROR))
    return bool(builder.platform_has_fast_fp16)
