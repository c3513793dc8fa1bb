"""`mtl-perception infer`: run a model on image files or folders and write its maps and overlays.

The quickest way to try a model on one's own pictures: no ROS, no bag. Stereo takes a left and a
right image (or two folders whose files pair up by name); mono takes one image or folder. Every
map is the runtime pipeline's, at the input resolution, under the same output policy the node uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mtl_perception.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
MAP_FORMATS = ("npy", "pfm")
OVERLAY_ALPHA = 0.5  # weight of the class colours over the input image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", type=Path, nargs="+", help="LEFT RIGHT (stereo) or IMAGE (mono): files or folders"
    )
    parser.add_argument("--model", type=Path, help="ONNX model or checkpoint (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=Path("infer_output"), help="output folder")
    parser.add_argument("--fx", type=float, help="focal length in pixels of the input images (stereo depth)")
    parser.add_argument("--baseline", type=float, help="stereo baseline in meters (stereo depth)")
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=MAP_FORMATS,
        default=["npy"],
        help="files for the float maps (NaN unknown, +Inf too far); PFM is what Middlebury tools read",
    )
    parser.add_argument("--min-disparity", type=float, default=0.0, help="px; below it a pixel is too far")
    parser.add_argument("--confidence-threshold", type=float, default=0.0, help="m; 0 keeps every depth")
    parser.add_argument("--resize-mode", choices=["stretch", "letterbox"], default="stretch")
    parser.add_argument("--backend", default="auto", help="auto | tensorrt | onnxruntime | torch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the backend")


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from mtl_perception.contract import OutputPolicy
    from mtl_perception.ros.resources import default_model_path
    from mtl_perception.runtime import CameraModel, Pipeline, create_backend
    from mtl_perception.runtime.memory import retain_freed_memory

    retain_freed_memory()  # per-frame maps reuse freed pages instead of faulting in new ones

    if (args.fx is None) != (args.baseline is None):
        raise UserError("give both --fx and --baseline (stereo depth needs both), or neither")
    try:
        policy = OutputPolicy(
            min_disparity=args.min_disparity, confidence_threshold=args.confidence_threshold
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    model = args.model
    if model is None:
        model = default_model_path("stereo" if len(args.inputs) == 2 else "mono")
    backend = create_backend(args.backend, model, threads=args.threads)
    try:
        stereo = backend.info.is_stereo
        if len(args.inputs) != (2 if stereo else 1):
            raise UserError(
                f"{model} is a {backend.info.mode} model: give "
                f"{'a LEFT and a RIGHT image (or folder)' if stereo else 'one image (or folder)'}, "
                f"got {len(args.inputs)} path(s)"
            )
        jobs = pair_inputs(args.inputs)
        pipeline = Pipeline(backend, resize_mode=args.resize_mode, policy=policy)
        camera = CameraModel(args.fx, args.baseline) if args.fx is not None else None
        args.out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {}
        for stem, paths in tqdm(jobs, desc="infer", unit="frame", disable=len(jobs) < 2):
            views = [_read(path) for path in paths]
            result = pipeline.process(*views, encoding="bgr8", camera=camera)
            written[stem] = write_outputs(args.out, stem, views[0], result, args.formats, cv2)
    finally:
        backend.close()
    (args.out / "index.json").write_text(
        json.dumps({"model": str(model), "mode": backend.info.mode, "frames": written}, indent=2) + "\n"
    )
    print(f"wrote the maps of {len(written)} frame(s) to {args.out.resolve()}")
    return 0


def pair_inputs(inputs: list[Path]) -> list[tuple[str, list[Path]]]:
    """(output stem, [left(, right)]) per frame; folders pair their image files by name."""
    for path in inputs:
        if not path.exists():
            raise UserError(f"no such file or folder: {path}")
    if all(path.is_file() for path in inputs):
        return [(inputs[0].stem, list(inputs))]
    if not all(path.is_dir() for path in inputs):
        raise UserError("give files or folders, not a mix of both")
    listings = [
        {p.name: p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES} for d in inputs
    ]
    names = sorted(listings[0])
    if not names:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {inputs[0]}")
    missing = [name for name in names if any(name not in listing for listing in listings[1:])]
    if missing:
        raise UserError(
            f"{len(missing)} left image(s) have no right image of the same name, e.g. {missing[0]}"
        )
    return [(Path(name).stem, [listing[name] for listing in listings]) for name in names]


def _read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {path}")
    return image


def write_outputs(out: Path, stem: str, bgr: np.ndarray, result, formats: list[str], cv2) -> list[str]:
    """The frame's class ids (PNG), float maps (``formats``), colour renderings and overlay; names."""
    files: dict[str, np.ndarray] = {f"{stem}_semantic.png": result.semantic}
    color = cv2.cvtColor(result.semantic_color(), cv2.COLOR_RGB2BGR)
    files[f"{stem}_semantic_color.png"] = color
    files[f"{stem}_overlay.png"] = cv2.addWeighted(bgr, 1.0 - OVERLAY_ALPHA, color, OVERLAY_ALPHA, 0.0)
    maps = {
        "semantic_uncertainty": result.semantic_uncertainty,
        "disparity": result.disparity,
        "disparity_uncertainty": result.disparity_uncertainty,
        "depth": result.depth,
        "depth_uncertainty": result.depth_uncertainty,
    }
    for name, values in maps.items():
        if values is None:
            continue
        if name in ("disparity", "depth"):
            files[f"{stem}_{name}_color.png"] = colorize_map(values, inverse=name == "depth", cv2=cv2)
        for suffix in formats:
            files[f"{stem}_{name}.{suffix}"] = values
    for name, values in files.items():
        path = out / name
        if name.endswith(".npy"):
            np.save(path, values)
        elif not cv2.imwrite(str(path), values):
            raise UserError(f"could not write {path}")
    return sorted(files)


def colorize_map(values: np.ndarray, *, inverse: bool, cv2) -> np.ndarray:
    """Turbo colours of a disparity (near = warm) or depth (``inverse``: 1/depth); unknown black."""
    shown = 1.0 / values if inverse else values  # depth +Inf -> 0, the far end of the scale
    finite = np.isfinite(shown)
    top = float(np.percentile(shown[finite], 99)) if finite.any() else 1.0
    scaled = np.clip(np.nan_to_num(shown, nan=0.0, posinf=top) / max(top, 1e-6), 0.0, 1.0)
    image = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    image[~np.isfinite(values) & ~np.isposinf(values)] = 0  # NaN = unknown: black
    return image
