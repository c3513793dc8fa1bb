"""ONNX Runtime backend: TensorRT, CUDA, then CPU execution providers, whichever are available."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mtl_perception.model_info import STEERING_MODE, ModelFileError, ModelInfo, read_model_info

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    """The preferred execution providers this onnxruntime build has, best first."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in have]


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` behind the Backend protocol.

    On CPU the outputs are preallocated once and bound with IO binding, so a frame allocates no
    output arrays; on GPU providers the outputs are copied back to host per call by ORT itself.
    Returned arrays are therefore reused between calls on CPU: copy what you keep.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        spin_wait: bool = True,
        fp16: bool = True,
        providers: list[str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        import onnxruntime as ort

        log = logger or logging.getLogger(__name__)
        self.info: ModelInfo = read_model_info(model_path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.info.mode == STEERING_MODE:
            # The steering head is ~0.2 M multiply-adds (0.1 ms on one core). A thread pool of its
            # own only adds threads that spin-wait after each call on the cores the perception
            # session needs: measured +56 ms per frame on 2 cores (benchmarks/steering_latency.py).
            threads, spin_wait = 1, False
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin_wait:
            # Idle pool threads sleep instead of busy-waiting for the next op: a little slower on
            # cores of its own, faster where other processes share them (see the README).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        chosen = providers or available_providers()
        provider_options: list[dict[str, str]] = [
            {"trt_fp16_enable": str(fp16)} if p == "TensorrtExecutionProvider" else {} for p in chosen
        ]
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=chosen, provider_options=provider_options
            )
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelFileError(f"{model_path}: onnxruntime cannot load it ({exc})") from exc
        self.providers: list[str] = self._session.get_providers()
        log.debug("onnxruntime providers for %s: %s", Path(model_path).name, self.providers)
        self._on_cpu = self.providers[0] == "CPUExecutionProvider"
        self._binding = self._session.io_binding() if self._on_cpu else None
        self._outputs: dict[str, np.ndarray] = {}
        if self._binding is not None:
            for out in self._session.get_outputs():
                array = np.empty([int(d) for d in out.shape], dtype=_numpy_dtype(out.type))
                self._outputs[out.name] = array
                self._binding.bind_output(out.name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; ``inputs`` float32 arrays of the static input shapes."""
        if self._binding is None:
            values = self._session.run(None, inputs)
            return dict(zip(self.info.outputs, values, strict=True))
        for name, array in inputs.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            self._binding.bind_cpu_input(name, array)
        self._session.run_with_iobinding(self._binding)
        return self._outputs

    def close(self) -> None:
        self._binding = None
        self._session = None  # type: ignore[assignment]


def _numpy_dtype(onnx_type: str) -> np.dtype:
    """'tensor(float)' -> float32 and so on, for the output types our graphs use."""
    mapping = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(uint8)": np.uint8,
        "tensor(bool)": np.bool_,
    }
    if onnx_type not in mapping:
        raise ModelFileError(f"unsupported output type {onnx_type} in the model")
    return np.dtype(mapping[onnx_type])
