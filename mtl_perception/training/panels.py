"""TensorBoard image panels: input, semantic GT / prediction (class colours), disparity or depth."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from mtl_perception.data.labels import colorize


def colorize_scalar_map(values: np.ndarray, vmax: float) -> np.ndarray:
    """HxW non-negative map -> HxWx3 uint8 RGB (OpenCV 'magma'; 0/invalid stays black)."""
    finite = np.nan_to_num(values, nan=0.0, posinf=vmax)  # far (+inf) at the top of the scale
    scaled = np.clip(finite / max(vmax, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    rgb[~(values > 0)] = 0
    return rgb


def panel(batch: dict[str, Any], outputs: dict[str, Tensor], stereo: bool) -> np.ndarray:
    """One HxWx3 uint8 image of the first sample, tiles at the input's resolution.

    Top row: input, semantic GT, semantic prediction; bottom: blank, disparity (or depth) GT, prediction.
    """
    left = (batch["left"][0].detach().float().cpu().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    height, width = left.shape[:2]

    def fit(image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (height, width):
            return image
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)

    gt_semantic = colorize(batch["semantic"][0].cpu().numpy().clip(0, 255).astype(np.uint8))
    logits = outputs["semantic_logits"][0].detach().float()
    pred_semantic = colorize(logits.argmax(0).cpu().numpy().astype(np.uint8))
    key = "disparity" if stereo else "depth"
    gt_geometry = batch[key][0].cpu().numpy()
    pred_geometry = outputs[key][0, 0].detach().float().cpu().numpy()
    # Scale by measured values: "infinitely far" depth (+inf) would make the scale infinite.
    measured = gt_geometry[(gt_geometry > 0) & np.isfinite(gt_geometry)]
    vmax = float(np.percentile(measured, 99)) if measured.size else 1.0
    top = np.concatenate([left, fit(gt_semantic), fit(pred_semantic)], axis=1)
    bottom = np.concatenate(
        [
            np.zeros_like(left),
            fit(colorize_scalar_map(gt_geometry, vmax)),
            fit(colorize_scalar_map(pred_geometry, vmax)),
        ],
        axis=1,
    )
    return np.concatenate([top, bottom], axis=0)


def add_panel(writer: Any, tag: str, image: np.ndarray, step: int) -> None:
    """Write an HxWx3 uint8 panel to a SummaryWriter."""
    writer.add_image(tag, torch.from_numpy(image), step, dataformats="HWC")
