"""Fusion quality per dataset and method: the twelve metrics, best-counts, grain and halo artefacts.

For every pair and method: :func:`dstfuse_stream.metrics.compute_all` plus
:func:`~dstfuse_stream.metrics.flat_hf_energy_ratio` (grain) and
:func:`~dstfuse_stream.metrics.halo_overshoot` (halos), on 8-bit luma. Per dataset it writes
``<dataset>.md`` (all metrics; then the best-of-8 table with the artefact columns), a bar plot,
and optional 2x halo crops; ``metrics.csv`` has every pair.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dstfuse_stream.imageio import list_pairs
from dstfuse_stream.metrics import METRIC_NAMES, compute_all, flat_hf_energy_ratio, halo_overshoot

from .data import dataset_names, load_pair, select_evenly
from .figures import fusion_plot, halo_crop_panel
from .methods import FolderMethod, Method, MethodSpec, PairKey, close_all, fuse_aligned
from .tables import BEST_DIGITS, BEST_OF, best_count_table, best_counts, fusion_table, geometric_mean, mean_finite, write_csv

__all__ = ["run_fusion_eval", "summarize_fusion"]

logger = logging.getLogger(__name__)

_EXTRA_FIELDS = ("flat_hf_ratio", "halo", "attention_mean")


def _score(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> dict[str, float]:
    values = compute_all(ir, vis, fused)
    values["flat_hf_ratio"] = flat_hf_energy_ratio(ir, vis, fused)
    values["halo"] = halo_overshoot(ir, vis, fused)
    return values


def summarize_fusion(
    per_method: dict[str, list[dict[str, float]]], n_pairs: int, best_of: Sequence[str] = BEST_OF
) -> dict:
    """Means over pairs (flat HF ratio: geometric mean), best-counts among methods with every pair."""
    table = {}
    for name, vals in per_method.items():
        row: dict[str, float] = {"n": len(vals)}
        row.update({m: mean_finite(v[m] for v in vals) for m in METRIC_NAMES})
        row["flat_hf_ratio"] = geometric_mean(v["flat_hf_ratio"] for v in vals)
        row["halo"] = mean_finite(v["halo"] for v in vals)
        row["attention_mean"] = mean_finite(v["attention_mean"] for v in vals)
        table[name] = row
    eligible = [name for name, row in table.items() if row["n"] == n_pairs]
    best = best_counts(table, best_of, eligible=eligible)
    return {"pairs": n_pairs, "table": table, "eligible": eligible, "best": best, "best_of": list(best_of)}


def run_fusion_eval(
    pair_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    spec: MethodSpec = MethodSpec(),
    limit: int | None = None,
    max_size: int | None = None,
    best_of: Sequence[str] = BEST_OF,
    save_fused: bool = False,
    plot: bool = True,
    halo_crops: int = 0,
) -> dict[str, dict]:
    """Fuse every dataset with every method; write ``metrics.csv``, ``<dataset>.md``/``.png``, ``summary.md``.

    Returns ``{dataset: summary}``, ``summary`` as :func:`summarize_fusion` plus ``"notes"`` (lines
    under the table: resized folder images, missing ones). ``halo_crops=N`` writes
    ``halo_<dataset>_<stem>.png`` (2x crops, :func:`~.figures.halo_crop_panel`) for the N pairs where the
    first method (the network when compared) has the highest halo score; it keeps the fused images in
    memory until the dataset is done.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in pair_dirs]
    method_list = spec.create()
    rows: list[dict] = []
    results: dict[str, dict] = {}
    try:
        for dataset, root in zip(dataset_names(dirs), dirs):
            pairs = select_evenly(list_pairs(root), limit)
            kept: list[tuple[float, str, np.ndarray, np.ndarray, dict]] = []  # for the halo crops
            logger.info("%s: %d pairs x %d methods", dataset, len(pairs), len(method_list))
            per_method: dict[str, list[dict[str, float]]] = {m.name: [] for m in method_list}
            notes: dict[str, list[str]] = defaultdict(list)
            for ir_path, vis_path in pairs:
                ir, vis = load_pair(ir_path, vis_path, max_size)
                fused_images = {}
                for method in method_list:
                    t0 = time.perf_counter()
                    got = fuse_aligned(method, ir, vis, PairKey(dataset, ir_path.name))
                    fuse_ms = (time.perf_counter() - t0) * 1e3
                    if got is None:
                        continue
                    if got.note:
                        notes[method.name].append(f"{ir_path.stem} ({got.note})")
                    values = _score(*got.sources, got.fused)
                    att = got.result.attention
                    values["attention_mean"] = float(np.mean(att)) if att is not None else float("nan")
                    per_method[method.name].append(values)
                    fused_images[method.name] = got.result.fused
                    h, w = got.fused.shape
                    rows.append({"dataset": dataset, "pair": ir_path.name, "method": method.name, "height": h, "width": w,
                                 "fuse_ms": round(fuse_ms, 2), "note": got.note or "", **values})
                    if save_fused:
                        target = out / "fused" / dataset / method.name
                        target.mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(target / f"{ir_path.stem}.png"), got.result.fused)
                if halo_crops and fused_images:
                    first = next(iter(fused_images))
                    halo = per_method[first][-1]["halo"] if per_method[first] else float("nan")
                    kept.append((-halo if halo == halo else 0.0, ir_path.stem, ir, vis, fused_images))
            for _, stem, ir, vis, fused_images in sorted(kept, key=lambda k: (k[0], k[1]))[:halo_crops]:
                cv2.imwrite(str(out / f"halo_{dataset}_{stem}.png"), halo_crop_panel(ir, vis, fused_images))
            summary = summarize_fusion(per_method, len(pairs), best_of)
            summary["notes"] = _notes(method_list, notes, summary, dataset)
            results[dataset] = summary
            shape_note = f"longest side <= {max_size} px" if max_size else "full resolution"
            title = f"{dataset}: mean over {len(pairs)} pairs ({shape_note}, luma)"
            (out / f"{dataset}.md").write_text(_report(title, summary))
            if plot:
                fusion_plot(out / f"{dataset}.png", title, summary["table"], METRIC_NAMES)
    finally:
        close_all(method_list)
    fields = ("dataset", "pair", "method", "height", "width", "fuse_ms", *METRIC_NAMES, *_EXTRA_FIELDS, "note")
    write_csv(out / "metrics.csv", rows, fields)
    (out / "summary.md").write_text("\n".join((out / f"{d}.md").read_text() for d in results))
    return results


def _notes(methods: list[Method], resized: dict[str, list[str]], summary: dict, dataset: str) -> list[str]:
    lines = []
    for m in methods:
        if resized.get(m.name):
            lines.append(
                f"{m.name}: scored at its own size where it differs from the sources (the larger of the two "
                f"shrunk with INTER_AREA): {', '.join(resized[m.name])}."
            )
        if isinstance(m, FolderMethod):
            missing = [k.name for k in m.missing if k.dataset == dataset]
            if missing:
                shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                lines.append(f"{m.name}: no fused image for {len(missing)} pair(s) ({shown}); not counted in best-of.")
    return lines


def _report(title: str, summary: dict) -> str:
    table, eligible, best_of = summary["table"], summary["eligible"], summary["best_of"]
    text = [f"### {title}", "", fusion_table(table, METRIC_NAMES, eligible=eligible)]
    text += [
        f"#### Best of {len(best_of)} ({', '.join(best_of)})",
        "",
        best_count_table(table, best_of, eligible=eligible),
        f"Best in bold; `best of {len(best_of)}` counts the metrics on which a method is best among the methods "
        f"that scored every pair (means compared after rounding to {BEST_DIGITS} decimals: a tie counts for "
        "every tied method). `flat HF ratio`: high-frequency energy in regions flat in both sources relative "
        "to the visible input's (geometric mean over pairs; 1 = as much grain as the visible). `halo`: mean "
        "overshoot beyond both sources' local range near the strongest edges, 8-bit levels (0 for any "
        "per-pixel blend of the sources). Definitions: `dstfuse_stream.metrics`.",
        "",
    ]
    text += [f"- {line}" for line in summary["notes"]]
    return "\n".join(text) + "\n"
