"""``dstfuse-eval``: fusion metrics, classic baselines, CST deblurring and temporal stability.

Three modes, all on the luma (Y, BT.601) of the images, read with
:func:`dstfuse_stream.imageio.read_gray` and optionally shrunk so the longest side is at most
``--max-size`` (``INTER_AREA``); sources and fused images are evaluated as 8-bit images
(``float_to_uint8``), as the usual MATLAB fusion toolboxes do::

    # fusion metrics: CSV per pair, Markdown table + bar plot per dataset
    dstfuse-eval --pairs ../shared/data/tno --methods dstfuse average gff --limit 5 --max-size 320 --out outputs/eval
    # fused images written by another tool (matched by file name or stem)
    dstfuse-eval --pairs ../shared/data/tno --methods average --fused-dir other=results/tno --out outputs/eval
    # CST deblurring: synthetic motion blur (+ the real vi_blur frames when the folder has them)
    dstfuse-eval --deblur --pairs ../shared/data/sequences/m3svd_frames_0111_1753 --out outputs/eval_deblur
    # temporal stability over consecutive frames
    dstfuse-eval --temporal --pairs ../shared/data/sequences/m3svd_frames_0111_1753 --out outputs/eval_temporal

``--limit N`` takes N evenly spaced pairs in name order (fusion, deblur) or the first N
consecutive frames (temporal). Every run writes ``eval_config.json`` (its arguments) next to its
results.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.baselines import BASELINE_NAMES, create_baseline
from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.errors import CheckpointError, ConfigError, DSTFuseError, SourceError, StreamMismatchError
from dstfuse_stream.degrade import motion_blur_kernel
from dstfuse_stream.imageio import IMAGE_SUFFIXES, list_pairs, read_gray, resize_max_side
from dstfuse_stream.metrics import METRIC_NAMES, METRICS, TemporalStability, compute_all, psnr, ssim

__all__ = [
    "METHOD_NAMES",
    "MotionKernel",
    "motion_kernels",
    "motion_blur",
    "select_evenly",
    "run_fusion_eval",
    "run_deblur_eval",
    "run_temporal_eval",
    "build_parser",
    "main",
]

logger = logging.getLogger(__name__)

METHOD_NAMES: tuple[str, ...] = ("dstfuse", *BASELINE_NAMES)
DEFAULT_KERNEL_LENGTHS = (9, 15, 21)
DEFAULT_KERNEL_ANGLES = (0, 45, 90)
_DEBLUR_FIELDS = (
    "psnr_blurred",
    "ssim_blurred",
    "psnr_stage1",
    "ssim_stage1",
    "psnr_cst",
    "ssim_cst",
    "mean_sharp",
    "mean_blurred",
    "mean_cst",
    "corr_cst_sharp",
    "corr_cst_ir",
)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def select_evenly(items: Sequence, limit: int | None) -> list:
    """``limit`` items evenly spaced over ``items`` (first and last included); all if ``None``."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ConfigError(f"limit: expected >= 1, got {limit}")
    if limit == 1:
        return [items[0]]
    idx = np.unique(np.rint(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[i] for i in idx]


def _load_luma_u8(path: Path, max_size: int | None, *, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    img = read_gray(path)
    if size_wh is not None and (img.shape[1], img.shape[0]) != size_wh:
        img = cv2.resize(img, size_wh, interpolation=cv2.INTER_AREA)
    else:
        img = resize_max_side(img, max_size)
    return float_to_uint8(img)


def _load_pair(ir_path: Path, vis_path: Path, max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    ir = read_gray(ir_path)
    vis = read_gray(vis_path)
    if ir.shape != vis.shape:
        raise StreamMismatchError(
            f"pair {ir_path.name!r}: ir {ir.shape[::-1]} and vis {vis.shape[::-1]} (w, h) differ; "
            "expected registered images of one size"
        )
    return float_to_uint8(resize_max_side(ir, max_size)), float_to_uint8(resize_max_side(vis, max_size))


def _find_image(folder: Path, name: str) -> Path | None:
    """``folder/name`` or a file in ``folder`` with the same stem and an image suffix."""
    exact = folder / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _dataset_names(dirs: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for d in dirs:
        base = d.resolve().name or "data"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _parse_fused_dirs(specs: Iterable[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--fused-dir {spec!r}: expected NAME=DIR")
        if name in out or name in METHOD_NAMES:
            raise ConfigError(f"--fused-dir {spec!r}: method name {name!r} is already used")
        if not Path(folder).is_dir():
            raise SourceError(f"--fused-dir {spec!r}: {folder!r} is not a directory")
        out[name] = Path(folder)
    return out


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _fmt(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _write_csv(path: Path, rows: list[dict], fields: Sequence[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


# --------------------------------------------------------------------------------------------
# fusion methods
# --------------------------------------------------------------------------------------------
@dataclass
class _Method:
    """A named way to get a fused uint8 luma for a pair: a backend, or a folder of results."""

    name: str
    fuse: Callable[[np.ndarray, np.ndarray, str], np.ndarray | None]


def _backend_method(name: str, backend: FusionBackend) -> _Method:
    def fuse(ir: np.ndarray, vis: np.ndarray, _pair_name: str) -> np.ndarray:
        return float_to_uint8(backend.fuse(ir, vis))

    return _Method(name, fuse)


def _folder_method(name: str, folder: Path, dataset_dir: Path, *, multi: bool) -> _Method:
    """Fused images of another tool: ``folder/<dataset>/`` when several datasets are evaluated."""
    sub = folder / dataset_dir.resolve().name if multi and (folder / dataset_dir.resolve().name).is_dir() else folder

    def fuse(ir: np.ndarray, _vis: np.ndarray, pair_name: str) -> np.ndarray | None:
        path = _find_image(sub, pair_name)
        if path is None:
            logger.warning("%s: no fused image for %s in %s; pair skipped for this method", name, pair_name, sub)
            return None
        return _load_luma_u8(path, None, size_wh=(ir.shape[1], ir.shape[0]))

    return _Method(name, fuse)


def _make_backends(methods: Sequence[str], *, weights: str | None, device: str) -> dict[str, FusionBackend]:
    backends: dict[str, FusionBackend] = {}
    for name in methods:
        if name == "dstfuse":
            backends[name] = _dstfuse_backend(weights=weights, device=device)
        else:
            backends[name] = create_baseline(name)
    return backends


def _check_weights(weights: str | None) -> None:
    from dstfuse_stream.checkpoint import default_weights_path

    if weights is None and not default_weights_path().is_file():
        raise CheckpointError(
            f"shipped weights {str(default_weights_path())!r} not found; pass --weights PATH "
            "or leave 'dstfuse' out of --methods"
        )


def _dstfuse_backend(*, weights: str | None, device: str) -> FusionBackend:
    from dstfuse_stream.backends import create_backend

    _check_weights(weights)
    backend = create_backend("torch", weights=weights, device=device)
    logger.info("dstfuse: %s", backend.describe())
    return backend


# --------------------------------------------------------------------------------------------
# fusion metrics
# --------------------------------------------------------------------------------------------
def run_fusion_eval(
    pair_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] = METHOD_NAMES,
    fused_dirs: dict[str, Path] | None = None,
    weights: str | None = None,
    device: str = "cpu",
    limit: int | None = None,
    max_size: int | None = None,
    save_fused: bool = False,
    plot: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Fuse every dataset with every method and write ``metrics.csv``, ``<dataset>.md``/``.png``.

    Returns ``{dataset: {method: {"n": pairs, metric: mean over pairs}}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in pair_dirs]
    fused_dirs = fused_dirs or {}
    backends = _make_backends(methods, weights=weights, device=device)
    rows: list[dict] = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for dataset, root in zip(_dataset_names(dirs), dirs):
            pairs = select_evenly(list_pairs(root), limit)
            method_list = [_backend_method(n, b) for n, b in backends.items()]
            method_list += [_folder_method(n, f, root, multi=len(dirs) > 1) for n, f in fused_dirs.items()]
            logger.info("%s: %d pairs x %d methods", dataset, len(pairs), len(method_list))
            per_method: dict[str, list[dict[str, float]]] = {m.name: [] for m in method_list}
            for ir_path, vis_path in pairs:
                ir, vis = _load_pair(ir_path, vis_path, max_size)
                for method in method_list:
                    t0 = time.perf_counter()
                    fused = method.fuse(ir, vis, ir_path.name)
                    fuse_ms = (time.perf_counter() - t0) * 1e3
                    if fused is None:
                        continue
                    if save_fused:
                        target = out / "fused" / dataset / method.name
                        target.mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(target / f"{ir_path.stem}.png"), fused)
                    values = compute_all(ir, vis, fused)
                    per_method[method.name].append(values)
                    rows.append(
                        {
                            "dataset": dataset,
                            "pair": ir_path.name,
                            "method": method.name,
                            "height": ir.shape[0],
                            "width": ir.shape[1],
                            "fuse_ms": round(fuse_ms, 2) if method.name in backends else "",
                            **values,
                        }
                    )
            summary[dataset] = {
                name: {"n": len(vals), **{m: _mean(v[m] for v in vals) for m in METRIC_NAMES}}
                for name, vals in per_method.items()
            }
            shape_note = f"longest side <= {max_size} px" if max_size else "full resolution"
            title = f"{dataset}: mean over {len(pairs)} pairs ({shape_note}, luma)"
            (out / f"{dataset}.md").write_text(_fusion_table(title, summary[dataset]))
            if plot:
                _fusion_plot(out / f"{dataset}.png", title, summary[dataset])
    finally:
        for b in backends.values():
            b.close()
    _write_csv(out / "metrics.csv", rows, ("dataset", "pair", "method", "height", "width", "fuse_ms", *METRIC_NAMES))
    (out / "summary.md").write_text("\n".join((out / f"{d}.md").read_text() for d in summary))
    return summary


def _fusion_table(title: str, table: dict[str, dict[str, float]]) -> str:
    """Markdown table, best value per metric in bold (lowest for MSE)."""
    best: dict[str, float] = {}
    for m in METRIC_NAMES:
        vals = [row[m] for row in table.values() if not math.isnan(row[m])]
        if vals:
            best[m] = max(vals) if METRICS[m].higher_is_better else min(vals)
    header = "| method | n | " + " | ".join(f"{m} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in METRIC_NAMES)
    lines = [f"### {title}", "", header + " |", "|---|---|" + "---|" * len(METRIC_NAMES)]
    for name, row in table.items():
        cells = []
        for m in METRIC_NAMES:
            text = _fmt(row[m], 4 if m == "MSE" else 3)
            cells.append(f"**{text}**" if m in best and row[m] == best[m] and len(table) > 1 else text)
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fusion_plot(path: Path, title: str, table: dict[str, dict[str, float]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(table)
    fig = Figure(figsize=(14, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 4).ravel()
    colours = [f"C{i}" for i in range(len(names))]
    for ax, metric in zip(axes, METRIC_NAMES):
        vals = [table[n][metric] for n in names]
        vals = [v if math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(names)), vals, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_title(f"{metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)", fontsize=9)
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


# --------------------------------------------------------------------------------------------
# deblurring (CST module)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MotionKernel:
    """A linear motion-blur kernel: ``length_px`` pixels at ``angle_deg`` (0 = horizontal)."""

    length_px: int
    angle_deg: float

    @property
    def label(self) -> str:
        return f"L{self.length_px}/{self.angle_deg:g}deg"

    def array(self) -> np.ndarray:
        """``(L, L)`` float32 kernel summing to 1 (:func:`dstfuse_stream.degrade.motion_blur_kernel`)."""
        return motion_blur_kernel(int(self.length_px), float(self.angle_deg))


def motion_kernels(
    lengths: Sequence[int] = DEFAULT_KERNEL_LENGTHS, angles: Sequence[float] = DEFAULT_KERNEL_ANGLES
) -> list[MotionKernel]:
    """The fixed kernel set: every length x every angle."""
    return [MotionKernel(int(n), float(a)) for n in lengths for a in angles]


def motion_blur(image: np.ndarray, kernel: MotionKernel) -> np.ndarray:
    """Blur a float ``(H, W)`` image in [0, 1] (reflected border), quantised to 8-bit levels / 255."""
    blurred = cv2.filter2D(image.astype(np.float32), -1, kernel.array(), borderType=cv2.BORDER_REFLECT)
    return float_to_uint8(blurred).astype(np.float32) / np.float32(255.0)


def _run_cst(model, ir: np.ndarray, vis_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``model.cst`` on padded input, cropped back: (stage1, stage2) float32 ``(B, H, W)``."""
    import torch

    from dstfuse_stream.model import pad_to_multiple

    device = next(model.parameters()).device
    h, w = ir.shape
    with torch.inference_mode():
        vis_t = torch.from_numpy(np.ascontiguousarray(vis_batch[:, None], dtype=np.float32)).to(device)
        ir_t = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None].to(device)
        ir_t = ir_t.expand(vis_t.shape[0], -1, -1, -1)
        out = model.cst(pad_to_multiple(ir_t), pad_to_multiple(vis_t))
        s1 = out.stage1[:, 0, :h, :w].float().cpu().numpy()
        s2 = out.stage2[:, 0, :h, :w].float().cpu().numpy()
    return s1, s2


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    return float(np.sum(xc * yc) / den) if den > 0 else float("nan")


def _deblur_row(
    ir: np.ndarray, sharp: np.ndarray, blurred: np.ndarray, stage1: np.ndarray, stage2: np.ndarray
) -> dict[str, float]:
    return {
        "psnr_blurred": psnr(blurred, sharp),
        "ssim_blurred": ssim(blurred, sharp),
        "psnr_stage1": psnr(stage1, sharp),
        "ssim_stage1": ssim(stage1, sharp),
        "psnr_cst": psnr(stage2, sharp),
        "ssim_cst": ssim(stage2, sharp),
        "mean_sharp": float(sharp.mean()),
        "mean_blurred": float(blurred.mean()),
        "mean_cst": float(stage2.mean()),
        "corr_cst_sharp": _pearson(stage2, sharp),
        "corr_cst_ir": _pearson(stage2, ir),
    }


def run_deblur_eval(
    pair_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    model=None,
    weights: str | None = None,
    device: str = "cpu",
    limit: int | None = None,
    max_size: int | None = None,
    kernels: Sequence[MotionKernel] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR/SSIM vs the sharp visible image of the blurred input and of the CST output.

    Synthetic: each selected pair's visible image is blurred with every kernel. Real: when a folder
    has ``vi_blur/`` next to ``ir/`` and ``vi/`` (M3SVD frames), ``vi_blur`` is the degraded input.
    Also reported: mean intensities (the real ``vi_blur`` differs in tone, not only sharpness) and the
    Pearson correlation of the CST output with the sharp visible and with the IR image.
    Writes ``deblur.csv`` and ``deblur.md``; returns ``{dataset: {group: {field: mean}}}`` where
    group is ``"L9"``, ``"L15"``... (means over angles and pairs), ``"synthetic"`` or ``"real vi_blur"``.
    """
    if model is None:
        from dstfuse_stream.checkpoint import load_model

        _check_weights(weights)
        from dstfuse_stream.backends.torch_backend import resolve_device

        model = load_model(weights, device=resolve_device(device))
    model = model.eval()
    kernels = list(kernels) if kernels is not None else motion_kernels()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in pair_dirs]
    rows: list[dict] = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, root in zip(_dataset_names(dirs), dirs):
        pairs = select_evenly(list_pairs(root), limit)
        blur_dir = root / "vi_blur"
        groups: dict[str, list[dict[str, float]]] = {}
        for ir_path, vis_path in pairs:
            ir_u8, vis_u8 = _load_pair(ir_path, vis_path, max_size)
            ir, sharp = ir_u8.astype(np.float32) / 255.0, vis_u8.astype(np.float32) / 255.0
            if kernels:
                blurred = np.stack([motion_blur(sharp, k) for k in kernels])
                s1, s2 = _run_cst(model, ir, blurred)
                for i, k in enumerate(kernels):
                    row = _deblur_row(ir, sharp, blurred[i], s1[i], s2[i])
                    rows.append({"dataset": dataset, "pair": ir_path.name, "input": k.label, **row})
                    groups.setdefault(f"L{k.length_px}", []).append(row)
                    groups.setdefault("synthetic", []).append(row)
            real = _find_image(blur_dir, vis_path.name) if blur_dir.is_dir() else None
            if real is not None:
                blurred_real = _load_luma_u8(real, None, size_wh=(sharp.shape[1], sharp.shape[0])).astype(np.float32) / 255.0
                s1, s2 = _run_cst(model, ir, blurred_real[None])
                row = _deblur_row(ir, sharp, blurred_real, s1[0], s2[0])
                rows.append({"dataset": dataset, "pair": ir_path.name, "input": "real vi_blur", **row})
                groups.setdefault("real vi_blur", []).append(row)
        order = [f"L{n}" for n in sorted({k.length_px for k in kernels})] + ["synthetic", "real vi_blur"]
        summary[dataset] = {
            g: {"n": len(groups[g]), **{f: _mean(r[f] for r in groups[g]) for f in _DEBLUR_FIELDS}}
            for g in order
            if g in groups
        }
    _write_csv(out / "deblur.csv", rows, ("dataset", "pair", "input", *_DEBLUR_FIELDS))
    (out / "deblur.md").write_text(_deblur_table(summary, max_size))
    return summary


def _deblur_table(summary: dict[str, dict[str, dict[str, float]]], max_size: int | None) -> str:
    lines = []
    shape_note = f"longest side <= {max_size} px" if max_size else "full resolution"
    for dataset, groups in summary.items():
        lines += [
            f"### Deblurring, {dataset} ({shape_note}, luma; PSNR dB with data range 1, SSIM 11x11 gaussian)",
            "",
            "| input | n | PSNR blurred | PSNR CST stage1 | PSNR CST stage2 | SSIM blurred | SSIM CST stage1 "
            "| SSIM CST stage2 | mean sharp | mean blurred | mean CST | corr(CST, sharp) | corr(CST, IR) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for g, r in groups.items():
            lines.append(
                f"| {g} | {r['n']} | {_fmt(r['psnr_blurred'], 2)} | {_fmt(r['psnr_stage1'], 2)} | "
                f"{_fmt(r['psnr_cst'], 2)} | {_fmt(r['ssim_blurred'])} | {_fmt(r['ssim_stage1'])} | "
                f"{_fmt(r['ssim_cst'])} | {_fmt(r['mean_sharp'])} | {_fmt(r['mean_blurred'])} | {_fmt(r['mean_cst'])} | "
                f"{_fmt(r['corr_cst_sharp'])} | {_fmt(r['corr_cst_ir'])} |"
            )
        lines.append("")
        for g, r in groups.items():
            if g.startswith("L"):
                continue
            d_psnr, d_ssim = r["psnr_cst"] - r["psnr_blurred"], r["ssim_cst"] - r["ssim_blurred"]
            verdict = "better" if d_psnr > 0 and d_ssim > 0 else "worse" if d_psnr < 0 and d_ssim < 0 else "mixed"
            lines.append(
                f"- {g}: CST stage2 vs blurred input: PSNR {d_psnr:+.2f} dB, SSIM {d_ssim:+.3f} ({verdict})."
            )
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# temporal stability
# --------------------------------------------------------------------------------------------
def run_temporal_eval(
    seq_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] = METHOD_NAMES,
    fused_dirs: dict[str, Path] | None = None,
    weights: str | None = None,
    device: str = "cpu",
    limit: int | None = None,
    max_size: int | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """:class:`TemporalStability` per method over consecutive frames (name order), on 8-bit luma.

    Writes ``temporal.csv``/``temporal.md``; returns ``{sequence: {method: result()}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in seq_dirs]
    backends = _make_backends(methods, weights=weights, device=device)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for seq, root in zip(_dataset_names(dirs), dirs):
            frames = list_pairs(root)
            frames = frames if limit is None else frames[:limit]
            method_list = [_backend_method(n, b) for n, b in backends.items()]
            method_list += [_folder_method(n, f, root, multi=len(dirs) > 1) for n, f in (fused_dirs or {}).items()]
            meters = {m.name: TemporalStability() for m in method_list}
            for ir_path, vis_path in frames:
                ir, vis = _load_pair(ir_path, vis_path, max_size)
                for method in method_list:
                    fused = method.fuse(ir, vis, ir_path.name)
                    if fused is None:
                        raise SourceError(f"{method.name}: missing fused frame for {ir_path.name}; a sequence needs all frames")
                    meters[method.name].update(ir, vis, fused)
            summary[seq] = {name: {"frames": len(frames), **m.result()} for name, m in meters.items()}
    finally:
        for b in backends.values():
            b.close()
    rows = [{"sequence": s, "method": m, **r} for s, res in summary.items() for m, r in res.items()]
    _write_csv(out / "temporal.csv", rows, ("sequence", "method", "frames", "steps", "fused_mad", "source_mad", "ratio"))
    lines = []
    for seq, res in summary.items():
        lines += [
            f"### Temporal stability, {seq} (8-bit luma; MAD = mean |frame t - frame t-1|, ratio = MAD fused / MAD sources)",
            "",
            "| method | frames | MAD fused | MAD sources | ratio |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {r['frames']} | {_fmt(r['fused_mad'])} | {_fmt(r['source_mad'])} | {_fmt(r['ratio'])} |"
            for m, r in res.items()
        ]
        lines.append("")
    (out / "temporal.md").write_text("\n".join(lines))
    return summary


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dstfuse-eval",
        description="Evaluate IR/visible fusion: metrics per dataset and method, CST deblurring, temporal stability.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--deblur", action="store_true", help="CST deblurring report (synthetic motion blur + real vi_blur)")
    mode.add_argument("--temporal", action="store_true", help="temporal stability over consecutive frames")
    p.add_argument("--pairs", nargs="+", required=True, metavar="DIR", help="pair folders (ir/ + vi/, or LLVIP layout)")
    p.add_argument("--methods", nargs="*", default=list(METHOD_NAMES), choices=METHOD_NAMES, help="fusion methods")
    p.add_argument(
        "--fused-dir", nargs="+", action="extend", default=[], metavar="NAME=DIR",
        help="fused images of another tool (same file name/stem as the IR image; DIR/<dataset>/ with several --pairs)",
    )
    p.add_argument("--weights", default=None, metavar="PATH", help="DSTFuse checkpoint (default: shipped weights)")
    p.add_argument("--device", default="cpu", help="torch device for DSTFuse (cpu, cuda, auto)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="N evenly spaced pairs (temporal: first N frames)")
    p.add_argument("--max-size", type=int, default=None, metavar="N", help="shrink so the longest side is <= N px")
    p.add_argument("--kernel-lengths", type=int, nargs="+", default=list(DEFAULT_KERNEL_LENGTHS), metavar="PX")
    p.add_argument("--kernel-angles", type=float, nargs="+", default=list(DEFAULT_KERNEL_ANGLES), metavar="DEG")
    p.add_argument("--save-fused", action="store_true", help="also write fused PNGs to OUT/fused/<dataset>/<method>/")
    p.add_argument("--no-plot", action="store_true", help="skip the bar-plot PNGs")
    p.add_argument("--out", default="outputs/eval", metavar="DIR", help="output folder")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit: expected >= 1, got {args.limit}")
        if args.max_size is not None and args.max_size < 64:
            raise ConfigError(f"--max-size: expected >= 64 (VIF needs 41 px a side), got {args.max_size}")
        fused_dirs = _parse_fused_dirs(args.fused_dir)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_config.json").write_text(json.dumps({"argv": list(sys.argv[1:] if argv is None else argv), **vars(args)}, indent=2))
        common = {"limit": args.limit, "max_size": args.max_size}
        if args.deblur:
            kernels = motion_kernels(args.kernel_lengths, args.kernel_angles)
            run_deblur_eval(args.pairs, out, weights=args.weights, device=args.device, kernels=kernels, **common)
            print((out / "deblur.md").read_text())
        elif args.temporal:
            if not args.methods and not fused_dirs:
                raise ConfigError("--methods/--fused-dir: expected at least one method")
            run_temporal_eval(
                args.pairs, out, methods=args.methods, fused_dirs=fused_dirs, weights=args.weights, device=args.device, **common
            )
            print((out / "temporal.md").read_text())
        else:
            if not args.methods and not fused_dirs:
                raise ConfigError("--methods/--fused-dir: expected at least one method")
            run_fusion_eval(
                args.pairs, out, methods=args.methods, fused_dirs=fused_dirs, weights=args.weights,
                device=args.device, save_fused=args.save_fused, plot=not args.no_plot, **common,
            )
            print((out / "summary.md").read_text())
        print(f"results in {out}")
    except DSTFuseError as exc:
        print(f"dstfuse-eval: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
