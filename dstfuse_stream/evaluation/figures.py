"""Images the evaluations write: halo crops at strong edges, attention heat-maps, metric bar plots.

Panels are uint8 BGR with a label above each tile; no per-image normalisation except where a
caption says so (the attention heat-map uses the fixed scale 0..1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.imageio import resize_max_side
from dstfuse_stream.metrics import METRICS, halo_overshoot_map

__all__ = ["halo_crop_centres", "halo_crop_panel", "attention_heatmap_panel", "label_tiles", "fusion_plot"]

_LABEL_H = 18


def _bgr(img: np.ndarray) -> np.ndarray:
    img = img if img.dtype == np.uint8 else float_to_uint8(img)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def label_tiles(tiles: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Tiles of one height side by side, each with a black label strip on top, 2 px gaps."""
    out = []
    for tile, text in zip(tiles, labels):
        tile = _bgr(tile)
        strip = np.zeros((_LABEL_H, tile.shape[1], 3), np.uint8)
        cv2.putText(strip, text, (3, _LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        out += [np.vstack([strip, tile]), np.full((tile.shape[0] + _LABEL_H, 2, 3), 64, np.uint8)]
    return np.hstack(out[:-1])


def _peak_centres(strength: np.ndarray, count: int, min_distance: int) -> list[tuple[int, int]]:
    """``(y, x)`` of up to ``count`` positive maxima of ``strength``, greedily, at least ``min_distance``
    px apart (Chebyshev) and ``min_distance // 2`` px from the border."""
    h, w = strength.shape
    m = min_distance // 2
    inner = np.full(strength.shape, -1.0)
    inner[m : h - m, m : w - m] = strength[m : h - m, m : w - m]
    centres: list[tuple[int, int]] = []
    for idx in np.argsort(inner, axis=None)[::-1]:
        y, x = divmod(int(idx), w)
        if inner[y, x] <= 0 or len(centres) == count:
            break
        if all(max(abs(y - cy), abs(x - cx)) >= min_distance for cy, cx in centres):
            centres.append((y, x))
    return centres


def halo_crop_centres(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray | None, count: int, *, crop: int) -> list[tuple[int, int]]:
    """Where to look for halos: the largest overshoot of ``fused`` in the strong-edge band
    (:func:`~dstfuse_stream.metrics.halo_overshoot_map`, 9x9 box mean), then the strongest source edges."""
    centres: list[tuple[int, int]] = []
    if fused is not None and fused.shape == ir.shape:
        over, band = halo_overshoot_map(ir, vis, fused)
        centres = _peak_centres(cv2.blur(over * band, (9, 9)), count, crop)
    if len(centres) < count:
        mags = [np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)) for x in (ir, vis)]
        edges = cv2.blur(np.maximum(*mags), (5, 5))
        for c in _peak_centres(edges, count, crop):
            if len(centres) < count and all(max(abs(c[0] - y), abs(c[1] - x)) >= crop for y, x in centres):
                centres.append(c)
    return centres


def halo_crop_panel(
    ir: np.ndarray, vis: np.ndarray, fused: Mapping[str, np.ndarray], *, count: int = 3, crop: int = 48, scale: int = 2
) -> np.ndarray:
    """Rows of ``crop`` px squares, ``scale``x nearest-neighbour enlarged: IR | visible | each fused
    image (resized to the sources' size first when it differs). Crops are centred on the largest
    overshoot of the *first* fused image (:func:`halo_crop_centres`)."""
    h, w = ir.shape
    crop = min(crop, h, w)
    names = ["IR", "visible", *fused]
    images = [ir, vis] + [f if f.shape == ir.shape else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in fused.values()]
    rows = []
    for cy, cx in halo_crop_centres(ir, vis, images[2] if fused else None, count, crop=crop):
        y0, x0 = min(max(cy - crop // 2, 0), h - crop), min(max(cx - crop // 2, 0), w - crop)
        tiles = [cv2.resize(img[y0 : y0 + crop, x0 : x0 + crop], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for img in images]
        rows.append(label_tiles(tiles, [f"{n} @({x0},{y0})" if i == 0 else n for i, n in enumerate(names)]))
    if not rows:
        return label_tiles(images, names)
    return np.vstack([np.vstack([r, np.full((4, r.shape[1], 3), 64, np.uint8)]) for r in rows])


def _heat(att: np.ndarray) -> np.ndarray:
    return cv2.applyColorMap(float_to_uint8(np.clip(att, 0.0, 1.0)), cv2.COLORMAP_INFERNO)


def attention_heatmap_panel(tiles: Sequence[tuple[str, np.ndarray, np.ndarray]], *, max_side: int = 400) -> np.ndarray:
    """Top row: each ``(label, visible input, attention)``'s input; bottom row: its attention (inferno,
    fixed scale 0..1, black = 0). Tiles shrunk so the longest side is at most ``max_side``."""
    inputs = [resize_max_side(_bgr(vis), max_side) for _, vis, _ in tiles]
    heats = [resize_max_side(_heat(att), max_side) for _, _, att in tiles]
    top = label_tiles(inputs, [f"{label}: input" for label, _, _ in tiles])
    bottom = label_tiles(heats, [f"attention, scale 0-1, mean {float(att.mean()):.3g}" for _, _, att in tiles])
    return np.vstack([top, np.full((4, top.shape[1], 3), 64, np.uint8), bottom])


def fusion_plot(path: Path, title: str, table: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> None:
    """Bar plot, one panel per metric, one bar per method (matplotlib, imported here only)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(table)
    fig = Figure(figsize=(14, 8), layout="constrained")
    FigureCanvasAgg(fig)
    cols = 4
    axes = fig.subplots(math.ceil(len(metrics) / cols), cols).ravel()
    colours = [f"C{i}" for i in range(len(names))]
    for ax, metric in zip(axes, metrics):
        vals = [table[n][metric] if math.isfinite(table[n][metric]) else 0.0 for n in names]
        ax.bar(range(len(names)), vals, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_title(f"{metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)", fontsize=9)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.savefig(path, dpi=80)
