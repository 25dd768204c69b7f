"""Blur robustness: fuse (IR, blurred visible) and score against the *sharp* sources; CST deblur gain.

Inputs per pair: the visible luma blurred by fixed linear motion kernels
(:func:`dstfuse_stream.degrade.motion_blur`, re-quantised to 8 bit) and, where the pair folder has
``vi_blur/`` (M3SVD clips), the real blurred frame. For every method: Qabf and SSIM of the fused
image against (IR, **sharp** visible), SF and AG. For the network also the CST stage-2 output
(``intermediates(...).deblurred``, quantised to 8 bit) against the sharp visible: PSNR / SSIM of the
blurred input and of the CST output, ``gain_db = PSNR(CST, sharp) - PSNR(blurred, sharp)``, and the mean mapping attention.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.degrade import motion_blur, motion_blur_kernel
from dstfuse_stream.imageio import list_pairs
from dstfuse_stream.metrics import average_gradient, fusion_ssim, pearson, psnr, qabf, spatial_frequency, ssim

from .data import blurred_frame_path, dataset_names, load_luma_u8, load_pair, select_evenly, select_stride
from .methods import BLUR, SHARP, MethodSpec, PairKey, close_all, fuse_aligned
from .tables import fmt, markdown_table, mean_finite, write_csv

__all__ = [
    "MotionKernel",
    "motion_kernels",
    "blur_u8",
    "DEFAULT_KERNEL_LENGTHS",
    "DEFAULT_KERNEL_ANGLES",
    "REAL_GROUP",
    "pair_kernels",
    "SHARP_GROUP",
    "run_blur_eval",
]

logger = logging.getLogger(__name__)

DEFAULT_KERNEL_LENGTHS = (5, 9, 15, 21)
DEFAULT_KERNEL_ANGLES = (0, 45, 90)
#: group name of the real blurred frames (``vi_blur``) in tables and summaries
REAL_GROUP = "real vi_blur"
#: group name of the unblurred reference input
SHARP_GROUP = "sharp (no blur)"
FUSION_FIELDS = ("qabf_sharp", "ssim_sharp", "SF", "AG")
CST_FIELDS = ("psnr_blurred", "psnr_cst", "gain_db", "ssim_blurred", "ssim_cst", "attention_mean",
              "mean_sharp", "mean_blurred", "mean_cst", "corr_cst_sharp")


@dataclass(frozen=True)
class MotionKernel:
    """A linear motion-blur kernel: ``length_px`` pixels at ``angle_deg`` (0 = horizontal)."""

    length_px: int
    angle_deg: float

    @property
    def label(self) -> str:
        return f"L{self.length_px}/{self.angle_deg:g}deg"

    @property
    def group(self) -> str:
        """Tables average over angles: ``"L15"``."""
        return f"L{self.length_px}"

    @property
    def key(self) -> str:
        """Folder name of a folder method's outputs for this input: ``"L15_a45"``."""
        return f"L{self.length_px}_a{self.angle_deg:g}"

    def array(self) -> np.ndarray:
        """``(L, L)`` float32 kernel summing to 1 (:func:`dstfuse_stream.degrade.motion_blur_kernel`)."""
        return motion_blur_kernel(int(self.length_px), float(self.angle_deg))


def motion_kernels(
    lengths: Sequence[int] = DEFAULT_KERNEL_LENGTHS, angles: Sequence[float] = DEFAULT_KERNEL_ANGLES
) -> list[MotionKernel]:
    """Every length x every angle."""
    return [MotionKernel(int(n), float(a)) for n in lengths for a in angles]


def blur_u8(image: np.ndarray, kernel: MotionKernel) -> np.ndarray:
    """Blur a uint8 ``(H, W)`` image with :func:`dstfuse_stream.degrade.motion_blur`; uint8 out (rounded)."""
    return float_to_uint8(motion_blur(image.astype(np.float32) / np.float32(255.0), kernel.length_px, kernel.angle_deg))


def _fusion_scores(ir: np.ndarray, sharp: np.ndarray, fused: np.ndarray) -> dict[str, float]:
    return {"qabf_sharp": qabf(ir, sharp, fused), "ssim_sharp": fusion_ssim(ir, sharp, fused),
            "SF": spatial_frequency(fused), "AG": average_gradient(fused)}


def _cst_scores(sharp: np.ndarray, blurred: np.ndarray, deblurred: np.ndarray, attention: np.ndarray) -> dict[str, float]:
    """Scores of the CST output, quantised to 8 bit like every image here (an identity CST: gain exactly 0)."""
    deblurred = float_to_uint8(deblurred)
    p_blur, p_cst = psnr(blurred, sharp), psnr(deblurred, sharp)
    return {
        "psnr_blurred": p_blur, "psnr_cst": p_cst, "gain_db": p_cst - p_blur,
        "ssim_blurred": ssim(blurred, sharp), "ssim_cst": ssim(deblurred, sharp),
        "attention_mean": float(np.mean(attention)),
        "mean_sharp": float(np.mean(sharp)) / 255.0, "mean_blurred": float(np.mean(blurred)) / 255.0,
        "mean_cst": float(np.mean(deblurred)) / 255.0, "corr_cst_sharp": pearson(deblurred, sharp),
    }


def pair_kernels(kernels: Sequence[MotionKernel], index: int, *, cycle: bool) -> list[MotionKernel]:
    """The kernels pair ``index`` is blurred with: all, or (``cycle``) one per length, the angle
    cycling with the pair: for the j-th length, its ``(index + j) % n``-th kernel in the given order."""
    if not cycle:
        return list(kernels)
    by_length: dict[int, list[MotionKernel]] = {}
    for k in kernels:
        by_length.setdefault(k.length_px, []).append(k)
    return [ks[(index + j) % len(ks)] for j, ks in enumerate(by_length.values())]


def _inputs(root: Path, vis_path: Path, sharp: np.ndarray, kernels, *, real: bool, include_sharp: bool):
    """``(group, label, condition, blurred uint8)`` for every input of one pair."""
    if include_sharp:
        yield SHARP_GROUP, "sharp", SHARP, sharp
    for k in kernels:
        yield k.group, k.label, k.key, blur_u8(sharp, k)
    real_path = blurred_frame_path(root, vis_path) if real else None
    if real_path is not None:
        yield REAL_GROUP, REAL_GROUP, BLUR, load_luma_u8(real_path, size_wh=(sharp.shape[1], sharp.shape[0]))


def run_blur_eval(
    pair_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    spec: MethodSpec = MethodSpec(),
    kernels: Sequence[MotionKernel] | None = None,
    cycle_angles: bool = False,
    real: bool = True,
    include_sharp: bool = True,
    limit: int | None = None,
    stride: int = 1,
    max_size: int | None = None,
    save_inputs: bool = False,
) -> dict[str, dict]:
    """Write ``blur.csv`` / ``cst.csv`` / ``blur.md``; return ``{dataset: {"fusion": ..., "cst": ...}}``.

    ``fusion``: ``{group: {method: {"n", qabf_sharp, ssim_sharp, SF, AG}}}``; ``cst``:
    ``{group: {"n", psnr_blurred, psnr_cst, gain_db, ...}}`` (network only). Groups: ``"sharp (no
    blur)"`` (when ``include_sharp``), ``"L<length>"`` (mean over angles and pairs), ``"real vi_blur"``.
    ``cycle_angles``: one kernel per length per pair, the angle cycling over the pairs
    (:func:`pair_kernels`), instead of every kernel on every pair.
    Pairs: every ``stride``-th, then ``limit`` evenly spaced. ``save_inputs`` writes the synthetic
    blurred visible frames to ``OUT/inputs/<dataset>/<L..._a..>/`` for running other tools on them.
    """
    kernels = list(motion_kernels() if kernels is None else kernels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in pair_dirs]
    method_list = spec.create()
    rows, cst_rows = [], []
    results: dict[str, dict] = {}
    try:
        for dataset, root in zip(dataset_names(dirs), dirs):
            pairs = select_evenly(select_stride(list_pairs(root), stride=stride), limit)
            fus: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
            cst: dict[str, list] = defaultdict(list)
            notes: dict[str, list[str]] = defaultdict(list)
            for index, (ir_path, vis_path) in enumerate(pairs):
                ir, sharp = load_pair(ir_path, vis_path, max_size)
                mine = pair_kernels(kernels, index, cycle=cycle_angles)
                for group, label, condition, blurred in _inputs(root, vis_path, sharp, mine, real=real, include_sharp=include_sharp):
                    if save_inputs and condition not in (SHARP, BLUR):
                        target = out / "inputs" / dataset / condition
                        target.mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(target / f"{vis_path.stem}.png"), blurred)
                    key = PairKey(dataset, ir_path.name, condition)
                    for method in method_list:
                        got = fuse_aligned(method, ir, blurred, key, sources=(ir, sharp))
                        if got is None:
                            continue
                        if got.note:
                            notes[method.name].append(f"{ir_path.stem} {label} ({got.note})")
                        scores = _fusion_scores(*got.sources, got.fused)
                        fus[group][method.name].append(scores)
                        row = {"dataset": dataset, "pair": ir_path.name, "input": label, "method": method.name}
                        rows.append({**row, "note": got.note or "", **scores})
                        if got.result.deblurred is not None and group != SHARP_GROUP:
                            c = _cst_scores(sharp, blurred, got.result.deblurred, got.result.attention)
                            cst[group].append(c)
                            cst_rows.append({**row, **c})
            results[dataset] = {
                "pairs": len(pairs),
                "fusion": {g: {m: _means(v, FUSION_FIELDS) for m, v in by.items()} for g, by in fus.items()},
                "cst": {g: _means(v, CST_FIELDS) for g, v in cst.items()},
                "notes": [f"{m}: scored at the smaller size where it differs from the sources: {', '.join(v[:4])}"
                          + (f" and {len(v) - 4} more" if len(v) > 4 else "") for m, v in notes.items()],
            }
    finally:
        close_all(method_list)
    write_csv(out / "blur.csv", rows, ("dataset", "pair", "input", "method", *FUSION_FIELDS, "note"))
    write_csv(out / "cst.csv", cst_rows, ("dataset", "pair", "input", "method", *CST_FIELDS))
    (out / "blur.md").write_text(blur_report(results, max_size))
    return results


def _means(values: list[dict[str, float]], fields: Sequence[str]) -> dict[str, float]:
    return {"n": len(values), **{f: mean_finite(v[f] for v in values) for f in fields}}


def blur_report(results: dict[str, dict], max_size: int | None) -> str:
    """Markdown: per dataset, the fused-vs-sharp table (best per input in bold) and the CST table."""
    shape = f"longest side <= {max_size} px" if max_size else "full resolution"
    lines = []
    for dataset, res in results.items():
        lines += [f"### Blur robustness, {dataset} ({res['pairs']} pairs, {shape}, luma)", "",
                  "Fused from (IR, blurred visible); Qabf and SSIM (sum over the two sources) against IR and the "
                  "**sharp** visible; SF/AG of the fused image.", ""]
        table = []
        for group, by in res["fusion"].items():
            best = {f: max((r[f] for r in by.values()), default=float("nan")) for f in ("qabf_sharp", "ssim_sharp")}
            for m, r in by.items():
                cells = [f"**{fmt(r[f])}**" if len(by) > 1 and r[f] == best[f] else fmt(r[f]) for f in ("qabf_sharp", "ssim_sharp")]
                table.append([group, m, r["n"], *cells, fmt(r["SF"]), fmt(r["AG"])])
        lines += [markdown_table(["input", "method", "n", "Qabf vs sharp ↑", "SSIM vs sharp ↑", "SF", "AG"], table)]
        lines += [f"- {note}" for note in res["notes"]] + ([""] if res["notes"] else [])
        if res["cst"]:
            lines += [f"#### CST deblurring, {dataset}", "",
                      "PSNR (data range 1) / SSIM of the blurred input and of the CST stage-2 output against the sharp "
                      "visible; gain = PSNR(CST) - PSNR(blurred); attention = mean mapping attention (weight of the "
                      "CST output); means are luma on [0, 1].", ""]
            table = [[g, r["n"], fmt(r["psnr_blurred"], 2), fmt(r["psnr_cst"], 2), f"{r['gain_db']:+.2f}",
                      fmt(r["ssim_blurred"]), fmt(r["ssim_cst"]), fmt(r["attention_mean"], 4), fmt(r["mean_sharp"]),
                      fmt(r["mean_blurred"]), fmt(r["mean_cst"]), fmt(r["corr_cst_sharp"])] for g, r in res["cst"].items()]
            lines += [markdown_table(["input", "n", "PSNR blurred", "PSNR CST", "gain dB", "SSIM blurred", "SSIM CST",
                                      "attention", "mean sharp", "mean blurred", "mean CST", "corr(CST, sharp)"], table)]
            real = res["cst"].get(REAL_GROUP)
            if real:
                lines += [f"- {REAL_GROUP}: the real blurred frames also differ in tone from `vi` (mean luma "
                          f"{real['mean_blurred']:.3f} vs {real['mean_sharp']:.3f}); scores are reported as is, so "
                          "they mix blur and tone.", ""]
    return "\n".join(lines) + "\n"
