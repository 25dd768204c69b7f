"""Where the mapping attention looks: sharp vs blurred frames, blurred vs sharp regions, heat-maps.

The attention ``A`` of ``model.intermediates(ir, vis)`` is the weight of the CST (deblurred) output in
the fused image. DSTFuse's claim is that it is high where the visible image is blurred. Per pair:

* frame means of ``A`` for the sharp visible, the visible blurred by ``kernel`` (synthetic) and the
  real ``vi_blur`` frame where the folder has one;
* a half-blurred test: the visible blurred by ``kernel`` on its left half only, then on its right
  half only (same IR, same content both times). ``blurred_region`` is the mean of ``A`` over the
  blurred halves of both runs, ``sharp_region`` over their sharp halves, each excluding a strip of
  ``kernel.length_px`` px on each side of the seam. Swapping the halves cancels the content: an
  attention that ignores blur gives ``ratio`` = ``blurred_region / sharp_region`` = 1.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dstfuse_stream.imageio import list_pairs

from .blur_eval import REAL_GROUP, MotionKernel, blur_u8
from .data import blurred_frame_path, dataset_names, load_luma_u8, load_pair, select_evenly, select_stride
from .figures import attention_heatmap_panel
from .methods import DSTFuseMethod, MethodSpec
from .tables import fmt, markdown_table, mean_finite, write_csv

__all__ = ["DEFAULT_ATTENTION_KERNEL", "half_blur_attention", "run_attention_eval"]

logger = logging.getLogger(__name__)

DEFAULT_ATTENTION_KERNEL = MotionKernel(15, 0)
_FIELDS = ("sharp", "synthetic", REAL_GROUP, "blurred_region", "sharp_region")


def half_blur_attention(method: DSTFuseMethod, ir: np.ndarray, sharp: np.ndarray, kernel: MotionKernel):
    """``(blurred_region mean, sharp_region mean, attention of the left-blurred run, that input)``."""
    h, w = sharp.shape
    blurred = blur_u8(sharp, kernel)
    half, margin = w // 2, kernel.length_px
    cols = np.arange(w)
    left, right = cols < half - margin, cols >= half + margin
    vis_left, vis_right = sharp.copy(), sharp.copy()
    vis_left[:, :half], vis_right[:, half:] = blurred[:, :half], blurred[:, half:]
    att_l = method.fuse(ir, vis_left).attention
    att_r = method.fuse(ir, vis_right).attention
    blurred_sum = att_l[:, left].sum(dtype=np.float64) + att_r[:, right].sum(dtype=np.float64)
    sharp_sum = att_l[:, right].sum(dtype=np.float64) + att_r[:, left].sum(dtype=np.float64)
    n = h * (int(left.sum()) + int(right.sum()))
    return blurred_sum / n, sharp_sum / n, att_l, vis_left


def _region_summary(row: dict[str, float]) -> dict[str, float]:
    b, s = row["blurred_region"], row["sharp_region"]
    ratio = b / s if s > 0 else (float("inf") if b > 0 else float("nan"))
    return {**row, "region_ratio": ratio, "region_difference": b - s}


def run_attention_eval(
    pair_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    spec: MethodSpec = MethodSpec(),
    kernel: MotionKernel = DEFAULT_ATTENTION_KERNEL,
    limit: int | None = None,
    stride: int = 1,
    max_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Attention statistics per dataset (``attention.csv`` / ``attention.md``) and one heat-map PNG each.

    Only the network of ``spec`` runs (its ``names`` and ``fused_dirs`` are not used).
    Pairs: every ``stride``-th, then ``limit`` evenly spaced. Returns ``{dataset: {"n", "sharp",
    "synthetic", "real vi_blur", "blurred_region", "sharp_region", "region_ratio",
    "region_difference"}}`` (means over pairs; ``real vi_blur`` is ``nan`` without ``vi_blur/``).
    The heat-map ``attention_<dataset>_<stem>.png`` (middle pair) shows each input beside its
    attention on the fixed scale 0..1 (inferno): sharp, blurred (real if present, else synthetic),
    left half blurred.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = spec.network()
    try:
        summary, rows = _attention_stats(method, [Path(d) for d in pair_dirs], out, kernel, limit, stride, max_size)
    finally:
        method.close()
    write_csv(out / "attention.csv", rows, ("dataset", "pair", *_FIELDS, "region_ratio", "region_difference"))
    (out / "attention.md").write_text(attention_report(summary, kernel))
    return summary


def _attention_stats(method, dirs, out, kernel, limit, stride, max_size):
    rows: list[dict] = []
    summary: dict[str, dict[str, float]] = {}
    for dataset, root in zip(dataset_names(dirs), dirs):
        pairs = select_evenly(select_stride(list_pairs(root), stride=stride), limit)
        per: dict[str, list[float]] = defaultdict(list)
        for i, (ir_path, vis_path) in enumerate(pairs):
            ir, sharp = load_pair(ir_path, vis_path, max_size)
            att_sharp = method.fuse(ir, sharp).attention
            synthetic = blur_u8(sharp, kernel)
            att_syn = method.fuse(ir, synthetic).attention
            row = {"sharp": float(att_sharp.mean()), "synthetic": float(att_syn.mean()), REAL_GROUP: float("nan")}
            real_path = blurred_frame_path(root, vis_path)
            blurred_tile = ("synthetic " + kernel.label, synthetic, att_syn)
            if real_path is not None:
                real = load_luma_u8(real_path, size_wh=(sharp.shape[1], sharp.shape[0]))
                att_real = method.fuse(ir, real).attention
                row[REAL_GROUP] = float(att_real.mean())
                blurred_tile = (REAL_GROUP, real, att_real)
            row["blurred_region"], row["sharp_region"], att_half, vis_half = half_blur_attention(method, ir, sharp, kernel)
            for k in _FIELDS:
                per[k].append(row[k])
            rows.append({"dataset": dataset, "pair": ir_path.name, **_region_summary(row)})
            if i == len(pairs) // 2:
                tiles = [("sharp", sharp, att_sharp), blurred_tile, ("left half " + kernel.label, vis_half, att_half)]
                cv2.imwrite(str(out / f"attention_{dataset}_{ir_path.stem}.png"), attention_heatmap_panel(tiles))
        means = {k: mean_finite(per[k]) for k in _FIELDS}
        summary[dataset] = {"n": len(pairs), **_region_summary(means)}
    return summary, rows


def attention_report(summary: dict[str, dict[str, float]], kernel: MotionKernel) -> str:
    """Markdown table, one row per dataset."""
    header = ["dataset", "n", "sharp frames", f"synthetic {kernel.label}", REAL_GROUP, "blurred regions",
              "sharp regions", "ratio", "difference"]
    rows = [[d, r["n"], *(fmt(r[k], 4) for k in _FIELDS), fmt(r["region_ratio"], 2), fmt(r["region_difference"], 4)]
            for d, r in summary.items()]
    return (f"### Mapping attention (mean of A, the weight of the CST output; half-blurred test with {kernel.label})\n\n"
            + markdown_table(header, rows)
            + "\nRegions: the visible blurred on one half, then on the other (same IR and content); "
            f"the {kernel.length_px} px on each side of the seam are left out.\n")
