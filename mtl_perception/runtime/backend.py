"""The Backend protocol every inference engine implements, and ``create_backend`` to pick one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mtl_perception.errors import UserError
from mtl_perception.model_info import ModelInfo, check_model_file

BACKEND_KINDS = ("auto", "tensorrt", "onnxruntime", "torch")


class BackendUnavailableError(UserError):
    """This backend cannot run on this machine (missing package, no GPU, wrong model file type)."""


@runtime_checkable
class Backend(Protocol):
    """One loaded model. ``infer`` takes and returns float32/int arrays keyed by the graph's names.

    Every backend returns the same dict: the names in ``info.outputs``, batch dimension kept.
    """

    name: str
    info: ModelInfo

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def sibling(path: Path, suffix: str) -> Path:
    """``model.onnx`` <-> ``model.pt``: the same stem with another suffix."""
    return path.with_suffix(suffix)


def create_backend(
    kind: str,
    model_path: str | Path,
    *,
    engine_path: str | Path | None = None,
    force_engine_update: bool = False,
    fp16: bool = True,
    threads: int | None = None,
    spin_wait: bool = True,
    logger: logging.Logger | None = None,
) -> Backend:
    """Load ``model_path`` (.onnx, or .pt checkpoint for torch) with backend ``kind``.

    ``auto`` tries tensorrt, onnxruntime, then torch and logs which one it picked and why the
    others were skipped. A named backend that cannot run raises BackendUnavailableError.
    ``threads`` applies to the CPU backends; ``spin_wait`` (pool threads busy-wait between ops, the
    library default) to ONNX Runtime.
    """
    log = logger or logging.getLogger(__name__)
    if kind not in BACKEND_KINDS:
        raise UserError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    model_path = check_model_file(model_path, ".onnx", ".pt")
    order = ("tensorrt", "onnxruntime", "torch") if kind == "auto" else (kind,)
    skipped: list[str] = []
    for candidate in order:
        try:
            backend = _open(
                candidate, model_path, engine_path, force_engine_update, fp16, threads, spin_wait, log
            )
        except BackendUnavailableError as exc:
            if kind != "auto":
                raise
            skipped.append(f"{candidate}: {exc}")
            continue
        if kind == "auto":
            reasons = "; ".join(skipped) if skipped else "none skipped"
            log.info("backend auto -> %s for %s (skipped: %s)", candidate, model_path.name, reasons)
        else:
            log.info("backend %s for %s", candidate, model_path.name)
        return backend
    raise BackendUnavailableError(f"no backend can run {model_path}: " + "; ".join(skipped))


def _open(
    kind: str,
    model_path: Path,
    engine_path: str | Path | None,
    force_engine_update: bool,
    fp16: bool,
    threads: int | None,
    spin_wait: bool,
    log: logging.Logger,
) -> Backend:
    if kind == "torch":
        checkpoint = model_path if model_path.suffix == ".pt" else sibling(model_path, ".pt")
        if not checkpoint.is_file():
            raise BackendUnavailableError(f"the torch backend needs a .pt checkpoint; {checkpoint} not found")
        from mtl_perception.runtime.torch_backend import TorchBackend

        return TorchBackend(checkpoint, threads=threads)
    onnx_path = model_path if model_path.suffix == ".onnx" else sibling(model_path, ".onnx")
    if not onnx_path.is_file():
        raise BackendUnavailableError(f"the {kind} backend needs an .onnx model; {onnx_path} not found")
    if kind == "onnxruntime":
        from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, threads=threads, spin_wait=spin_wait, fp16=fp16, logger=log)
    from mtl_perception.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(
        onnx_path, engine_path=engine_path, force_engine_update=force_engine_update, fp16=fp16, logger=log
    )
