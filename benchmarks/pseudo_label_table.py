"""Issue 14, experiment 1 at reduced scale: does a depth-aware teacher's pseudo-labelling help?

On the synthetic training split with only a share of the frames keeping their semantic labels (all
keep depth), every variant trains the same mono network (config/train/pseudo_label_small.yaml:
128x256, 250 steps) and is scored on the test split:

  seg_only       segmentation only, on the labelled frames (this is the image-only teacher itself:
                 same network, frames, loss and seed, so it is trained once)
  mt_masked      multi-task on all frames, the missing semantic loss masked
  mt_both_only   multi-task on the frames that have both labels only
  pl_image       multi-task on real + pseudo semantics from the image-only teacher
  pl_depth       multi-task on real + pseudo semantics from the depth-aware teacher
and the reverse direction (depth labels removed from the same share of frames instead):
  rev_mt_masked  multi-task, the missing depth loss masked
  rev_pl_semantic  multi-task on real + pseudo depth from the semantic-aware teacher

Teachers: config/train/pseudo_label_teacher_small.yaml via `mtl-perception pseudo-label`. Resumable:
finished runs (final.pt) and evaluations (test.json) are skipped, interrupted ones resume. With
``--previous`` (an earlier --json), rows it recorded are not rerun and pool into the table as recorded. Two
workers only while no `mtl-perception adapt` job runs (another job's CPU), else one.

    python benchmarks/pseudo_label_table.py --shares 0.25 0.5 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STUDENT = "config/train/pseudo_label_small.yaml"
TEACHER = "config/train/pseudo_label_teacher_small.yaml"
DATA = "data/synthetic"
OUT = Path("runs/pseudo_label")
RESULTS = Path("benchmarks/results/pseudo_labels_small.json")
CLI = [str(ROOT / ".venv/bin/mtl-perception")]
ROWS = (
    ("seg_only", "seg only, labelled frames"),
    ("mt_masked", "MT, missing loss masked"),
    ("mt_both_only", "MT, frames with both labels only"),
    ("pl_image", "MT + PL, image-only teacher"),
    ("pl_depth", "MT + PL, depth-aware teacher"),
    ("rev_mt_masked", "reverse: MT, missing depth masked"),
    ("rev_pl_semantic", "reverse: MT + pseudo depth, semantic-aware teacher"),
)
METRICS = ("miou", "abs_rel", "delta1")
_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def adapt_running() -> bool:
    return subprocess.run(["pgrep", "-f", "mtl-perception adapt"], capture_output=True).returncode == 0


def _nice() -> list[str]:
    """Niceness 10 for the runs (another job's CPU comes first), not more if the runner already has it."""
    missing = 10 - os.nice(0)
    return ["nice", "-n", str(missing)] if missing > 0 else []


def run_logged(cmd: list[str], log: Path) -> float:
    """Run a command (nice, one thread) with its output in ``log``; wall seconds; raise on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.run(
            [*_nice(), *cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        ).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {log}")
    return time.monotonic() - start


class Cell:
    """One (share, seed): its run folders, overrides and the jobs that fill its table rows."""

    def __init__(self, share: float, seed: int, out: Path, extra: list[str], eval_batches: int | None):
        self.share, self.seed = share, seed
        self.dir = out / f"share{round(share * 100):02d}_seed{seed}"
        self.extra = [arg for text in extra for arg in ("--set", text)]
        self.eval_batches = [] if eval_batches is None else ["--max-batches", str(eval_batches)]

    def common(self, out: Path) -> list[str]:
        return ["--set", f"train.seed={self.seed}", "--set", f"train.output_dir={out}", *self.extra]

    def forward(self) -> list[str]:
        """Both shares set explicitly: a config's own values never leak into a variant."""
        return ["--set", f"data.semantic_label_share={self.share}", "--set", "data.depth_label_share=1.0"]

    def reverse(self) -> list[str]:
        return ["--set", "data.semantic_label_share=1.0", "--set", f"data.depth_label_share={self.share}"]

    # -- jobs -------------------------------------------------------------------------------------

    def teacher(self, name: str, guidance: str, target: str, shares: list[str]) -> Callable[[dict], None]:
        out = self.dir / name

        def job(timings: dict) -> None:
            manifest = out / "pseudo_labels" / "manifest.json"
            if not manifest.is_file():
                say(f"{out}: teacher ({guidance} -> {target})")
                args = ["--set", f"teacher.guidance={guidance}", "--set", f"teacher.target={target}"]
                timings[str(out)] = run_logged(
                    [*CLI, "pseudo-label", "--config", TEACHER, *self.common(out), *shares, *args],
                    out / "log.txt",
                )
            if not manifest.is_file():
                raise RuntimeError(f"{out}: no pseudo-labels after the teacher ran; see {out / 'log.txt'}")

        return job

    def student(self, name: str, extra: list[str]) -> Callable[[dict], None]:
        out = self.dir / name

        def job(timings: dict) -> None:
            if not (out / "final.pt").is_file():
                say(f"{out}: student")
                timings[str(out)] = run_logged(
                    [*CLI, "train", "--config", STUDENT, "--resume", *self.common(out), *extra],
                    out / "log.txt",
                )

        return job

    def evaluate(self, run: Path) -> Callable[[dict], None]:
        def job(timings: dict) -> None:
            target = run / "test.json"
            if not target.is_file():
                checkpoint = run / "final.pt"
                cmd = [*CLI, "evaluate", "--checkpoint", str(checkpoint), "--data", DATA, "--split", "test"]
                cmd += ["--batch-size", "8", "--json", str(target), *self.eval_batches]
                run_logged(cmd, run / "eval_log.txt")

        return job

    def pseudo_labels_of(self, teacher: str) -> list[str]:
        """Overrides that train a student on a teacher's labels (checked against its checkpoint)."""
        folder = self.dir / teacher
        labels, checkpoint = folder / "pseudo_labels", folder / "best.pt"
        return ["--set", f"data.pseudo_labels={labels}", "--set", f"data.pseudo_label_teacher={checkpoint}"]

    def chains(self) -> list[tuple[tuple[str, ...], list[Callable[[dict], None]]]]:
        """(table rows it fills, jobs) in priority order; a chain's jobs run in order on one worker."""
        pl = self.pseudo_labels_of
        fwd, rev = self.forward(), self.reverse()
        return [
            (
                ("seg_only", "pl_image"),
                [
                    self.teacher("teacher_image", "none", "semantic", fwd),
                    self.evaluate(self.dir / "teacher_image"),
                    self.student("pl_image", fwd + pl("teacher_image")),
                    self.evaluate(self.dir / "pl_image"),
                ],
            ),
            (("mt_masked",), [self.student("mt_masked", fwd), self.evaluate(self.dir / "mt_masked")]),
            (
                ("pl_depth",),
                [
                    self.teacher("teacher_depth", "depth", "semantic", fwd),
                    self.student("pl_depth", fwd + pl("teacher_depth")),
                    self.evaluate(self.dir / "pl_depth"),
                ],
            ),
            (
                ("mt_both_only",),
                [
                    self.student("mt_both_only", [*fwd, "--set", "data.require_all_labels=true"]),
                    self.evaluate(self.dir / "mt_both_only"),
                ],
            ),
            (
                ("rev_mt_masked",),
                [self.student("rev_mt_masked", rev), self.evaluate(self.dir / "rev_mt_masked")],
            ),
            (
                ("rev_pl_semantic",),
                [
                    self.teacher("teacher_semantic", "semantic", "depth", rev),
                    self.student("rev_pl_semantic", rev + pl("teacher_semantic")),
                    self.evaluate(self.dir / "rev_pl_semantic"),
                ],
            ),
        ]

    def row_runs(self) -> dict[str, Path]:
        names = {row: row for row, _ in ROWS} | {"seg_only": "teacher_image"}
        return {row: self.dir / folder for row, folder in names.items()}


def run_all(cells: list[Cell], workers: int, timings: dict, recorded: set[str] = frozenset()) -> list[str]:
    """Run every chain but those whose rows are all ``recorded`` (in a --previous result); worker 1+
    only starts a chain while no adapt job runs. Returns failures."""
    queue = [
        jobs
        for cell in cells
        for rows, jobs in cell.chains()
        if not all(f"{cell.dir.name}/{row}" in recorded for row in rows)
    ]
    lock = threading.Lock()
    failures: list[str] = []

    def worker(index: int) -> None:
        while True:
            while index > 0 and adapt_running():
                with lock:
                    if not queue:
                        return
                time.sleep(30)
            with lock:
                if not queue:
                    return
                chain = queue.pop(0)
            try:
                for job in chain:
                    job(timings)
            except RuntimeError as exc:
                say(f"FAILED: {exc}")
                failures.append(str(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def pseudo_label_quality(directory: Path) -> dict[str, Any] | None:
    """Share of pixels kept and their agreement with the real (hidden) labels of those frames."""
    import cv2

    from mtl_perception.data import layout
    from mtl_perception.data.partial_labels import pseudo_label_path

    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    right = total = kept = pixels = 0
    abs_rel: list[float] = []
    for key in manifest["frames"]:
        sequence, frame = key.rsplit("/", 1)
        if manifest["target"] == "semantic":
            pseudo = cv2.imread(str(pseudo_label_path(directory, "semantic", key)), cv2.IMREAD_UNCHANGED)
            real = cv2.imread(
                str(layout.frame_path(Path(DATA), "train", sequence, "semantic", int(frame))),
                cv2.IMREAD_UNCHANGED,
            )
            scored = (pseudo != 255) & (real != 255)
            right += int((pseudo[scored] == real[scored]).sum())
            total += int(scored.sum())
            kept += int((pseudo != 255).sum())
        else:
            pseudo, valid = layout.decode_depth(
                cv2.imread(str(pseudo_label_path(directory, "depth", key)), cv2.IMREAD_UNCHANGED)
            )
            real, real_valid = layout.decode_depth(
                cv2.imread(
                    str(layout.frame_path(Path(DATA), "train", sequence, "depth", int(frame))),
                    cv2.IMREAD_UNCHANGED,
                )
            )
            scored = valid & real_valid & np.isfinite(real) & np.isfinite(pseudo)
            if scored.any():
                abs_rel.append(float(np.mean(np.abs(pseudo[scored] - real[scored]) / real[scored])))
            kept += int(valid.sum())
        pixels += pseudo.size
    result: dict[str, Any] = {"frames": len(manifest["frames"]), "kept_pixel_share": kept / max(pixels, 1)}
    if manifest["target"] == "semantic":
        result["kept_pixel_accuracy"] = right / max(total, 1)
    else:
        result["kept_abs_rel_mean_per_frame"] = float(np.mean(abs_rel)) if abs_rel else None
    return result


def guided_teacher_test(run: Path) -> dict[str, Any] | None:
    """A guided teacher's own test scores, guidance from the test labels (cached in teacher_test.json).

    Not a deployable number (the teacher reads a label): it shows how good its labels can be.
    """
    cached = run / "teacher_test.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    if not (run / "final.pt").is_file():
        return None
    import torch

    from mtl_perception.networks.guided import load_teacher
    from mtl_perception.training.evaluation import split_loader
    from mtl_perception.training.pseudo_labels import evaluate_teacher

    torch.set_num_threads(1)
    net, _ = load_teacher(run / "best.pt")
    loader = split_loader("synthetic", DATA, "test", tuple(net.config.input_size), batch_size=8)
    metrics = evaluate_teacher(net, loader)
    result = {m: metrics.get(m) for m in METRICS}
    cached.write_text(json.dumps(result))
    return result


def train_bar_time(run: Path) -> str | None:
    """The training bar's elapsed time of a run's last (possibly resumed) session, from its log."""
    log = run / "log.txt"
    if not log.is_file():
        return None
    found = re.findall(r"train: 100%\|[^|]*\| (\d+)/(\d+) \[([\d:]+)<", log.read_text(errors="replace"))
    return found[-1][2] if found else None


def collect(cells: list[Cell], timings: dict, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-run metrics and the mean / spread per (share, row).

    ``previous``: an earlier result of this script; its runs of these cells whose folders are not
    here (another machine, a fresh checkout) are taken from it as recorded, so seeds run in
    different sessions pool into one table.
    """
    runs: dict[str, Any] = {}
    table: dict[str, Any] = {}
    recorded = previous["runs"] if previous else {}
    for cell in cells:
        for row, run in cell.row_runs().items():
            report = run / "test.json"
            key = f"{cell.dir.name}/{row}"
            if not report.is_file():
                if key in recorded:
                    runs[key] = recorded[key] | {"from": "previous result"}
                    values = {m: recorded[key].get(m) for m in METRICS}
                    table.setdefault(f"{cell.share}", {}).setdefault(row, []).append(values)
                continue
            metrics = json.loads(report.read_text())["metrics"]
            values = {m: metrics.get(m) for m in METRICS}
            if row == "seg_only":  # its depth head was never trained: no depth score
                values["abs_rel"] = values["delta1"] = None
            runs[key] = {
                "share": cell.share,
                "seed": cell.seed,
                "run": str(run),
                "train_bar_time": train_bar_time(run),
            } | values
            table.setdefault(f"{cell.share}", {}).setdefault(row, []).append(values)
        for teacher in ("teacher_image", "teacher_depth", "teacher_semantic"):
            quality = pseudo_label_quality(cell.dir / teacher / "pseudo_labels")
            if quality is not None:
                runs[f"{cell.dir.name}/{teacher}/pseudo_labels"] = quality
            if teacher != "teacher_image" and (scores := guided_teacher_test(cell.dir / teacher)) is not None:
                runs[f"{cell.dir.name}/{teacher}/test_with_guidance_from_labels"] = scores
        for key, entry in recorded.items():  # teacher figures of cells that ran elsewhere
            if key.startswith(f"{cell.dir.name}/") and key.count("/") == 2 and key not in runs:
                runs[key] = entry
    summary: dict[str, Any] = {}
    for share, rows in table.items():
        for row, values in rows.items():
            entry: dict[str, Any] = {"n_seeds": len(values)}
            for metric in METRICS:
                numbers = [v[metric] for v in values if v[metric] is not None]
                if numbers:
                    entry[metric] = {
                        "mean": float(np.mean(numbers)),
                        "min": min(numbers),
                        "max": max(numbers),
                    }
            summary.setdefault(share, {})[row] = entry
    return {"runs": runs, "summary": summary, "train_seconds": timings}


def _cell(entry: dict[str, Any], metric: str) -> str:
    if metric not in entry:
        return "-"
    m = entry[metric]
    if entry["n_seeds"] == 1:
        return f"{m['mean']:.3f}"
    return f"{m['mean']:.3f} ± {(m['max'] - m['min']) / 2:.3f}"


def format_table(result: dict[str, Any]) -> str:
    shares = sorted(result["summary"], key=float)
    header = (
        "| variant | " + " | ".join(f"{float(s):.0%} {m}" for s in shares for m in METRICS) + " | seeds |"
    )
    lines = [header, "|---" * (1 + len(shares) * len(METRICS) + 1) + "|"]
    for row, label in ROWS:
        cells = []
        seeds = []
        for share in shares:
            entry = result["summary"][share].get(row, {"n_seeds": 0})
            cells += [_cell(entry, m) for m in METRICS]
            seeds.append(str(entry["n_seeds"]))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'/'.join(seeds)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2, help="at most this many runs at once (see above)")
    parser.add_argument("--table-only", action="store_true", help="collect what has run, run nothing")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the runs")
    parser.add_argument(
        "--previous",
        type=Path,
        help="an earlier --json of this script: its runs with no folder in --out are pooled as recorded",
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="override for every run (e.g. a smoke test)"
    )
    parser.add_argument("--eval-batches", type=int, default=None, help="score only the first N test batches")
    args = parser.parse_args()
    os.chdir(ROOT)
    # Priority: every share at the first seed, then the next seed.
    cells = [
        Cell(share, seed, args.out, args.extra, args.eval_batches)
        for seed in args.seeds
        for share in args.shares
    ]
    timings_path = args.out / "train_seconds.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    previous = json.loads(args.previous.read_text()) if args.previous else None
    failures: list[str] = []
    if not args.table_only:
        failures = run_all(cells, args.workers, timings, set(previous["runs"]) if previous else set())
        timings_path.parent.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=1))
    if previous:
        timings = previous.get("train_seconds", {}) | timings
    result = collect(cells, timings, previous)
    result["overrides"] = args.extra
    result["scale"] = (
        "mono EfficientNet-Lite0 at 128x256 (frames zoomed to half), 250 steps of batch 4 per run "
        f"({STUDENT}, teachers {TEACHER}); test split of {DATA}, all frames"
    )
    result["seeds"] = {"train.seed": args.seeds, "data.label_share_seed": 0}
    result["spread"] = "mean ± half the range (max - min) over the seeds that ran"
    result["failures"] = failures
    table = format_table(result)
    result["table"] = table
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(table)
    print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
