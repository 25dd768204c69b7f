"""End to end on a GPU: :func:`dstfuse_stream.stream` over a carried IR/visible clip, against the model alone.

Per backend variant (``"runtime"``: the runtime's own :class:`TorchBackend` with its default precision,
fp16 on CUDA, i.e. ``stream(backend="torch")``; or a :class:`~.gpu_models.Variant` label such as
``"bf16/cl/eager"``):

1. **model only (before)**: ``backend.fuse(ir_y, vis_y)`` on frames of the clip prepared as the pipeline
   prepares them (:func:`.pipeline_bench.load_prepared_frames`), after a warm-up at this size (cuDNN
   autotuning stays out of the pipeline's latencies);
2. **pipeline**: ``stream(ir, vis, fuser=..., sync="lossless", pairing="index", timing_log=...)``,
   iterated to the end by a consumer that does nothing (a detector would work there); ``fps``, latency
   p50/p99 from the run's summary, per-stage times from its timing log; with ``encode`` a
   :class:`~dstfuse_stream.sinks.VideoSink` is added (the ``dstfuse-stream`` command's path);
3. **model only (after)**, to see drift. ``pipeline_over_model = pipeline fps / model-only fps``.

Sources: the clip's ``ir.mp4`` / ``vi.mp4`` through the runtime (PyAV). Where PyAV is missing (the
device image has none unless it is carried), the frames are decoded once with OpenCV into BMP folders
and streamed from those; ``source`` says which.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.errors import SourceError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.geometry import processing_size_wh, resize_to
from dstfuse_stream.imageio import to_gray
from dstfuse_stream.model import DSTFuse
from dstfuse_stream.sinks import TimingLog, VideoSink
from dstfuse_stream.sources import open_source
from dstfuse_stream.streaming import stream

from .gpu_models import DTYPES, Variant, prepare_variant
from .pipeline_bench import fuse_share, load_prepared_frames, read_timing_log, run_model_only, sample_indices, summarize_stages
from .stats import summarize_latencies

__all__ = ["VariantBackend", "make_backend", "extract_frames", "clip_sources", "run_stream_variant"]

logger = logging.getLogger(__name__)


class VariantBackend(FusionBackend):
    """A :class:`FusionBackend` running a :class:`Variant` of a model (bf16, channels_last, compiled...)."""

    name = "torch"
    accepts_uint8 = True

    def __init__(self, model: DSTFuse, variant: Variant, *, device: str, compile_backend: str = "inductor") -> None:
        super().__init__(device=device, precision=variant.precision)
        self.variant = variant
        self.net = prepare_variant(model, variant, device, compile_backend=compile_backend)
        self._format = torch.channels_last if variant.channels_last else torch.contiguous_format

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        dtype = DTYPES[self.variant.precision]
        with torch.no_grad():
            pair = []
            for array in (ir, vis):
                t = torch.from_numpy(array).to(self.device)
                t = t.float().mul_(1.0 / 255.0) if t.dtype == torch.uint8 else t
                pair.append(t.to(dtype).contiguous(memory_format=self._format))
            return self.net(*pair).float().cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.device} ({self.variant.label})"


def make_backend(spec: str, model: DSTFuse, *, device: str, compile_backend: str) -> FusionBackend:
    """``"runtime"``: the runtime's :class:`TorchBackend` (default precision); else a :class:`Variant` label."""
    if spec == "runtime":
        return TorchBackend(copy.deepcopy(model), device=device, precision="auto")
    return VariantBackend(model, Variant.parse(spec), device=device, compile_backend=compile_backend)


def extract_frames(clip: Path, folder: Path, *, max_frames: int | None = None) -> tuple[Path, Path, int]:
    """Decode ``clip/ir.mp4`` and ``clip/vi.mp4`` with OpenCV into ``folder/ir/*.bmp`` (luma) and
    ``folder/vi/*.bmp`` (BGR), up to the shorter stream's end; returns ``(ir_dir, vi_dir, frames)``."""
    dirs = (folder / "ir", folder / "vi")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    caps = [cv2.VideoCapture(str(clip / name)) for name in ("ir.mp4", "vi.mp4")]
    count = 0
    try:
        while max_frames is None or count < max_frames:
            (ok_ir, ir), (ok_vis, vis) = caps[0].read(), caps[1].read()
            if not (ok_ir and ok_vis):
                break
            cv2.imwrite(str(dirs[0] / f"{count:05d}.bmp"), to_gray(ir))
            cv2.imwrite(str(dirs[1] / f"{count:05d}.bmp"), vis)
            count += 1
    finally:
        for cap in caps:
            cap.release()
    if count == 0:
        raise SourceError(f"clip {str(clip)!r}: OpenCV decoded no frame pair from ir.mp4 and vi.mp4")
    return dirs[0], dirs[1], count


def clip_sources(clip: Path, work: Path, *, reader: str, max_frames: int | None) -> dict[str, Any]:
    """Where the pipeline reads the clip from: ``{"ir", "vis", "frames", "source", "fps"}``.

    ``reader``: ``"pyav"`` (the video files through the runtime), ``"opencv"`` (BMP folders decoded
    once with OpenCV) or ``"auto"`` (PyAV when it is installed).
    """
    if reader == "auto":
        reader = "pyav" if importlib.util.find_spec("av") is not None else "opencv"
    if reader == "pyav":
        ir, vis = clip / "ir.mp4", clip / "vi.mp4"
        with open_source(ir, role="ir") as ir_src, open_source(vis, role="vis") as vis_src:
            counts = [n for n in (ir_src.frame_count, vis_src.frame_count) if n]
            fps = vis_src.fps
        frames = min(counts) if counts else None
        source = "video files (PyAV)"
    else:
        capture = cv2.VideoCapture(str(clip / "vi.mp4"))
        fps = capture.get(cv2.CAP_PROP_FPS) or None
        capture.release()
        ir, vis, frames = extract_frames(clip, work / "frames", max_frames=max_frames)
        source = "BMP folders decoded once with OpenCV (PyAV missing)" if importlib.util.find_spec("av") is None else "BMP folders (OpenCV)"
    if max_frames is not None and frames is not None:
        frames = min(frames, max_frames)
    return {"ir": str(ir), "vis": str(vis), "frames": frames, "source": source, "fps": fps}


def run_stream_variant(
    spec: str, model: DSTFuse, sources: dict[str, Any], *, device: str, settings: dict[str, Any], work: Path, encode: bool = False,
) -> dict[str, Any]:
    """Model only, pipeline, model only again, for one backend variant (see the module docstring)."""
    tag = spec.replace("/", "-") + ("-encode" if encode else "")
    backend = make_backend(spec, model, device=device, compile_backend=settings["compile_backend"])
    try:
        used = sources["frames"] or 2 * settings["stream_model_iters"]
        indices = sample_indices(used, 2 * settings["stream_model_iters"])
        frames = load_prepared_frames(Path(sources["ir"]), Path(sources["vis"]), indices)
        if settings["stream_max_size"]:  # at the pipeline's processing size (stream(max_size=...))
            size_wh = processing_size_wh(frames[0][0].shape[::-1], max_size=settings["stream_max_size"])
            frames = [(resize_to(ir, size_wh), resize_to(vis, size_wh)) for ir, vis in frames]
        before = run_model_only(backend, frames[0::2], warmup=settings["stream_warmup"])
        log_path = work / f"timing_{tag}.jsonl"
        sinks = [VideoSink(work / f"fused_{tag}.mp4", fps=sources["fps"] or 30.0)] if encode else []
        fuser = Fuser(backend=backend)
        t0 = time.perf_counter()
        with stream(ir=sources["ir"], vis=sources["vis"], fuser=fuser, sync="lossless", pairing="index",
                    max_frames=sources["frames"], max_size=settings["stream_max_size"], timing_log=TimingLog(log_path),
                    sinks=sinks) as pipe:
            consumed = sum(1 for _ in pipe)
        wall_s = time.perf_counter() - t0
        summary = pipe.summary
        after = run_model_only(backend, frames[1::2], warmup=0)
        description = backend.describe()
    finally:
        backend.close()
    model_only = summarize_latencies([t / 1e3 for t in before["latencies_ms"] + after["latencies_ms"]])
    rows = read_timing_log(log_path)
    return {
        "variant": spec, "backend": description, "encode": encode, "codec": sinks[0].codec_name if sinks else None,
        "frames": consumed, "wall_s": wall_s,
        "pipeline": {
            "fps": summary.fps, "elapsed_s": summary.elapsed_s, "latency_ms": summary.latency_ms,
            "stage_ms_mean": summary.stage_ms_mean, "stages_ms": summarize_stages(rows),
            "fuse_share": fuse_share(rows, summary.elapsed_s), "stopped_by": summary.stopped_by,
            "processing_size_wh": summary.processing_size_wh,
        },
        "model_only": {**model_only, "before_fps": before["fps"], "after_fps": after["fps"], "frame_indices": indices},
        "pipeline_over_model": summary.fps / model_only["fps"] if model_only["fps"] > 0 else None,
    }
