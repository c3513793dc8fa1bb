"""Uncertainty comparison (issue 12): single model, deep ensemble, distilled student, in and out of domain.

    python benchmarks/uncertainty_table.py \\
        --model stereo/single=runs/unc/stereo_s0/best.pt \\
        --model stereo/ensemble=runs/unc/stereo_s0/best.pt,runs/unc/stereo_s1/best.pt,... \\
        --model stereo/student=runs/unc/stereo_student/best.pt \\
        --data data/synthetic --unseen data/unseen --json benchmarks/results/uncertainty.json

Each ``--model LABEL=CKPT[,CKPT...]`` is one row: one checkpoint is a single network, several are a
deep ensemble (``training.distill.EnsembleNet``: mean probabilities, total variance). Stereo and mono
rows may be mixed; each is scored on the split at its own input size. Rows labelled ``KIND@REPEAT``
(``mono/ensemble@0``, ``mono/ensemble@1``, ...) are repeats of one kind with other seeds: the printed
tables give each kind's mean ± standard deviation over its repeats (the seed-to-seed spread); the
JSON keeps every row and the summaries.

- In domain: the ``--split`` (default test) of ``--data``: task metrics and every uncertainty measure
  of the README's "Uncertainty measures" (ECE, NLL, AUSE, AUROC, ±1/±2 sigma coverage).
- Out of distribution (never trained or selected on): the held-out generator domain ``--unseen`` (its
  ``--split``), and the in-domain frames corrupted by each fixed recipe of ``data/corruptions.py``.
  Per set: AUROC of a frame's mean uncertainty for telling its frames from the in-domain ones
  (segmentation: mean normalised entropy; stereo: mean disparity sigma in px; mono: mean sigma / depth),
  and the per-image sigma-error Spearman correlation on that set.
- Real photographs (``--photos-dir``, the street photos of ``data/real_photos.py``'s evaluation list, no
  labels): the same per-frame AUROC against the in-domain frames. Each photo is centre-cropped to the
  model's aspect and resized; a stereo model gets it as both views, so only its segmentation
  uncertainty is scored there (a pair with no parallax says nothing about depth uncertainty).
- frames/s: the torch network (``DeployModel``) on this CPU at batch 1, ``--threads`` threads: the
  relative cost of the rows (the shipped models' ONNX Runtime figures are in the model card).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional.classification import binary_auroc

from mtl_perception.contract import resize_image
from mtl_perception.data.corruptions import RECIPES, corrupt_pair, frame_seed
from mtl_perception.data.datasets import build_dataset
from mtl_perception.data.real_photos import load_listed_photos
from mtl_perception.networks import DeployModel, load_checkpoint
from mtl_perception.training.distill import EnsembleNet
from mtl_perception.training.evaluation import evaluate_model, json_safe

ROOT = Path(__file__).resolve().parent.parent


def load_row(paths: list[str]) -> nn.Module:
    """One checkpoint: that network; several: their deep ensemble."""
    members = [load_checkpoint(path)[0] for path in paths]
    return members[0] if len(members) == 1 else EnsembleNet(members)


class CorruptedFrames(Dataset):
    """``dataset``'s samples with both views corrupted by ``recipe`` (seeded per frame); labels kept."""

    def __init__(self, dataset: Dataset, recipe: str):
        self.dataset = dataset
        self.recipe = recipe

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        views = [
            (sample[k].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8) for k in ("left", "right")
        ]
        seed = frame_seed(str(sample.get("sequence", "")), int(sample.get("frame", index)))
        left, right = corrupt_pair(views[0], views[1], self.recipe, seed)
        sample["left"], sample["right"] = (
            torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))).float() / 255.0
            for v in (left, right)
        )
        return sample


@dataclass
class FrameUncertainty:
    """Per-frame mean uncertainty (the ``observe`` hook of ``evaluate_model``)."""

    stereo: bool
    semantic: list[float] = field(default_factory=list)
    geometry: list[float] = field(default_factory=list)

    def __call__(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        if "semantic_uncertainty" in outputs:
            self.semantic += outputs["semantic_uncertainty"].float().flatten(1).mean(1).tolist()
        if self.stereo and "disparity_uncertainty" in outputs:
            self.geometry += outputs["disparity_uncertainty"].float().flatten(1).mean(1).tolist()
        elif not self.stereo and "depth_uncertainty" in outputs:
            relative = outputs["depth_uncertainty"].float() / outputs["depth"].float().clamp_min(1e-3)
            self.geometry += relative.flatten(1).mean(1).tolist()


def separation_auroc(in_domain: list[float], out_of_domain: list[float]) -> float:
    """AUROC of a per-frame score for telling out-of-domain frames (positives) from in-domain ones."""
    if not in_domain or not out_of_domain:
        return float("nan")
    scores = torch.tensor(in_domain + out_of_domain)
    labels = torch.tensor([0] * len(in_domain) + [1] * len(out_of_domain))
    return float(binary_auroc(scores, labels))


def load_photos(photos_dir: Path) -> dict[str, np.ndarray]:
    """The evaluation photos found under ``photos_dir`` by name (HxWx3 uint8 RGB); says which are missing."""
    loaded, skipped = load_listed_photos(photos_dir)
    for name, reason in skipped.items():
        print(f"real photos: skipped {name} ({reason})")
    return {name: image for name, (_, image) in loaded.items()}


def photo_tensor(image: np.ndarray, size: tuple[int, int]) -> Tensor:
    """HxWx3 uint8 photo -> 1x3xHxW float 0..1 at ``size``: centre crop to its aspect, then resize."""
    height, width = image.shape[:2]
    aspect = size[1] / size[0]
    crop_w, crop_h = min(width, round(height * aspect)), min(height, round(width / aspect))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = image[top : top + crop_h, left : left + crop_w]
    resized = resize_image(crop, size[1], size[0])  # the runtime's resize: the pixels a robot's model sees
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None].float() / 255.0


def score_photos(model: nn.Module, photos: dict[str, np.ndarray]) -> FrameUncertainty:
    """Per-photo mean uncertainty (a stereo model sees each photo as both views: segmentation only)."""
    stereo = model.config.mode == "stereo"
    frames = FrameUncertainty(stereo)
    deploy = DeployModel(model).eval()
    size = tuple(model.config.input_size)
    with torch.inference_mode():
        for image in photos.values():
            view = photo_tensor(image, size)
            outputs = dict(
                zip(deploy.output_names, deploy(*([view, view] if stereo else [view])), strict=True)
            )
            frames(outputs, {})
    if stereo:
        frames.geometry.clear()
    return frames


def frames_per_second(model: nn.Module, threads: int, frames: int = 10) -> float:
    deploy = DeployModel(model)
    inputs = deploy.example_inputs()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for _ in range(2):
            deploy(*inputs)
        start = time.perf_counter()
        for _ in range(frames):
            deploy(*inputs)
    return frames / (time.perf_counter() - start)


def score_set(model: nn.Module, dataset: Dataset) -> tuple[dict[str, Any], FrameUncertainty]:
    stereo = model.config.mode == "stereo"
    frames = FrameUncertainty(stereo)
    loader = DataLoader(dataset, batch_size=1, shuffle=False)
    metrics = evaluate_model(model, stereo, loader, observe=frames)
    return metrics, frames


IN_DOMAIN_COLUMNS = (
    ("mIoU", "miou"),
    ("D1", "d1_all"),
    ("EPE", "epe"),
    ("AbsRel", "abs_rel"),
    ("seg ECE", "seg_ece"),
    ("seg NLL*", "seg_nll_toplabel"),
    ("seg AUSE", "seg_ause"),
    ("seg AUROC", "seg_auroc"),
    ("geo NLL", "{g}_nll"),
    ("geo AUSE", "{g}_ause"),
    ("geo AUROC", "{g}_auroc_{outlier}"),
    ("cov 1σ", "{g}_coverage_1sigma"),
    ("cov 2σ", "{g}_coverage_2sigma"),
)


def _number(value: Any) -> float:
    """A figure as a float; NaN for what is not one (JSON writes NaN as null)."""
    return float(value) if isinstance(value, int | float) else float("nan")


def _value(metrics: dict[str, Any], key: str, stereo: bool) -> float:
    geometry, outlier = ("disparity", "d1") if stereo else ("depth", "delta1")
    return _number(metrics.get(key.format(g=geometry, outlier=outlier)))


def kind_of(label: str) -> str:
    """``mono/ensemble@2`` -> ``mono/ensemble``: the row kind a repeat belongs to."""
    return label.split("@", 1)[0]


def group_repeats(rows: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by kind (``kind_of`` their label), in first-seen order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for label, row in rows.items():
        grouped.setdefault(kind_of(label), []).append(row)
    return grouped


def spread(values: list[float]) -> dict[str, float]:
    """Mean and standard deviation (ddof 1; 0 for one value) of a figure over repeats."""
    array = np.asarray(values, dtype=float)
    std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(np.mean(array)), "std": std}


def parse_rows(texts: list[str]) -> list[tuple[str, list[str]]]:
    """``LABEL=CKPT[,CKPT...]`` options -> (label, checkpoints)."""
    rows = []
    for text in texts:
        label, _, paths = text.partition("=")
        if not paths:
            raise SystemExit(f"--model {text!r}: expected LABEL=CKPT[,CKPT...]")
        rows.append((label, paths.split(",")))
    return rows


def summarise_kinds(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row kind: repeats, and the mean and standard deviation (ddof 1; 0 for one repeat) over its
    repeats of every in-domain column, frames/s, and every out-of-domain set's figures."""
    summaries = {}
    for kind, repeats in group_repeats(rows).items():
        stereo = repeats[0]["mode"] == "stereo"
        columns = {
            name: spread([_value(row["in_domain"], key, stereo) for row in repeats])
            for name, key in IN_DOMAIN_COLUMNS
        }
        columns["frames/s"] = spread([row["frames_per_second"] for row in repeats])
        out_of_domain = {
            name: {
                figure: spread([_number(row["out_of_domain"][name][figure]) for row in repeats])
                for figure in ("auroc_semantic", "auroc_geometry", "spearman_sigma_error")
            }
            for name in repeats[0]["out_of_domain"]
        }
        summaries[kind] = {
            "mode": repeats[0]["mode"],
            "members": repeats[0]["members"],
            "repeats": len(repeats),
            "in_domain": columns,
            "out_of_domain": out_of_domain,
        }
    return summaries


def _mean_std(figure: dict[str, float], repeats: int, digits: int = 4) -> str:
    if figure["mean"] != figure["mean"]:
        return "-"
    text = f"{figure['mean']:.{digits}f}"
    return text + (f" ± {figure['std']:.{digits}f}" if repeats > 1 else "")


def format_tables(summaries: dict[str, dict[str, Any]]) -> str:
    """The in-domain table and the out-of-domain table, one line per row kind (mean ± std)."""
    header = ["row", "mode", "M", "repeats", *(name for name, _ in IN_DOMAIN_COLUMNS), "frames/s"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for kind, summary in summaries.items():
        repeats = summary["repeats"]
        cells = [_mean_std(summary["in_domain"][name], repeats) for name, _ in IN_DOMAIN_COLUMNS]
        cells.append(_mean_std(summary["in_domain"]["frames/s"], repeats, digits=1))
        lines.append(
            f"| {kind} | {summary['mode']} | {summary['members']} | {repeats} | " + " | ".join(cells) + " |"
        )
    ood_lines = []
    for kind, summary in summaries.items():
        for name, ood in summary["out_of_domain"].items():
            cells = [
                _mean_std(ood[figure], summary["repeats"])
                for figure in ("auroc_semantic", "auroc_geometry", "spearman_sigma_error")
            ]
            ood_lines.append(f"| {kind} | {name} | " + " | ".join(cells) + " |")
    if ood_lines:  # --in-domain-only scores no out-of-domain set: no empty table
        lines += [
            "",
            "| row | out-of-domain set | AUROC (seg) | AUROC (geometry) | Spearman σ-error |",
            "|---|---|---|---|---|",
            *ood_lines,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=CKPT[,CKPT...]")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--unseen", type=Path, default=ROOT / "data" / "unseen", help="held-out domain root")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--photos-dir",
        type=Path,
        help="folder the real photos' packages were unpacked into (data/real_photos.py)",
    )
    parser.add_argument("--recipes", nargs="*", default=sorted(RECIPES), help="corruption recipes to score")
    parser.add_argument(
        "--in-domain-only",
        action="store_true",
        help="score --data's split alone: no corruptions, held-out domain or photos (model selection on val)",
    )
    parser.add_argument("--max-frames", type=int, default=0, help="0 = every frame of each set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "uncertainty.json")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --json whose label and checkpoints match; score only the others",
    )
    args = parser.parse_args()
    if args.in_domain_only:
        if args.photos_dir:
            parser.error("--in-domain-only scores no photos; drop --photos-dir")
        args.recipes, args.unseen = [], None
    if args.unseen is not None and not args.unseen.is_dir():
        args.unseen = None  # a missing folder is not scored, and the report says so

    rows = parse_rows(args.model)

    def limited(dataset: Dataset) -> Dataset:
        count = len(dataset) if args.max_frames <= 0 else min(args.max_frames, len(dataset))  # type: ignore[arg-type]
        return torch.utils.data.Subset(dataset, range(count))

    report: dict[str, Any] = {
        "host": platform.node(),
        "data": str(args.data),
        "split": args.split,
        "unseen": str(args.unseen) if args.unseen is not None else None,
        "recipes": sorted(args.recipes),
        "max_frames": args.max_frames,
        "rows": {},
    }
    photos = load_photos(args.photos_dir) if args.photos_dir else {}
    report["real_photos"] = sorted(photos)
    recorded = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else {}
    # Rows are kept only if they were scored on the same sets.
    settings = ("data", "split", "unseen", "recipes", "max_frames", "real_photos")
    same_sets = all(recorded.get(k) == report[k] for k in settings)
    for label, paths in rows:
        previous = recorded.get("rows", {}).get(label) if same_sets else None
        if previous is not None and previous["checkpoints"] == paths:
            report["rows"][label] = previous
            print(f"{label}: kept from {args.json}")
            continue
        model = load_row(paths)
        stereo = model.config.mode == "stereo"
        size = tuple(model.config.input_size)
        in_domain = limited(build_dataset("synthetic", args.data, args.split, eval_size=size))
        metrics, frames_in = score_set(model, in_domain)
        row: dict[str, Any] = {
            "mode": model.config.mode,
            "members": len(paths),
            "checkpoints": paths,
            "frames_per_second": frames_per_second(model, args.threads),
            "in_domain": metrics,
            "out_of_domain": {},
        }
        sets: dict[str, Dataset] = {f"corrupted/{r}": CorruptedFrames(in_domain, r) for r in args.recipes}
        if args.unseen is not None:
            sets["unseen_domain"] = limited(
                build_dataset("synthetic", args.unseen, args.split, eval_size=size)
            )
        for name, dataset in sets.items():
            ood_metrics, frames_out = score_set(model, dataset)
            geometry = "disparity" if stereo else "depth"
            row["out_of_domain"][name] = {
                "frames": len(frames_out.semantic) or len(frames_out.geometry),
                "auroc_semantic": separation_auroc(frames_in.semantic, frames_out.semantic),
                "auroc_geometry": separation_auroc(frames_in.geometry, frames_out.geometry),
                "spearman_sigma_error": ood_metrics.get(f"{geometry}_spearman", float("nan")),
                "metrics": ood_metrics,
            }
        if photos:
            frames_photos = score_photos(model, photos)
            row["out_of_domain"]["real_photos"] = {
                "frames": len(photos),
                "auroc_semantic": separation_auroc(frames_in.semantic, frames_photos.semantic),
                "auroc_geometry": separation_auroc(frames_in.geometry, frames_photos.geometry),
                "spearman_sigma_error": float("nan"),  # no labels
                "metrics": {},
            }
        report["rows"][label] = row
        print(f"{label}: done ({len(paths)} checkpoint(s))")
        write_report(args.json, report)  # so an interrupted run resumes from here

    report["kinds"] = summarise_kinds(report["rows"])
    table = format_tables(report["kinds"])
    print(table)
    print("(seg NLL*: top-label NLL; nominal coverage: see the JSON, per distribution)")
    report["table"] = table
    write_report(args.json, report)
    print(f"wrote {args.json}")


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
