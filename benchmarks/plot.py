"""Latency vs pixels (log-log) per backend and preset, drawn with matplotlib's Agg canvas (no display)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["plot_latency_vs_pixels"]

_PRESET_STYLE = {"lite": "-", "paper": "--"}


def plot_latency_vs_pixels(rows: list[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write a PNG: median latency (ms, p90 as the upper whisker) vs pixels, one line per preset/backend.

    Only rows with ``status == "ok"`` are drawn. Uses :class:`matplotlib.figure.Figure` with an Agg
    canvas directly, so pyplot's global state and the display backend are never touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    sizes: dict[int, str] = {}
    for row in rows:
        if row.get("status") == "ok":
            series[(row["preset"], row["backend"])].append((row["pixels"], row["median_ms"], row["p90_ms"]))
            sizes[row["pixels"]] = f"{row['width']}x{row['height']}"
    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for (preset, backend), points in sorted(series.items()):
        points.sort()
        px = [p[0] for p in points]
        med = [p[1] for p in points]
        upper = [max(0.0, p[2] - p[1]) for p in points]
        ax.errorbar(
            px, med, yerr=[[0.0] * len(points), upper], marker="o", capsize=3,
            linestyle=_PRESET_STYLE.get(preset, ":"), label=f"{preset} / {backend}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    if len(sizes) > 1:
        # guide: cost proportional to pixels, through the cheapest point at the smallest size
        lo, hi = min(sizes), max(sizes)
        y0 = min(p[1] for points in series.values() for p in points if p[0] == lo)
        ax.plot([lo, hi], [y0, y0 * hi / lo], color="0.6", linestyle=":", label="proportional to pixels")
    if sizes:
        ax.set_xticks(sorted(sizes), [sizes[p] for p in sorted(sizes)])
        ax.minorticks_off()
    ax.set_xlabel("frame size W x H (log of pixel count)")
    ax.set_ylabel("latency per frame, ms (median; whisker to p90)")
    ax.set_title(title or "DSTFuse model-only latency, batch 1")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no successful case", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
