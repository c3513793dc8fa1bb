"""TensorRT backend: a cached engine run with execute_async_v3 on one CUDA stream (cuda-python)."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mtl_perception.model_info import ModelFileError, ModelInfo, read_model_info
from mtl_perception.runtime.backend import BackendUnavailableError
from mtl_perception.runtime.tensorrt_engine import (
    TensorRTUnavailableError,
    ensure_engine,
    select_device,
    tensorrt_modules,
)


class TensorRTBackend:
    """Engine built (once, then cached) from the ONNX file; metadata comes from the ONNX file.

    Host buffers are page-locked so the copies are truly asynchronous; device buffers are allocated
    once. Output arrays are reused between calls: copy what you keep. ``device`` is the CUDA device
    index (default: the current one); the engine is keyed, built and run on that device.
    """

    name = "tensorrt"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        engine_path: str | Path | None = None,
        force_engine_update: bool = False,
        fp16: bool = True,
        device: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        try:
            trt, cudart = tensorrt_modules()
            self.cuda_device = select_device(cudart, device)
        except TensorRTUnavailableError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        self._cudart = cudart
        self.info: ModelInfo = read_model_info(onnx_path)
        engine_file = ensure_engine(
            onnx_path,
            engine_path=engine_path,
            force_engine_update=force_engine_update,
            fp16=fp16,
            device=self.cuda_device,
            logger=logger,
        )
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if self._engine is None:
            raise ModelFileError(
                f"{engine_file}: TensorRT cannot load this engine; rebuild with force_engine_update"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart, cudart.cudaStreamCreate())
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = _check(cudart, cudart.cudaMallocHost(nbytes))
            buffer = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            self._host[name] = np.frombuffer(buffer, dtype=dtype).reshape(shape)
            self._device[name] = int(_check(cudart, cudart.cudaMalloc(nbytes)))
            self._context.set_tensor_address(name, self._device[name])
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(name)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs in, run the engine, copy outputs back; one stream sync per frame."""
        cudart = self._cudart
        # The current device is per thread: a ROS executor may call from a thread other than ours.
        _check(cudart, cudart.cudaSetDevice(self.cuda_device))
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._inputs:
            host = self._host[name]
            np.copyto(host, inputs[name], casting="same_kind")
            _check(
                cudart,
                cudart.cudaMemcpyAsync(
                    self._device[name], host.ctypes.data, host.nbytes, to_device, self._stream
                ),
            )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name in self._outputs:
            host = self._host[name]
            _check(
                cudart,
                cudart.cudaMemcpyAsync(
                    host.ctypes.data, self._device[name], host.nbytes, to_host, self._stream
                ),
            )
        _check(cudart, cudart.cudaStreamSynchronize(self._stream))
        return {name: self._host[name] for name in self.info.outputs}

    def close(self) -> None:
        """Free CUDA memory and the stream (safe to call twice)."""
        cudart = self._cudart
        if self._device:
            cudart.cudaSetDevice(self.cuda_device)
        for ptr in self._device.values():
            cudart.cudaFree(ptr)
        for array in self._host.values():
            cudart.cudaFreeHost(array.ctypes.data)
        if self._device:
            cudart.cudaStreamDestroy(self._stream)
        self._device.clear()
        self._host.clear()
        self._context = None
        self._engine = None


def _check(cudart: Any, result: tuple[Any, ...]) -> Any:
    """cuda-python returns (error, value...): raise on error, return the value."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {err.name}")
    return values[0] if len(values) == 1 else None
