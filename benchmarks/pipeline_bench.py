"""End-to-end benchmarks: the threaded pipeline, a naive sequential loop and the model alone, on one clip.

For one IR/visible clip pair and one backend, in this order:

1. **model only**: ``backend.fuse`` on the clip's own frames (``2 * model_iters`` pairs spread evenly
   over the frames the pipeline fuses, decoded and prepared beforehand with
   :meth:`~dstfuse_stream.fuser.Fuser.prepare`, so the speed's dependence on content is the same),
   the call the pipeline makes (uint8 luma planes); half of the pairs before step 2 (after a
   warm-up), the other half after step 3, summarised together; ``before``/``after`` show drift;
2. **pipeline**: :class:`dstfuse_stream.pipeline.FusionPipeline` (reader threads -> fusion ->
   writer thread) with a :class:`~dstfuse_stream.sinks.VideoSink` and its own per-frame
   :class:`~dstfuse_stream.sinks.TimingLog` (JSON Lines); per-stage statistics are computed from
   that log (``read`` = decode, ``pair``, ``preprocess``, ``fuse``, ``postprocess``, ``encode``,
   ``latency`` end to end);
3. **naive loop**: one thread reads a frame from each stream, fuses it with
   :meth:`~dstfuse_stream.fuser.Fuser.process` (prepare, fuse, finish) and encodes it, then the
   next: the same building blocks (the same sources, :class:`~dstfuse_stream.fuser.Fuser`,
   :class:`VideoSink` with the same codec), no threads, no queues.

Ratios reported: ``pipeline fps / model-only fps`` (below 1: the overhead the threads fail to
hide), ``naive fps / model-only fps`` and ``pipeline fps / naive fps``. Because a shared machine can
change speed between these runs, each of pipeline and naive loop also reports ``fuse_share``: the
fraction of its own wall time spent in ``fuse`` (1.0: every other stage hidden), which does not
depend on a separate run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.errors import SourceError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.pipeline import FusionPipeline, PipelineConfig
from dstfuse_stream.sinks import TIMING_COLUMNS, TimingLog, VideoSink
from dstfuse_stream.sources import VideoFileSource, open_source

from .model_bench import time_calls
from .stats import summarize_latencies

__all__ = [
    "STAGE_COLUMNS",
    "read_timing_log",
    "summarize_stages",
    "run_naive_loop",
    "run_pipeline",
    "run_model_only",
    "sample_indices",
    "load_prepared_frames",
    "run_clip_benchmark",
    "fuse_share",
]

logger = logging.getLogger(__name__)

#: Timing-log columns summarised per stage (all milliseconds), in pipeline order.
STAGE_COLUMNS = tuple(c for c in TIMING_COLUMNS if c.endswith("_ms"))


def read_timing_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSON Lines timing log written by :class:`~dstfuse_stream.sinks.TimingLog`."""
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def summarize_stages(rows: list[dict[str, Any]], *, columns: tuple[str, ...] = STAGE_COLUMNS) -> dict[str, dict[str, float]]:
    """Per column: ``median``, ``p90``, ``p99``, ``mean``, ``max`` (ms) over the rows that have it."""
    out: dict[str, dict[str, float]] = {}
    for column in columns:
        values = [float(r[column]) for r in rows if r.get(column) is not None]
        if not values:
            continue
        s = summarize_latencies([v / 1e3 for v in values])
        out[column] = {
            "median": s["median_ms"],
            "p90": s["p90_ms"],
            "p99": s["p99_ms"],
            "mean": s["mean_ms"],
            "max": s["max_ms"],
        }
    return out


def _clip_info(ir_path: Path, vis_path: Path) -> dict[str, Any]:
    with VideoFileSource(ir_path) as ir_src, VideoFileSource(vis_path) as vis_src:
        return {
            "ir": str(ir_path),
            "vis": str(vis_path),
            "fps": vis_src.fps,
            "frames": {"ir": ir_src.frame_count, "vis": vis_src.frame_count},
            "size_wh": list(vis_src.size_wh),
        }


def sample_indices(frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``0 .. frames - 1`` (both ends included when ``count > 1``).

    ``sample_indices(60, 4) == [0, 20, 39, 59]``; repeats are allowed when ``count > frames``.
    """
    if frames < 1 or count < 1:
        raise ValueError(f"sample_indices: expected frames >= 1 and count >= 1, got {frames}, {count}")
    if count == 1:
        return [0]
    return [round(i * (frames - 1) / (count - 1)) for i in range(count)]


def load_prepared_frames(
    ir_path: Path, vis_path: Path, indices: list[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode the pairs at ``indices`` and prepare them as the pipeline does: uint8 ``(H, W)`` IR and
    visible luma, what the pipeline hands the backend."""
    wanted = sorted(set(indices))
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fuser = Fuser(backend=_NoFusion())
    with open_source(ir_path, role="ir") as ir_src, open_source(vis_path, role="vis") as vis_src:
        for ir_frame, vis_frame in zip(ir_src.frames(), vis_src.frames()):
            if ir_frame.index in wanted:
                prepared = fuser.prepare(ir_frame.image, vis_frame.image)
                found[ir_frame.index] = (prepared.ir_y, prepared.vis_y)
            if ir_frame.index >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise SourceError(f"{ir_path} / {vis_path}: frames {missing} not found")
    return [found[i] for i in indices]


class _NoFusion:
    """Stands in for a backend where only :meth:`Fuser.prepare` is used."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:  # pragma: no cover - never called
        raise NotImplementedError


def run_model_only(
    backend: FusionBackend, frames: list[tuple[np.ndarray, np.ndarray]], *, warmup: int
) -> dict[str, Any]:
    """Time ``backend.fuse(ir, vis)`` once per frame pair of ``frames``, as the pipeline calls it.

    The warm-up calls use the first pair.
    """
    pairs = iter(frames)

    def call() -> None:
        ir, vis = next(pairs)
        backend.fuse(ir, vis)

    for _ in range(warmup):
        backend.fuse(*frames[0])
    timed = time_calls(call, warmup=0, iters=len(frames), min_iters=len(frames))
    return {
        "warmup": warmup,
        **summarize_latencies(timed.latencies_s),
        "latencies_ms": [t * 1e3 for t in timed.latencies_s],
    }


def run_pipeline(
    ir_path: Path,
    vis_path: Path,
    backend: FusionBackend,
    *,
    out_video: Path,
    timing_log: Path,
    max_frames: int | None,
    fps: float,
) -> dict[str, Any]:
    """Run :class:`FusionPipeline` on the clip (lossless, index pairing); stats from its timing log."""
    ir_src, vis_src = open_source(ir_path, role="ir"), open_source(vis_path, role="vis")
    sink = VideoSink(out_video, fps=fps)
    config = PipelineConfig(sync="lossless", pairing="index", max_frames=max_frames)
    t0 = time.perf_counter()
    fuser = Fuser(backend=backend)  # not closed here: the caller owns the backend
    with FusionPipeline(ir_src, vis_src, fuser, sinks=[sink], config=config, timing_log=TimingLog(timing_log)) as pipe:
        summary = pipe.run()
    wall_s = time.perf_counter() - t0
    rows = read_timing_log(timing_log)
    return {
        "frames": summary.frames_written,
        "wall_s": wall_s,
        "elapsed_s": summary.elapsed_s,
        "fps": summary.fps,
        "codec": sink.codec_name,
        "stages_ms": summarize_stages(rows),
        "fuse_share": fuse_share(rows, summary.elapsed_s),
        "timing_log": str(timing_log),
        "stopped_by": summary.stopped_by,
        "processing_size_wh": summary.processing_size_wh,
    }


def run_naive_loop(
    ir_path: Path,
    vis_path: Path,
    backend: FusionBackend,
    *,
    out_video: Path,
    max_frames: int | None,
    fps: float,
    codec: str,
) -> dict[str, Any]:
    """Read one frame from each stream, fuse, encode, repeat; one thread, no queues.

    Per-frame stage times (ms) are kept like the pipeline's timing log: ``read_ms`` (both frames),
    ``preprocess_ms``, ``fuse_ms``, ``postprocess_ms``, ``encode_ms``, ``latency_ms`` (all of them).
    """
    rows: list[dict[str, float]] = []
    fuser = Fuser(backend=backend)  # not closed here: the caller owns the backend
    t0 = time.perf_counter()
    with open_source(ir_path, role="ir") as ir_src, open_source(vis_path, role="vis") as vis_src, VideoSink(
        out_video, fps=fps, codec=codec
    ) as sink:
        ir_frames, vis_frames = ir_src.frames(), vis_src.frames()
        while max_frames is None or len(rows) < max_frames:
            t_read = time.perf_counter()
            ir_frame, vis_frame = next(ir_frames, None), next(vis_frames, None)
            if ir_frame is None or vis_frame is None:
                break
            t_fuse = time.perf_counter()
            fused = fuser.process(ir_frame.image, vis_frame.image)
            t_enc = time.perf_counter()
            sink.write(fused.fused, index=len(rows), timestamp_s=vis_frame.timestamp_s)
            t_end = time.perf_counter()
            rows.append({
                "read_ms": (t_fuse - t_read) * 1e3,
                **fused.timings,
                "encode_ms": (t_end - t_enc) * 1e3,
                "latency_ms": (t_end - t_read) * 1e3,
            })
    elapsed = time.perf_counter() - t0
    if not rows:
        raise SourceError(f"naive loop: no frame pair read from {ir_path} and {vis_path}")
    return {
        "frames": len(rows),
        "elapsed_s": elapsed,
        "fps": len(rows) / elapsed,
        "codec": codec,
        "stages_ms": summarize_stages(rows),
        "fuse_share": fuse_share(rows, elapsed),
    }


def fuse_share(rows: list[dict[str, Any]], elapsed_s: float) -> float:
    """Fraction of ``elapsed_s`` spent inside ``fuse`` (sum of the rows' ``fuse_ms``).

    Measured within one run, so unlike a ratio to a separate model-only run it does not move when
    the machine gets faster or slower between runs: 1.0 means every other stage was hidden.
    """
    if elapsed_s <= 0:
        return math.nan
    return math.fsum(float(r["fuse_ms"]) for r in rows if r.get("fuse_ms") is not None) / 1e3 / elapsed_s


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else math.nan


def run_clip_benchmark(
    label: str,
    ir_path: str | os.PathLike[str],
    vis_path: str | os.PathLike[str],
    backend: FusionBackend,
    *,
    workdir: str | os.PathLike[str],
    timing_dir: str | os.PathLike[str],
    max_frames: int | None,
    model_warmup: int = 1,
    model_iters: int = 5,
) -> dict[str, Any]:
    """Model only, pipeline and naive loop on one clip with one backend (see the module docstring).

    The fused videos go to ``workdir``; the pipeline's timing log to ``timing_dir/<label>_timing.jsonl``.
    """
    ir_path, vis_path = Path(ir_path), Path(vis_path)
    workdir, timing_dir = Path(workdir), Path(timing_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    timing_dir.mkdir(parents=True, exist_ok=True)
    clip = _clip_info(ir_path, vis_path)
    fps = clip["fps"] or 30.0
    counts = [n for n in clip["frames"].values() if n]  # None when the container does not say
    used = min(counts) if counts else 2 * model_iters
    if max_frames is not None:
        used = min(used, max_frames)
    sample = sample_indices(used, 2 * model_iters)
    frames = load_prepared_frames(ir_path, vis_path, sample)
    logger.info("clip %s: %s, model only on frames %s", label, clip["size_wh"], sample[0::2])
    before = run_model_only(backend, frames[0::2], warmup=model_warmup)
    logger.info("clip %s: pipeline, %s frames", label, max_frames)
    pipeline = run_pipeline(
        ir_path,
        vis_path,
        backend,
        out_video=workdir / f"{label}_pipeline.mp4",
        timing_log=timing_dir / f"{label}_timing.jsonl",
        max_frames=max_frames,
        fps=fps,
    )
    logger.info("clip %s: naive loop", label)
    naive = run_naive_loop(
        ir_path, vis_path, backend, out_video=workdir / f"{label}_naive.mp4", max_frames=max_frames, fps=fps, codec=pipeline["codec"]
    )
    logger.info("clip %s: model only again (drift check)", label)
    after = run_model_only(backend, frames[1::2], warmup=0)
    model_only = {
        "frame_indices": {"before": sample[0::2], "after": sample[1::2]},
        **summarize_latencies([t / 1e3 for t in before.pop("latencies_ms") + after.pop("latencies_ms")]),
        "warmup": before["warmup"],
        "before": before,
        "after": after,
    }
    return {
        "label": label,
        "clip": clip,
        "backend": backend.describe(),
        "order": ["model_only (before)", "pipeline", "naive", "model_only (after)"],
        "model_only": model_only,
        "pipeline": pipeline,
        "naive": naive,
        "ratios": {
            "pipeline_over_model_only_fps": _ratio(pipeline["fps"], model_only["fps"]),
            "naive_over_model_only_fps": _ratio(naive["fps"], model_only["fps"]),
            "pipeline_over_naive_fps": _ratio(pipeline["fps"], naive["fps"]),
        },
    }
