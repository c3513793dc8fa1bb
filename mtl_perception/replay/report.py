"""The self-contained replay report: one HTML file, plots and images inlined as base64 PNG."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import itertools

import matplotlib.pyplot as plt

from mtl_perception.replay.gates import headline

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 2px 10px; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.panels { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 1.2em; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #555; }
img.map { width: 256px; image-rendering: pixelated; } .error { color: #b00; font-weight: bold; }
"""


def figure_base64(fig: plt.Figure) -> str:
    """``data:`` URI of a matplotlib figure as PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def timeline_plot(per_frame: list[dict[str, Any]]) -> str | None:
    """Latency and the per-frame accuracy metrics over the frame index (dropped frames marked)."""
    series = [
        k
        for k in ("latency_ms", "miou", "d1_all", "epe", "abs_rel", "steering_error_deg")
        if any(row.get(k) is not None for row in per_frame)
    ]
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(10, 1.8 * len(series)), sharex=True, squeeze=False)
    dropped = [row["index"] for row in per_frame if row.get("latency_ms") is None]
    for ax, key in zip(axes[:, 0], series, strict=True):
        rows = [row for row in per_frame if row.get(key) is not None]
        ax.plot([r["index"] for r in rows], [r[key] for r in rows], ".-", markersize=3)
        for index in dropped:
            ax.axvline(index, color="red", alpha=0.25, linewidth=1)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame (red: dropped)")
    return figure_base64(fig)


def reliability_plot(calibration: dict[str, Any], ece: float | None) -> str | None:
    """Reliability diagram of the top-class probability (accuracy per confidence bin vs the diagonal)."""
    pairs = [
        (c, a)
        for c, a in zip(calibration["confidence"], calibration["accuracy"], strict=True)
        if c is not None and a is not None
    ]
    if not pairs:
        return None
    edges = calibration["bin_edges"]
    centers = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
    accuracy = [a if a is not None else 0.0 for a in calibration["accuracy"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centers, accuracy, width=edges[1] - edges[0], edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    title = "semantic reliability" + (f" (ECE {ece:.3f})" if ece is not None and math.isfinite(ece) else "")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    return figure_base64(fig)


def sparsification_plot(sparsification: dict[str, Any], accuracy: dict[str, Any]) -> str | None:
    """Sparsification curves (by uncertainty vs oracle) per task, with AUSE in the titles."""
    tasks = [(name, curves) for name, curves in sparsification.items() if curves.get("curve")]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, (name, curves) in zip(axes[0], tasks, strict=True):
        task = name.removesuffix("_sparsification")
        ause = accuracy.get(f"{task}_ause")
        ax.plot(curves["fractions"], curves["curve"], label="by uncertainty")
        ax.plot(curves["fractions"], curves["oracle"], "--", label="oracle")
        ax.set_title(f"{task}: AUSE {ause:.3f}" if ause is not None and math.isfinite(ause) else task)
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel("mean error of the rest")
        ax.grid(alpha=0.3)
        ax.legend()
    return figure_base64(fig)


def _table(rows: list[tuple[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:  # a metric with nothing to measure (JSON null)
            return "<td>n/a</td>"
        if isinstance(value, float):
            return f'<td class="num">{value:.4g}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    body = "".join(f"<tr><th>{html.escape(k)}</th>{cell(v)}</tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _image(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">' if uri else f"<p>no data for {html.escape(alt)}</p>"


def render_report(summary: dict[str, Any], panels: list[dict[str, Any]]) -> str:
    """The report HTML of a replay ``summary`` (metrics.json content) and its frame panels."""
    run = summary.get("run", {})
    parts = [f"<h1>mtl_perception replay: {html.escape(str(run.get('bag', '')))}</h1>"]
    if summary.get("error"):
        parts.append(f'<p class="error">Incomplete: {html.escape(summary["error"])}</p>')
    parts.append(_table([(k, v) for k, v in run.items()]))
    parts.append("<h2>Headline</h2>" + _table(sorted(headline(summary).items())))
    parts.append("<h2>Frames</h2>" + _table(list(summary["frames"].items())))
    accuracy = summary.get("accuracy")
    if accuracy:
        iou = accuracy.get("iou", {})
        parts.append("<h2>Per-class IoU</h2>" + _table([(n, v) for n, v in iou.items() if not math.isnan(v)]))
        parts.append("<h2>Uncertainty calibration</h2>")
        parts.append(
            _image(
                reliability_plot(summary["calibration"], accuracy.get("seg_ece")),
                "reliability (ECE needs the model's semantic_confidence output)",
            )
        )
        parts.append(
            _image(sparsification_plot(summary.get("sparsification", {}), accuracy), "sparsification")
        )
    else:
        parts.append("<p>The bag holds no ground truth (or no frame was processed): timing only.</p>")
    if "steering" in summary:
        parts.append(
            "<h2>Steering</h2><p>Predicted minus true angle, degrees, over the frames whose window held "
            "T consecutive frames; the others are counted, not scored.</p>"
            + _table(list(summary["steering"].items()))
        )
    elif run.get("steering_graph") == "none" and "steering" in str(run.get("ground_truth", "")):
        parts.append("<h2>Steering</h2><p>No steering graph beside the model: steering not evaluated.</p>")
    parts.append("<h2>Per-frame timelines</h2>" + _image(timeline_plot(summary["per_frame"]), "timelines"))
    parts.append("<h2>Sampled frames</h2>")
    for panel in panels:
        figures = "".join(
            f'<figure><img class="map" src="{uri}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, uri in panel["images"].items()
        )
        parts.append(
            f'<h3>frame {panel["index"]} (stamp {panel["stamp"]})</h3><div class="panels">{figures}</div>'
        )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>mtl_perception replay report</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(path: str | Path, summary: dict[str, Any], panels: list[dict[str, Any]]) -> Path:
    """Write ``render_report`` to ``path``."""
    path = Path(path)
    path.write_text(render_report(summary, panels), encoding="utf-8")
    return path
