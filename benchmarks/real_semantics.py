"""Semantics on real street photographs (qualitative): one panel per photo and per-class pixel shares.

    # the photos: Debian's opencv-doc (mtl_perception.data.real_photos)
    mkdir -p /tmp/real_photos && cd /tmp/real_photos && <FETCH_COMMANDS of that module>
    python benchmarks/real_semantics.py --model models/stereo_default.onnx \
        --model models/mono_default.onnx --photos-dir /tmp/real_photos --out models/real_semantics/

The photos (``EVALUATION_PHOTOS``) have no labels: this shows what the models make of real pictures,
it scores nothing. Evaluation only: never train, tune or select on them.

Each photo goes through the runtime ``Pipeline`` (resized to the model, maps back at the photo's
size). A stereo model is given the photo as both its left and its right view: its disparity is
meaningless then and is not shown, only its semantics. A mono model gets the photo.

Writes ``<model>__<photo>.jpg`` (photo | class colours over the photo | top-class confidence, a
legend, ~960 px wide, JPEG quality 80) and ``real_semantics.json`` (per model and photo: share of
the pixels given each class, mean top-class confidence). A photo that is not found is skipped with
the reason, and listed as skipped in the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl_perception.data.labels import CLASSES, colorize
from mtl_perception.data.real_photos import PackagePhoto, load_listed_photos
from mtl_perception.runtime import Pipeline, PipelineResult, create_backend

ROOT = Path(__file__).resolve().parent.parent
TILE_WIDTH = 320  # px of each of the three tiles: panels ~960 px wide
JPEG_QUALITY = 80
OVERLAY_ALPHA = 0.55  # weight of the class colour over the photo
STEREO_NOTE = "stereo model, photo fed as left AND right: disparity meaningless, semantics only"
MONO_NOTE = "mono model, photo as its image"


def run_photo(pipeline: Pipeline, photo: np.ndarray) -> PipelineResult:
    """One photo through the pipeline: as both views for a stereo model, as the image for mono."""
    if pipeline.info.is_stereo:
        return pipeline.process(photo, photo)
    return pipeline.process(photo)


def confidence_of(result: PipelineResult) -> tuple[np.ndarray, str]:
    """Top-class confidence map (0..1) and its name; older models only give the normalised entropy,
    then 1 - entropy stands in and is named so."""
    if result.semantic_confidence is not None:
        return result.semantic_confidence, "top-class confidence"
    return 1.0 - result.semantic_uncertainty, "1 - normalised entropy"


def class_shares(semantic: np.ndarray) -> dict[str, float]:
    """Share of the pixels given each class of the table (sums to 1 over the table's classes)."""
    counts = np.bincount(semantic.reshape(-1), minlength=256)
    total = max(int(semantic.size), 1)
    return {c.name: float(counts[c.id]) / total for c in CLASSES}


def _tile(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    size = (TILE_WIDTH, max(1, round(height * TILE_WIDTH / width)))
    interpolation = cv2.INTER_AREA if width > TILE_WIDTH else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    """White text on the panel's dark strips."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def legend(width: int) -> np.ndarray:
    """A strip of class colour swatches with their names (RGB)."""
    per_row = 5
    cell_w, row_h = width // per_row, 22
    strip = np.full((row_h * -(-len(CLASSES) // per_row), width, 3), 32, np.uint8)
    for i, c in enumerate(CLASSES):
        x, y = (i % per_row) * cell_w, (i // per_row) * row_h
        strip[y + 4 : y + row_h - 4, x + 4 : x + 20] = c.color
        _text(strip, c.name, (x + 25, y + 16), 0.42)
    return strip


def render_panel(
    photo: np.ndarray, semantic: np.ndarray, confidence: np.ndarray, title: str, confidence_name: str
) -> np.ndarray:
    """photo | class colours over the photo | confidence (viridis, 0..1), title above, legend below
    (HxWx3 uint8 RGB, 3 * TILE_WIDTH wide)."""
    base = _tile(photo)
    size = (base.shape[1], base.shape[0])
    classes = cv2.resize(colorize(semantic), size, interpolation=cv2.INTER_NEAREST)
    overlay = cv2.addWeighted(classes, OVERLAY_ALPHA, base, 1.0 - OVERLAY_ALPHA, 0.0)
    conf8 = np.clip(np.nan_to_num(confidence, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    conf_rgb = cv2.cvtColor(cv2.applyColorMap(conf8, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    conf_tile = cv2.resize(conf_rgb, size, interpolation=cv2.INTER_AREA)
    row = np.hstack([base, overlay, conf_tile])
    header = np.full((44, row.shape[1], 3), 32, np.uint8)
    for i, line in enumerate(title.split("\n")[:2]):
        _text(header, line, (6, 17 + 20 * i))
    captions = np.full((20, row.shape[1], 3), 32, np.uint8)
    for i, caption in enumerate(("photo", "classes (colour over photo)", f"{confidence_name}, 0 .. 1")):
        _text(captions, caption, (i * TILE_WIDTH + 6, 15), 0.42)
    return np.vstack([header, captions, row, legend(row.shape[1])])


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"{path}: could not write the panel")


def describe_photo(photo: PackagePhoto) -> dict[str, Any]:
    entry = {"package": photo.package, "path": photo.path, "sha256": photo.sha256, "shows": photo.shows}
    if photo.frame is not None:
        entry["frame"] = photo.frame
    return entry


def evaluate_model(
    pipeline: Pipeline,
    model_name: str,
    photos: dict[str, tuple[PackagePhoto, np.ndarray]],
    out: Path,
) -> dict[str, Any]:
    """Panels and class shares of one model on the loaded photos."""
    note = STEREO_NOTE if pipeline.info.is_stereo else MONO_NOTE
    entries: dict[str, Any] = {}
    for name, (photo, image) in photos.items():
        result = run_photo(pipeline, image)
        confidence, confidence_name = confidence_of(result)
        height, width = image.shape[:2]
        title = f"{model_name} on {name} ({width}x{height}, {photo.package.split(' (')[0]})\n{note}"
        panel_file = f"{model_name}__{name}.jpg"
        write_jpeg(out / panel_file, render_panel(image, result.semantic, confidence, title, confidence_name))
        shares = class_shares(result.semantic)
        entries[name] = {
            "panel": panel_file,
            "size_hw": [height, width],
            "class_shares": {k: round(v, 4) for k, v in shares.items()},
            "mean_confidence": round(float(np.nanmean(confidence)), 4),
            "confidence": confidence_name,
        }
    return {"mode": pipeline.info.mode, "input": note, "photos": entries}


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="ONNX model (repeatable)")
    parser.add_argument("--photos-dir", type=Path, help="folder the photo packages were unpacked into")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "real_semantics")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models = args.model or [ROOT / "models" / "stereo_default.onnx"]

    photos, skipped = load_listed_photos(args.photos_dir)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not photos:
        print("no evaluation photo found: nothing to do", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "what": "per-class share of the pixels each model gives on real photos (no labels: qualitative)",
        "host": platform.node(),
        "photos": {name: describe_photo(photo) for name, (photo, _) in photos.items()},
        "skipped": {name: reason.split("\n")[0] for name, reason in skipped.items()},
        "models": {},
    }
    for model in models:
        backend = create_backend(args.backend, model, threads=args.threads)
        try:
            entry = evaluate_model(Pipeline(backend), model.stem, photos, args.out)
        finally:
            backend.close()
        entry["model"] = _relative(model)
        entry["backend"] = backend.name
        report["models"][model.stem] = entry
        print(f"{model.stem} ({entry['mode']}): class shares in % of the photo's pixels")
        print(f"  {'photo':22s}" + "".join(f"{c.name[:8]:>9s}" for c in CLASSES) + "  conf")
        for name, photo_entry in entry["photos"].items():
            shares = photo_entry["class_shares"]
            row = "".join(f"{100 * shares[c.name]:9.1f}" for c in CLASSES)
            print(f"  {name:22s}{row}  {photo_entry['mean_confidence']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_semantics.json").write_text(json.dumps(report, indent=2) + "\n")
    panels = sum(len(m["photos"]) for m in report["models"].values())
    print(f"wrote {args.out / 'real_semantics.json'} and {panels} panels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
