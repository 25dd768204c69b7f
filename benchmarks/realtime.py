"""``dstfuse-bench realtime``: speed and fidelity per precision, work scale and resolution, one command.

Every *variant* is a :class:`~dstfuse_stream.fuser.Fuser` built the public way on the same weights
(:data:`VARIANTS`): ``fp32-ref`` (ONNX Runtime fp32 at full resolution: the reference for speed-ups
and fidelity), ``fp32`` / ``int8`` / ``bf16`` at the default work scale, ``int8-ws1`` / ``bf16-ws1``
(precision alone), ``default`` (``Fuser()`` defaults: what the product runs) and ``default-x2`` (the
same with two frames in flight).

Per resolution, on real colour frames (validation clips resized to the resolution, area):

* **speed**, interleaved (and as CPU time per frame, which load barely changes): each round takes the next frame and times every variant on it, model only
  (``backend.fuse`` on the prepared uint8 luma, the pipeline's call) then end to end
  (``Fuser.process_many``: BGR in, BGR out). A shared, loaded machine slows every variant of a round
  alike, so the speed-up over ``fp32-ref`` is the median of the per-round ratios. The non-fusion
  share is ``(preprocess + postprocess) / (preprocess + fuse + postprocess)`` from ``process``'s own
  timings. ``default-x2`` reports throughput (2 frames per call) and the latency of its calls.
* **fidelity** vs ``fp32-ref`` on every frame: PSNR of the fused luma (uint8), and the relative change
  of the means of VIF, Qabf and SSIM (:mod:`dstfuse_stream.metrics`); the gate is PSNR >= 35 dB on
  every frame and all three within 1 %.

And the **stream** check: the streaming pipeline (``dstfuse_stream.stream``, H.264 output and preview
as in the README command) on the README sample clip with the ``default`` Fuser, warmed up, against the
model-only fps of the same backend on the same frames (measured in every round), plus the
CPU time per frame of each stage run alone (decode, fuse, encode fused, encode preview): on an idle
machine where fusion saturates every core, ``fuse / (sum of stages)`` is the best ratio the pipeline
can reach, whatever the load was during the run.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dstfuse_stream import metrics
from dstfuse_stream.backends.precision import FIDELITY_GATE_DB, cpu_features, default_threads
from dstfuse_stream.errors import DSTFuseError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.imageio import list_pairs, read_bgr, read_luma

from .stats import summarize_latencies

__all__ = [
    "Variant",
    "VARIANTS",
    "REFERENCE",
    "FIDELITY_METRICS",
    "METRIC_TOLERANCE",
    "load_frames",
    "build_variants",
    "time_variants",
    "fidelity",
    "run_stream_check",
]

logger = logging.getLogger(__name__)

REFERENCE = "fp32-ref"
#: Held-out metrics that must stay within :data:`METRIC_TOLERANCE` (relative) of the reference.
FIDELITY_METRICS = {"VIF": metrics.fusion_vif, "Qabf": metrics.qabf, "SSIM": metrics.fusion_ssim}
METRIC_TOLERANCE = 0.01


@dataclass(frozen=True)
class Variant:
    """One way to build the Fuser: backend, precision, work scale, frames in flight."""

    label: str
    backend: str
    precision: str
    work_scale: str
    concurrent_frames: int = 1

    def build(self, weights: str | os.PathLike[str]) -> Fuser:
        return Fuser(weights, backend=self.backend, device="cpu", precision=self.precision, work_scale=self.work_scale,
                     concurrent_frames=self.concurrent_frames)


VARIANTS: dict[str, Variant] = {
    v.label: v
    for v in (
        Variant(REFERENCE, "onnx", "fp32", "1"),
        Variant("fp32", "onnx", "fp32", "auto"),
        Variant("int8", "onnx", "int8", "auto"),
        Variant("bf16", "torch", "bf16", "auto"),
        Variant("int8-ws1", "onnx", "int8", "1"),
        Variant("bf16-ws1", "torch", "bf16", "1"),
        Variant("torch-fp32", "torch", "fp32", "auto"),
        Variant("default", "auto", "auto", "auto"),
        Variant("default-x2", "auto", "auto", "auto", 2),
    )
}


def load_frames(roots: Sequence[str | os.PathLike[str]], *, per_root: int, size_wh: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``per_root`` evenly spaced ``(ir gray, vis BGR)`` uint8 pairs of each paired folder, resized to ``size_wh``."""
    frames = []
    for root in roots:
        pairs = list_pairs(root)
        step = max(1, len(pairs) // per_root)
        for ir_path, vis_path in pairs[::step][:per_root]:
            ir, vis = read_luma(ir_path), read_bgr(vis_path)
            resize = lambda x: x if (x.shape[1], x.shape[0]) == tuple(size_wh) else cv2.resize(x, size_wh, interpolation=cv2.INTER_AREA)  # noqa: E731
            frames.append((resize(ir), resize(vis)))
    return frames


def build_variants(labels: Sequence[str], weights: str | os.PathLike[str]) -> tuple[dict[str, Fuser], dict[str, str]]:
    """The Fusers of ``labels``; a variant that cannot be built (no int8 file yet) is skipped with its reason."""
    fusers, skipped = {}, {}
    for label in labels:
        try:
            fusers[label] = VARIANTS[label].build(weights)
        except DSTFuseError as exc:
            skipped[label] = str(exc)
            logger.warning("variant %s skipped: %s", label, exc)
    return fusers, skipped


def _calls(
    fuser: Fuser, frames: list[tuple[np.ndarray, np.ndarray]], pool: ThreadPoolExecutor
) -> tuple[Callable[[int], None], Callable[[int], list]]:
    """(model-only, end-to-end) calls on frame ``i`` (and the next ones, one per frame in flight)."""
    prepared = [fuser.prepare(ir, vis) for ir, vis in frames]
    k = fuser.concurrent_frames

    def model(i: int) -> None:
        batch = [prepared[(i + j) % len(prepared)] for j in range(k)]
        if k == 1:
            fuser.backend.fuse(batch[0].ir_y, batch[0].vis_y)
        else:
            list(pool.map(lambda p: fuser.backend.fuse(p.ir_y, p.vis_y), batch))

    def e2e(i: int) -> list:
        return fuser.process_many([(*frames[(i + j) % len(frames)], None) for j in range(k)])

    return model, e2e


def time_variants(fusers: dict[str, Fuser], frames: list[tuple[np.ndarray, np.ndarray]], *, rounds: int) -> dict[str, dict[str, Any]]:
    """Interleaved model-only and end-to-end timings of every variant (see the module docstring)."""
    with ThreadPoolExecutor(max(f.concurrent_frames for f in fusers.values())) as pool:
        calls = {label: _calls(f, frames, pool) for label, f in fusers.items()}
        for model, e2e in calls.values():  # warm-up; precision "auto" measures here
            e2e(0)
            model(0)
        raw = _timed_rounds(calls, rounds)
    return _summarize(fusers, raw)


def _timed_rounds(calls: dict[str, tuple[Callable[[int], None], Callable[[int], list]]], rounds: int) -> dict[str, dict[str, list[float]]]:
    raw: dict[str, dict[str, list[float]]] = {label: {k: [] for k in ("model", "e2e", "model_cpu", "e2e_cpu", "non_fusion")} for label in calls}
    for r in range(rounds):
        for label, (model, e2e) in calls.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            model(r)
            c1, t1 = cpu_seconds(), time.perf_counter()
            done = e2e(r)
            c2, t2 = cpu_seconds(), time.perf_counter()
            raw[label]["model"].append(t1 - t0)
            raw[label]["e2e"].append(t2 - t1)
            raw[label]["model_cpu"].append((c1 - c0) / len(done))
            raw[label]["e2e_cpu"].append((c2 - c1) / len(done))
            for frame in done:
                t = frame.timings
                raw[label]["non_fusion"].append((t["preprocess_ms"] + t["postprocess_ms"]) / (t["preprocess_ms"] + t["fuse_ms"] + t["postprocess_ms"]))
    return raw


def _summarize(fusers: dict[str, Fuser], raw: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    out = {}
    ref = raw.get(REFERENCE)
    for label, fuser in fusers.items():
        k = fuser.concurrent_frames
        row: dict[str, Any] = {"frames_per_call": k, "describe": fuser.describe()}
        for part in ("model", "e2e"):
            row[part] = summarize_latencies(raw[label][part], frames_per_call=k)
            if ref is not None:  # per round: reference seconds per frame / variant seconds per frame
                row[part]["speedup_vs_ref"] = statistics.median(r / (v / k) for r, v in zip(ref[part], raw[label][part]))
            row[part]["cpu_ms_per_frame"] = statistics.median(raw[label][part + "_cpu"]) * 1e3
        row["non_fusion_share"] = statistics.median(raw[label]["non_fusion"])
        members = getattr(fuser.backend, "backends", [fuser.backend])  # a BackendPool's members
        row["auto_choices"] = [{f"{w}x{h}": c.to_dict() for (w, h), c in getattr(b, "choices", {}).items()} for b in members]
        out[label] = row
    return out


def fidelity(fusers: dict[str, Fuser], frames: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """PSNR and metric changes of every variant vs :data:`REFERENCE` on ``frames`` (gate: see module)."""
    results = {label: [f.process(ir, vis) for ir, vis in frames] for label, f in fusers.items()}
    ref = results[REFERENCE]

    def means(fused: list) -> dict[str, float]:
        return {name: float(np.mean([fn(f.ir, f.vis_y, f.fused_y) for f in fused])) for name, fn in FIDELITY_METRICS.items()}

    ref_means = means(ref)
    out = {}
    for label, fused in results.items():
        psnrs = [metrics.psnr(f.fused_y, r.fused_y) for f, r in zip(fused, ref)]
        m = ref_means if label == REFERENCE else means(fused)
        change = {name: (m[name] - ref_means[name]) / abs(ref_means[name]) if ref_means[name] else math.nan for name in m}
        finite = [p for p in psnrs if math.isfinite(p)]
        failed = [name for name, c in change.items() if not abs(c) <= METRIC_TOLERANCE]
        out[label] = {
            "frames": len(fused),
            "psnr_min_db": min(psnrs),
            "psnr_mean_db": float(np.mean(finite)) if finite else math.inf,
            "psnr_passed": min(psnrs) >= FIDELITY_GATE_DB,
            "metrics": m,
            "metric_change": change,
            "metrics_failed": failed,
            "passed": min(psnrs) >= FIDELITY_GATE_DB and not failed,
        }
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads (user + system): a cost that load barely changes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_budget(fuser: Fuser, frames: list[tuple[np.ndarray, np.ndarray]], pairs: list[tuple[Path, Path]], workdir: Path) -> dict[str, float]:
    """CPU milliseconds per frame of each pipeline stage, each run alone: decode a pair, fuse
    (``Fuser.process``), encode the fused frame and the preview (H.264, the sinks' defaults)."""
    from dstfuse_stream.sinks import VideoSink
    from dstfuse_stream.visualize import side_by_side

    n = len(pairs)
    c0 = cpu_seconds()
    for ir_path, vis_path in pairs:
        read_luma(ir_path), read_bgr(vis_path)
    c1 = cpu_seconds()
    fused = [fuser.process(ir, vis) for ir, vis in frames]
    c2 = cpu_seconds()
    budget = {"decode": (c1 - c0) / n, "fuse": (c2 - c1) / n}
    for content in ("fused", "preview"):
        c3 = cpu_seconds()
        with VideoSink(workdir / f"budget_{content}.mp4", fps=30.0, content=content) as sink:  # the sinks' default settings
            for i, f in enumerate(fused):
                sink.write(f.fused if content == "fused" else side_by_side(f.ir, f.vis, f.fused), index=i)
        budget[f"encode_{content}"] = (cpu_seconds() - c3) / n
    return {k: v * 1e3 for k, v in budget.items()}


def run_stream_check(fuser: Fuser, clip: Path, *, workdir: Path, rounds: int = 11,
                     pipeline_fuser: Fuser | None = None) -> dict[str, Any]:
    """The streaming pipeline on the pairs folder ``clip`` (H.264 out + preview) vs model-only fps.

    ``fuser`` is the reference (``Fuser()`` defaults: one frame at a time); the pipeline runs on
    ``pipeline_fuser``, the one ``dstfuse-stream`` builds for this clip (default: ``fuser``; the CLI
    fuses recorded sources two at a time on a CPU, :func:`~dstfuse_stream.streaming.auto_concurrent_frames`).
    Each of ``rounds`` rounds times one model-only pass of each fuser over the clip's frames (a pool's
    members called from as many threads: its throughput) and the pipeline with its writer at idle
    priority (the default) and at normal priority (the readers of the recorded clip at their default
    idle priority in both), the model-only passes first in even rounds and last in odd ones (so a
    machine that drifts during a round does not favour either side). ``ratio``: pipeline fps / the
    reference's model-only fps (the real-time issue's criterion); ``ratio_own``: / the pipeline
    fuser's own model-only throughput (what reading, pairing and writing cost it). Ratios are medians
    of the per-round ratios, with quartiles (a 20-frame round on this shared VM ranged 0.65-1.05 for
    the same code, so a handful of rounds is not enough)."""
    from concurrent.futures import ThreadPoolExecutor

    from dstfuse_stream.sinks import VideoSink
    from dstfuse_stream.streaming import stream

    piped = pipeline_fuser or fuser
    pairs = list_pairs(clip)
    frames = [(read_luma(i), read_bgr(v)) for i, v in pairs]
    prepared = [fuser.prepare(ir, vis) for ir, vis in frames]
    fuser.process(*frames[0])  # warm-up (and the precision choice for this size)
    piped.process_many([(ir, vis, None) for ir, vis in frames[:piped.concurrent_frames]])
    pool = ThreadPoolExecutor(piped.concurrent_frames) if piped.concurrent_frames > 1 else None

    def model_only(which: Fuser) -> float:
        t0 = time.perf_counter()
        if which is piped and pool is not None:
            list(pool.map(lambda p: which.backend.fuse(p.ir_y, p.vis_y), prepared))
        else:
            for p in prepared:
                which.backend.fuse(p.ir_y, p.vis_y)
        return len(prepared) / (time.perf_counter() - t0)

    def pipeline(priority: str) -> Any:
        sinks = [VideoSink(workdir / f"sample_fused_{priority}.mp4", fps=30.0),
                 VideoSink(workdir / f"sample_preview_{priority}.mp4", fps=30.0, content="preview")]
        with stream(pairs=clip, fuser=piped, sinks=sinks, background_writer=priority == "idle") as frames_iter:
            for _ in frames_iter:
                pass
        return frames_iter.summary

    workdir.mkdir(parents=True, exist_ok=True)
    per_round: list[dict[str, Any]] = []
    try:
        for r in range(max(1, rounds)):
            row: dict[str, Any] = {}
            steps = ("model", "idle", "normal")  # the pipeline's default, then the writer competing as an equal
            for step in steps if r % 2 == 0 else steps[::-1]:
                if step == "model":
                    row["model_only_fps"] = model_only(fuser)
                    row["own_model_only_fps"] = row["model_only_fps"] if piped is fuser else model_only(piped)
                else:
                    row[step] = pipeline(step)
            per_round.append(row)
    finally:
        if pool is not None:
            pool.shutdown()
    summary = per_round[-1]["idle"]
    budget = cpu_budget(fuser, frames, pairs, workdir)

    def median(values: list[float]) -> float:
        return float(np.median(values))

    ratios = [r["idle"].fps / r["model_only_fps"] for r in per_round]
    return {
        "cpu_ms_per_frame": budget,
        # fusion keeps every core busy in model-only runs; in the pipeline the other stages need CPU too
        "projected_ratio_idle": _ratio(budget["fuse"], sum(budget.values())),
        "projected_ratio_idle_without_preview": _ratio(budget["fuse"], sum(budget.values()) - budget["encode_preview"]),
        "clip": str(clip),
        "frames": summary.frames_written,
        "size_wh": list(summary.processing_size_wh or ()),
        "rounds": len(per_round),
        "concurrent_frames": piped.concurrent_frames,
        "pipeline_fps": median([r["idle"].fps for r in per_round]),
        "pipeline_fps_normal_writer": median([r["normal"].fps for r in per_round]),
        "model_only_fps": median([r["model_only_fps"] for r in per_round]),
        "own_model_only_fps": median([r["own_model_only_fps"] for r in per_round]),
        "ratio": median(ratios),
        "ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
        "ratio_own": median([r["idle"].fps / r["own_model_only_fps"] for r in per_round]),
        "ratio_normal_writer": median([r["normal"].fps / r["model_only_fps"] for r in per_round]),
        "per_round": [{"model_only_fps": r["model_only_fps"], "own_model_only_fps": r["own_model_only_fps"],
                       "pipeline_fps": r["idle"].fps, "pipeline_fps_normal_writer": r["normal"].fps} for r in per_round],
        "describe": fuser.describe(),
        "pipeline_describe": piped.describe(),
    }


def machine_facts() -> dict[str, Any]:
    """CPU features, threads and the OpenMP wait settings (they change torch timings under load)."""
    return {
        "cpu": cpu_features().to_dict(),
        "threads": default_threads(),
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
    }

