"""Evaluate a model (or the OpenCV SGBM baseline) on a split with ``MultiTaskMetrics``.

Checkpoints are evaluated through the networks' ``DeployModel``: the exact post-processing the
exported graph runs (class ids, uncertainty maps). Exported models (ONNX, FP32 or INT8) go through a
runtime ``Backend``. Both feed one loop (``evaluate_predictions``), so their numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mtl_perception.metrics import SCALAR_METRICS, MultiTaskMetrics

if TYPE_CHECKING:
    from mtl_perception.runtime import Backend

# One batch of samples -> the model's outputs by exported name (torch tensors, batch first).
PredictFn = Callable[[dict[str, Any]], dict[str, Tensor]]
# Sees every batch's outputs (metric depth added) beside the batch, for per-frame statistics.
ObserveFn = Callable[[dict[str, Tensor], dict[str, Any]], None]

# Fraction of valid ground-truth pixels for which SGBM returned a disparity (reported, not a metric).
SGBM_DENSITY_KEY = "sgbm_density"


def model_inputs(batch: dict[str, Any], stereo: bool, device: torch.device) -> tuple[Tensor, ...]:
    """The network's positional inputs from a sample batch: (left, right) or (image,)."""
    left = batch["left"].to(device, non_blocking=True)
    if not stereo:
        return (left,)
    return left, batch["right"].to(device, non_blocking=True)


def add_depth_from_disparity(outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
    """Stereo: metric depth z = fx·B/(d + doffs) and its first-order uncertainty σ_z = z²/(fx·B)·σ_d.

    ``doffs`` (the principal-point offset, Middlebury's) is 0 for the other sources; batches without
    it (hand-made ones) count as 0.
    """
    disparity = outputs["disparity"]  # NxHxW, as DeployModel returns it
    focal_baseline = (batch["fx"] * batch["baseline"]).view(-1, 1, 1).to(disparity)
    doffs = batch.get("doffs")
    shifted = disparity if doffs is None else disparity + doffs.view(-1, 1, 1).to(disparity)
    depth = focal_baseline / shifted.clamp_min(1e-3)
    outputs["depth"] = torch.where(disparity > 0, depth, torch.zeros_like(depth))
    if "disparity_uncertainty" in outputs:
        sigma = depth.square() / focal_baseline * outputs["disparity_uncertainty"]
        # No disparity, no depth estimate: NaN (scored as "no estimate"), not a confident 0.
        outputs["depth_uncertainty"] = torch.where(disparity > 0, sigma, torch.full_like(sigma, float("nan")))


def scale_mono_depth(outputs: dict[str, Tensor], batch: dict[str, Any], focal_length: float) -> None:
    """Mono: depth learned for a camera of ``focal_length`` px -> this sample's camera (x fx / focal_length),
    as the runtime pipeline scales it with fx from camera_info. Uncertainty scales alike."""
    for key in ("depth", "depth_uncertainty"):
        if key in outputs:
            outputs[key] = outputs[key] * (batch["fx"] / focal_length).view(-1, 1, 1).to(outputs[key])


@torch.inference_mode()
def evaluate_predictions(
    predict: PredictFn,
    stereo: bool,
    batches: Iterable[dict[str, Any]],
    max_batches: int | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    focal_length: float | None = None,
    observe: ObserveFn | None = None,
    distribution: str = "laplace",
) -> dict[str, Any]:
    """Metrics of ``predict`` over the batches: the one metrics path every model kind goes through.

    ``distribution`` is what the model's uncertainty heads assume (regression NLL, nominal coverage).

    Stereo models get metric depth (and its uncertainty) from their disparity and the sample's
    calibration, as the runtime pipeline publishes it; mono models with a ``focal_length`` get their
    depth scaled to the sample's camera (``scale_mono_depth``).

    Pixels scored (the batch's ``disparity_valid`` / ``depth_valid`` masks): D1/EPE over every
    labelled pixel including "infinitely far" ones (truth 0 px: predicting 10 px there is an error);
    AbsRel/RMSE/δ over labelled pixels of finite depth only (+inf has no relative error).
    """
    metrics = MultiTaskMetrics(stereo=stereo, distribution=distribution)
    for batch in tqdm(islice(batches, max_batches), desc=desc, disable=not progress, leave=False):
        outputs = predict(batch)
        if stereo:
            add_depth_from_disparity(outputs, batch)
        elif focal_length is not None:
            scale_mono_depth(outputs, batch, focal_length)
        if observe is not None:
            observe(outputs, batch)
        metrics.update_frame({k: v.float().cpu() for k, v in outputs.items()}, batch)
    return metrics.compute()


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    stereo: bool,
    batches: Iterable[dict[str, Any]],
    max_batches: int | None = None,
    progress: bool = True,
    observe: ObserveFn | None = None,
    inputs: Callable[[dict[str, Any], torch.device], tuple[Tensor, ...]] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` (a training network, unwrapped, or an ``EnsembleNet``) over the batches.

    ``inputs`` builds the network's positional inputs from a batch (default: the view(s) of
    ``model_inputs``; a pseudo-label teacher adds its guidance map).
    """
    from mtl_perception.networks import DeployModel

    device = next(model.parameters()).device
    was_training = model.training
    deploy = DeployModel(model).eval()

    def predict(batch: dict[str, Any]) -> dict[str, Tensor]:
        values = deploy(*(inputs(batch, device) if inputs else model_inputs(batch, stereo, device)))
        return dict(zip(deploy.output_names, values, strict=True))

    try:
        return evaluate_predictions(
            predict,
            stereo,
            batches,
            max_batches,
            progress,
            focal_length=getattr(model.config, "focal_length", None),
            observe=observe,
            distribution=model.config.uncertainty_distribution,
        )
    finally:
        model.train(was_training)


def backend_predictor(backend: Backend) -> PredictFn:
    """``predict`` for a runtime backend: its static batch-1 graph is run once per sample.

    Inputs are the sample's views by graph input name (``left``/``right``, or ``image`` = left for
    mono), already at the model's input size; outputs are copied because backends reuse buffers.
    """
    views = dict(zip(backend.info.inputs, ("left", "right"), strict=False))
    output_names = [name for name in backend.info.outputs if name != "embedding"]

    def predict(batch: dict[str, Any]) -> dict[str, Tensor]:
        frames: list[dict[str, np.ndarray]] = []
        for index in range(len(batch["left"])):
            feeds = {
                name: batch[view][index : index + 1].numpy().astype(np.float32, copy=False)
                for name, view in views.items()
            }
            outputs = backend.infer(feeds)
            frames.append({name: np.array(outputs[name]) for name in output_names})
        return {name: torch.from_numpy(np.concatenate([f[name] for f in frames])) for name in output_names}

    return predict


def evaluate_backend(
    backend: Backend,
    batches: Iterable[dict[str, Any]],
    max_batches: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of a loaded runtime backend (ONNX Runtime, TensorRT, torch) over sample batches."""
    return evaluate_predictions(
        backend_predictor(backend),
        backend.info.is_stereo,
        batches,
        max_batches,
        progress,
        backend.name,
        focal_length=backend.info.focal_length,
        distribution=backend.info.uncertainty_distribution,
    )


def _uint8_rgb(image: Tensor) -> np.ndarray:
    """3xHxW float 0..1 -> HxWx3 uint8, the input the SGBM baseline takes."""
    return np.ascontiguousarray((image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def evaluate_sgbm(
    batches: Iterable[dict[str, Any]], max_disparity: float, max_batches: int | None = None
) -> dict[str, Any]:
    """Disparity (and derived depth) metrics of OpenCV SGBM (``mtl_perception.baselines.sgbm``).

    Pixels where SGBM gives no disparity are predicted as 0 and so count as errors in EPE/D1 (no
    hole filling); ``sgbm_density`` reports the share of valid ground-truth pixels SGBM covered.
    """
    from mtl_perception.baselines.sgbm import sgbm_disparity, sgbm_matcher

    matcher = sgbm_matcher(max_disparity)
    metrics = MultiTaskMetrics(stereo=True)
    covered = total = 0
    for batch in tqdm(islice(batches, max_batches), desc="sgbm", leave=False):
        raw = np.stack(
            [
                sgbm_disparity(matcher, _uint8_rgb(lt), _uint8_rgb(rt))
                for lt, rt in zip(batch["left"], batch["right"], strict=True)
            ]
        )
        found = torch.from_numpy(np.isfinite(raw))
        disparity = torch.from_numpy(np.nan_to_num(raw, nan=0.0))
        outputs = {"disparity": disparity}
        add_depth_from_disparity(outputs, batch)
        metrics.update_frame(outputs, batch)
        # Density over measured pixels (gt > 0): on far pixels a hole (0) is the right answer.
        valid = (batch["disparity"] > 0) & batch["has_depth"].view(-1, 1, 1)
        covered += int(found[valid].sum())
        total += int(valid.sum())
    result = metrics.compute()
    result[SGBM_DENSITY_KEY] = covered / total if total else float("nan")
    return result


def flat_scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar metrics only (per-class IoU flattened as ``iou/<class>``; curves left out).

    A NaN scalar (not measured, e.g. ECE without a top-class probability) is left out, as the
    JSON report's null is.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, float | int) and not isinstance(value, bool) and np.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
        elif key == "iou":
            out.update({f"{prefix}iou/{name}": v for name, v in value.items()})
    return out


# Columns of the summary tables, in print order; absent metrics are left out.
SUMMARY_KEYS = (*SCALAR_METRICS, "score", SGBM_DENSITY_KEY)


def _cell(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN != NaN


def format_metrics(metrics: dict[str, Any]) -> str:
    """Markdown: summary metrics, then per-class IoU (fractions, not percent)."""
    scalars = flat_scalars(metrics)
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(scalars[key])} |" for key in SUMMARY_KEYS if key in scalars]
    lines += [f"| IoU {key[4:]} | {_cell(v)} |" for key, v in scalars.items() if key.startswith("iou/")]
    if "pooling" in metrics:
        lines.append(f"\n({metrics['pooling']})")
    return "\n".join(lines)


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table, one row per named result, one column per summary metric any of them has."""
    flat = {name: flat_scalars(m) for name, m in results.items()}
    keys = [k for k in SUMMARY_KEYS if any(k in f and f[k] == f[k] for f in flat.values())]
    lines = ["| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, scalars in flat.items():
        lines.append(f"| {name} | " + " | ".join(_cell(scalars.get(k, float("nan"))) for k in keys) + " |")
    return "\n".join(lines)


def split_loader(
    kind: str, root: str, split: str, size: tuple[int, int], batch_size: int = 1, workers: int = 0
) -> DataLoader:
    """Samples of a split resized to the model input ``size`` = (H, W), in order, unaugmented."""
    from mtl_perception.data.datasets import build_dataset

    dataset = build_dataset(kind, root, split, eval_size=size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def evaluate_checkpoint(
    checkpoint: str | Path,
    root: str,
    split: str,
    kind: str | None = None,
    batch_size: int = 1,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Load a networks checkpoint and evaluate it on a split at its input size.

    ``kind`` defaults to the dataset layout the checkpoint was trained on (else ``synthetic``).
    """
    from mtl_perception.networks import load_checkpoint

    model, config, meta = load_checkpoint(checkpoint)
    kind = kind or str(meta.get("data_kind", "synthetic"))
    loader = split_loader(kind, root, split, tuple(config.input_size), batch_size)
    return evaluate_model(model, config.mode == "stereo", loader, max_batches)


def evaluate_exported(
    model_path: str | Path,
    root: str,
    split: str,
    kind: str | None = None,
    backend: str = "auto",
    threads: int | None = None,
    batch_size: int = 1,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Evaluate an exported model file through a runtime backend on a split at its input size.

    The input size and mode come from the file's metadata; ``kind`` defaults to ``synthetic``
    (an exported file does not record its training data).
    """
    from mtl_perception.runtime import create_backend

    runner = create_backend(backend, model_path, threads=threads)
    try:
        loader = split_loader(kind or "synthetic", root, split, runner.info.input_size, batch_size)
        return evaluate_backend(runner, loader, max_batches)
    finally:
        runner.close()


def json_safe(value: Any) -> Any:
    """NaN -> None recursively, so reports are strict JSON (NaN means "no such pixels")."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
