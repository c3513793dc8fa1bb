"""ONNX Runtime static INT8 quantization (QDQ, per-channel weights) calibrated on real frames.

The quantized file keeps the source model's metadata (the runtime reads mode, size and classes from
it) plus ``precision: int8``, so every backend and the pipeline load it like the FP32 model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from mtl_perception.errors import UserError
from mtl_perception.export.onnx_export import set_metadata
from mtl_perception.model_info import ModelInfo, read_model_info
from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

log = logging.getLogger(__name__)

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
# The compute-heavy ops, plus the activations between them: with Clip/Relu quantized too, ORT fuses
# Conv -> ReLU6 -> Conv chains into QLinearConv without a dequantize/requantize at every layer
# (measured at 256x512, 1 thread: Conv-only INT8 was 10 % slower than FP32, this about equal).
# Everything else (soft-argmin softmax, resizes, entropy) stays FP32: quantizing all ops measured
# more disparity drift (0.098 vs 0.081 px) and was slower still. The cost volume is a MatMul of two
# activations (left x right features): it stays FP32 too (``activation_products``), since rounding
# both operands to 8 bits blurs the matching scores the disparity is read from.
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Clip", "Relu")
WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
GEOMETRY_OUTPUTS = ("disparity", "disparity_uncertainty", "depth", "depth_uncertainty")
# MinMax: the EfficientNet-Lite backbone uses ReLU6, so its activations are bounded and MinMax
# ranges are not stretched by outliers; Percentile (99.999 %) clips the tails the regression heads
# read. Measured on a trained tiny stereo net (16 calibration, 8 held-out frames): disparity drift
# 0.081 px (MinMax) vs 0.110 px (Percentile), class agreement 96.9 % vs 97.2 %.
DEFAULT_CALIBRATION = "minmax"


def int8_path_for(model_path: str | Path) -> Path:
    """``<name>.onnx`` -> ``<name>.int8.onnx`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.int8.onnx")


def calibration_feeds(
    root: str | Path, split: str, info: ModelInfo, frames: int, kind: str = "synthetic"
) -> list[dict[str, np.ndarray]]:
    """Graph inputs for ``frames`` samples of a dataset split, resized to the model's input size.

    Frames are spread evenly over the split: neighbouring frames of one sequence look alike, and
    calibration ranges should cover every scene the split has.
    """
    from mtl_perception.data.datasets import build_dataset

    dataset = build_dataset(kind, root, split, eval_size=info.input_size)
    if len(dataset) == 0:
        raise UserError(f"{root}: split {split!r} has no frames to calibrate on; pass another --split")
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(frames, len(dataset))).round().astype(int))
    views = dict(zip(info.inputs, ("left", "right"), strict=False))  # mono: image = left view
    feeds = []
    for index in tqdm(indices, desc="calibration frames", leave=False):
        sample = dataset[int(index)]
        feeds.append({name: sample[view][None].numpy().astype(np.float32) for name, view in views.items()})
    return feeds


class FeedReader(CalibrationDataReader):
    """Hands ORT's calibrator one prepared feed dict at a time."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next = iter(tqdm(feeds, desc="calibrate", leave=False))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)


def output_head_nodes(model: onnx.ModelProto, outputs: Iterable[str]) -> list[str]:
    """Names of the last Conv/Gemm nodes before the given graph outputs (the prediction heads).

    Walks back from each output through non-weighted ops (argmax, softmax, activations, products of
    two activations such as a cost volume) and stops at the first weighted node on every path.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    correlations = set(activation_products(model))
    heads: list[str] = []
    seen: set[str] = set()
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED_OP_TYPES and node.name not in correlations:
            heads.append(node.name)
        else:
            pending.extend(node.input)
    return sorted(heads)


def activation_products(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose operands are both activations (no weight): correlations such
    as the stereo cost volume, as opposed to layers with learned weights."""
    weights = {initializer.name for initializer in model.graph.initializer}
    weights |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return sorted(
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in weights for name in node.input)
    )


@dataclass
class QuantizeResult:
    path: Path
    info: ModelInfo
    excluded_nodes: list[str]
    drift: dict[str, float] = field(default_factory=dict)  # see ``int8_drift``

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.path.stat().st_size / 2**20:.1f} MiB)"]
        lines += [f"  {name}: {value:.4f}" for name, value in self.drift.items()]
        return "\n".join(lines)


def quantize_int8(
    model_path: str | Path,
    output: str | Path,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    method: str = DEFAULT_CALIBRATION,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    keep_fp32_heads: Sequence[str] = GEOMETRY_OUTPUTS,
    symmetric_activations: bool = False,
    check: Sequence[dict[str, np.ndarray]] = (),
) -> QuantizeResult:
    """Quantize an exported FP32 model to INT8 (QDQ, per-channel symmetric weights).

    ``keep_fp32_heads`` names outputs whose last weighted layer stays FP32 (regression heads lose
    sub-pixel precision in INT8). ``symmetric_activations`` is what TensorRT's INT8 path expects;
    ONNX Runtime on CPU is more accurate with asymmetric ones. ``check`` feeds (other frames than
    the calibration ones) measure the INT8 model's drift from FP32.
    """
    if method not in CALIBRATION_METHODS:
        raise UserError(
            f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    if not calibration:
        raise UserError("no calibration frames; pass a dataset split with frames (--data, --split)")
    info = read_model_info(model_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference gives every activation a shape the quantizer needs; the graph-level
        # optimisation fuses what ORT would fuse anyway, so QDQ pairs land where kernels run.
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        source = onnx.load(str(prepared))
        excluded = output_head_nodes(source, [o for o in keep_fp32_heads if o in info.outputs])
        excluded += activation_products(source)
        quantize_static(
            str(prepared),
            str(output),
            FeedReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            nodes_to_exclude=excluded,
            calibrate_method=CALIBRATION_METHODS[method],
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
        )
    quantized = onnx.load(str(output))
    set_metadata(quantized, _int8_info(info, method, len(calibration)))
    onnx.save(quantized, str(output))
    drift = int8_drift(model_path, output, check) if check else {}
    return QuantizeResult(path=output, info=read_model_info(output), excluded_nodes=excluded, drift=drift)


def _int8_info(info: ModelInfo, method: str, frames: int) -> ModelInfo:
    from dataclasses import replace

    extra = {**info.extra, "precision": "int8", "int8_calibration": f"{method}, {frames} frames"}
    return replace(info, extra=extra)


def int8_drift(
    reference: str | Path, candidate: str | Path, feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, float]:
    """How far ``candidate`` strays from ``reference`` on ``feeds``.

    ``segmentation_agreement`` (share of pixels with the same class) and the mean absolute
    difference of each continuous output. Means, not the max of ``export.parity``: INT8 rounding
    moves a few pixels a lot by design, and parity's max-based pass/fail would only see those.
    """
    fp32, int8 = OnnxRuntimeBackend(reference), OnnxRuntimeBackend(candidate)
    agree = total = 0
    sums: dict[str, float] = {}
    for feed in feeds:
        want = {k: np.array(v) for k, v in fp32.infer(feed).items()}  # copy: backends reuse buffers
        got = int8.infer(feed)
        for name, value in want.items():
            if name == "semantic":
                agree += int(np.count_nonzero(value == got[name]))
                total += value.size
            else:
                diff = np.abs(value.astype(np.float64) - got[name].astype(np.float64))
                sums[name] = sums.get(name, 0.0) + float(diff.mean())
    fp32.close()
    int8.close()
    drift = {"segmentation_agreement": agree / total} if total else {}
    drift |= {f"{name}_mean_abs_diff": value / len(feeds) for name, value in sums.items()}
    return drift
