"""Real stereo pairs with ground truth, from packages only: the shipped stereo model vs OpenCV SGBM.

    pip install scikit-image   # not a project dependency; its wheel ships the pair (no download)
    python benchmarks/real_pairs.py [--json benchmarks/results/real_pairs.json]

The pair is Middlebury 2014 "Motorcycle" as scikit-image ships it (``skimage.data.stereo_motorcycle``:
files in the wheel, quarter size 500x741, float disparity of the left view, inf = unknown, the
calibration from its docstring). It is written as a Middlebury scene folder into a temporary
directory and read back with the project's ``middlebury`` loader, so the loader is what evaluation
uses. For evaluation only: never train or tune on it.

Two resolutions are scored (EPE and D1-all of ``mtl_perception.metrics``; pixels of known ground
truth; KITTI's D1: > 3 px and > 5 %; and AbsRel of the depth baseline * f / (d + doffs) against the
true depth, on the pixels given a disparity):

* ``input`` (500x741): the runtime ``Pipeline`` resizes the pair to the model's 256x512, runs it and
  returns disparity at the input size, scaled by the width ratio (what the node publishes). SGBM
  runs on the full-size pair with the model's range scaled the same way.
* ``model`` (256x512): the pair resized as the pipeline resizes it, ground truth nearest-resized and
  scaled by the width ratio (what ``mtl-perception evaluate --eval-size`` does); SGBM on those pixels.

SGBM leaves holes (no match); it is scored twice: on the pixels where it gave a disparity, and with
its holes counted as errors (predicted 0, as ``evaluate`` scores it). The model is dense.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl_perception.baselines.sgbm import num_disparities, sgbm_disparity, sgbm_matcher
from mtl_perception.data.augment import resize_stereo
from mtl_perception.data.middlebury import MiddleburyDataset
from mtl_perception.data.sample import StereoArrays
from mtl_perception.metrics import DisparityMetrics
from mtl_perception.runtime import Pipeline, create_backend

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "stereo_default.onnx"
RESULTS = ROOT / "benchmarks" / "results"

# skimage.data.stereo_motorcycle's docstring: calibration of the quarter-size (500x741) images.
MOTORCYCLE_FILES = ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz")
MOTORCYCLE_CALIB = {"f": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline_mm": 193.001}


def write_scene(
    folder: Path, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, calib: dict[str, float]
) -> Path:
    """A Middlebury scene folder (im0.png, im1.png, disp0.pfm, calib.txt) from RGB arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in (("im0.png", left), ("im1.png", right)):
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(folder / "disp0.pfm"), disparity.astype(np.float32))
    f, cx, cy, doffs = calib["f"], calib["cx"], calib["cy"], calib["doffs"]
    height, width = left.shape[:2]
    (folder / "calib.txt").write_text(
        f"cam0=[{f} 0 {cx}; 0 {f} {cy}; 0 0 1]\n"
        f"cam1=[{f} 0 {cx + doffs:.3f}; 0 {f} {cy}; 0 0 1]\n"
        f"doffs={doffs}\nbaseline={calib['baseline_mm']}\nwidth={width}\nheight={height}\n"
    )
    return folder


def motorcycle_arrays(workdir: Path) -> tuple[StereoArrays, dict[str, Any]]:
    """The scikit-image pair, written as a Middlebury scene and read back by the project's loader."""
    import skimage
    from skimage.data import stereo_motorcycle

    bundled = Path(skimage.__file__).parent / "data"
    missing = [n for n in MOTORCYCLE_FILES if not (bundled / n).is_file()]
    if missing:  # skimage would download them (with pooch): this benchmark uses packaged files only
        raise SystemExit(f"{bundled}: {', '.join(missing)} not in this scikit-image install")
    left, right, disparity = stereo_motorcycle()
    write_scene(workdir / "Motorcycle", left, right, disparity, MOTORCYCLE_CALIB)
    arrays = MiddleburyDataset(workdir, ".").load_arrays(0)
    # The loader must give back exactly what the package holds (known pixels; unknown -> 0).
    known = np.isfinite(disparity) & (disparity > 0)
    assert np.array_equal(arrays.disparity, np.where(known, disparity, 0).astype(np.float32))
    assert np.array_equal(arrays.left, left) and np.array_equal(arrays.right, right)
    source = {
        "package": f"scikit-image {skimage.__version__}",
        "function": "skimage.data.stereo_motorcycle",
        "scene": "Middlebury 2014 Motorcycle, quarter size (scikit-image's downsampling)",
        "size_hw": list(arrays.size),
        "known_ground_truth_share": float(known.mean()),
        "ground_truth_disparity_px": [float(disparity[known].min()), float(disparity[known].max())],
        "calib": MOTORCYCLE_CALIB,
    }
    return arrays, source


def _scores(
    pred: np.ndarray, gt: np.ndarray, uncertainty: np.ndarray | None = None
) -> dict[str, float | int]:
    metrics = DisparityMetrics()
    metrics.update(pred, gt, uncertainty)
    out = metrics.compute()
    scores: dict[str, float | int] = {"epe_px": out["epe"], "d1_all": out["d1_all"], "pixels": metrics.pixels}
    if uncertainty is not None:
        scores["disparity_ause"] = out["disparity_ause"]
    return scores


def depth_abs_rel(pred: np.ndarray, arrays: StereoArrays) -> float:
    """AbsRel of the depth baseline * f / (d + doffs) the predicted disparity gives, over the pixels
    with known ground truth and a predicted disparity (> 0)."""
    keep = (arrays.disparity > 0) & (pred > 0)
    depth = arrays.fx * arrays.baseline / (pred[keep] + arrays.doffs)
    truth = arrays.depth[keep]
    return float(np.mean(np.abs(depth - truth) / truth))


def score_sgbm(arrays: StereoArrays, max_disparity: float) -> dict[str, Any]:
    """SGBM on its own pixels and with holes counted; density = share of known gt it covered."""
    raw = sgbm_disparity(sgbm_matcher(max_disparity), arrays.left, arrays.right)
    found = np.isfinite(raw)
    gt = arrays.disparity
    own = _scores(np.where(found, raw, 0), np.where(found, gt, 0))
    own["depth_abs_rel"] = depth_abs_rel(np.where(found, raw, 0), arrays)
    return {
        "num_disparities": num_disparities(max_disparity),
        "on_its_pixels": own,
        "holes_counted": _scores(np.nan_to_num(raw, nan=0.0), gt),
        "density": float(found[gt > 0].mean()),
    }


def score_model(pipeline: Pipeline, arrays: StereoArrays, full: StereoArrays) -> dict[str, Any]:
    """The pipeline on the full-size pair; its output resolution decides which ``arrays`` it matches."""
    result = pipeline.process(full.left, full.right)
    assert result.disparity is not None and result.disparity.shape == arrays.size
    scores = _scores(result.disparity, arrays.disparity, result.disparity_uncertainty)
    scores["depth_abs_rel"] = depth_abs_rel(np.nan_to_num(result.disparity, nan=0.0), arrays)
    scores["density"] = float(np.isfinite(result.disparity[arrays.disparity > 0]).mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "real_pairs.json")
    args = parser.parse_args()

    backend = create_backend(args.backend, args.model, threads=args.threads)
    model_h, model_w = backend.info.input_size
    report: dict[str, Any] = {
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "backend": backend.name,
        "host": platform.node(),
        "metrics": "EPE (px) and D1-all (> 3 px and > 5 %) over known ground truth, pixels pooled",
        "pairs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        full, source = motorcycle_arrays(Path(tmp))
    small = resize_stereo(full, (model_h, model_w))
    width_ratio = full.size[1] / model_w
    entry: dict[str, Any] = {"source": source, "resolutions": {}}
    for name, arrays, sgbm_range in (
        ("input", full, backend.info.max_disparity * width_ratio),
        ("model", small, backend.info.max_disparity),
    ):
        pipeline = Pipeline(backend, output_resolution=name)
        entry["resolutions"][name] = {
            "size_hw": list(arrays.size),
            "model": score_model(pipeline, arrays, full),
            "sgbm": score_sgbm(arrays, sgbm_range),
        }
    report["pairs"]["motorcycle"] = entry
    backend.close()

    for name, res in entry["resolutions"].items():
        m, s = res["model"], res["sgbm"]
        print(f"motorcycle @ {name} {res['size_hw'][0]}x{res['size_hw'][1]}:")
        depth = f"  AbsRel {m['depth_abs_rel']:.4f}"
        print(f"  model            EPE {m['epe_px']:7.3f} px  D1-all {m['d1_all']:.4f}{depth}")
        for kind in ("on_its_pixels", "holes_counted"):
            k = s[kind]
            depth = f"  AbsRel {k['depth_abs_rel']:.4f}" if "depth_abs_rel" in k else ""
            print(f"  sgbm {kind:13s} EPE {k['epe_px']:7.3f} px  D1-all {k['d1_all']:.4f}{depth}")
        print(f"  sgbm density {s['density']:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
