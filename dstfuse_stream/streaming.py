""":func:`stream`: fused frames of two synchronized sources as a Python iterator.

::

    for frame in dstfuse_stream.stream(ir="ir.mp4", vis="vi.mp4", max_size=320):
        detect(frame.fused)            # uint8 BGR; also frame.index, .timestamp, .ir, .vis

It runs the same threaded pipeline as the ``dstfuse-stream`` command (which is built on it):
readers, pairing, fusion in the iterating thread, and a writer thread when ``sinks`` or a timing log
are given. Leaving the loop (``break``, an exception) stops and joins the threads.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from dstfuse_stream.errors import ConfigError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.pipeline import FusionPipeline, PipelineConfig
from dstfuse_stream.sinks import Sink, TimingLog
from dstfuse_stream.sources import FrameSource, open_source_pair

__all__ = ["stream", "auto_concurrent_frames", "PIPELINE_OPTIONS"]

#: Keyword options of :func:`stream` that configure the pipeline (:class:`PipelineConfig` fields).
PIPELINE_OPTIONS = tuple(f.name for f in dataclasses.fields(PipelineConfig))


def auto_concurrent_frames(
    ir: FrameSource, vis: FrameSource, *, backend: Any = "auto", device: str = "auto", threads: int | None = None
) -> int:
    """``concurrent_frames="auto"``: how many pairs the pipeline fuses at once for these sources.

    2 when both sources are recorded (files, folders) and the fusion runs on a CPU with at least two
    threads: two backends with half the threads each keep the cores busier than one with all of
    them (`dstfuse-bench realtime`, 640x512 on 2 cores: 12.4-14.1 vs 11.0-11.2 frames/s model-only over
    three runs, each frame taking longer), and a recorded job wants throughput. 1 for live sources (cameras, network streams:
    the lowest latency per frame), on a GPU, with a single thread, and for a backend object (one
    instance cannot be copied).
    """
    from dstfuse_stream.backends.precision import default_threads
    from dstfuse_stream.backends.torch_backend import resolve_device

    if not isinstance(backend, str) or ir.is_live or vis.is_live or backend == "tensorrt" or resolve_device(device) != "cpu":
        return 1
    return 2 if (threads or default_threads()) >= 2 else 1


def stream(
    ir: str | os.PathLike[str] | FrameSource | None = None,
    vis: str | os.PathLike[str] | FrameSource | None = None,
    *,
    pairs: str | os.PathLike[str] | None = None,
    split: str | None = None,
    fps: float | None = None,
    timeout_s: float = 10.0,
    fuser: Fuser | None = None,
    weights: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    homography: np.ndarray | None = None,
    output: str = "bgr",
    ir_range: str | tuple[float, float] = "auto",
    work_scale: float | str = "auto",
    threads: int | None = None,
    concurrent_frames: int | str = "auto",
    sinks: list[Sink] | tuple[Sink, ...] = (),
    timing_log: TimingLog | None = None,
    **options: Any,
) -> FusionPipeline:
    """Open two sources and return the running-on-iteration :class:`FusionPipeline` over them.

    Args:
        ir, vis: what the CLI's ``--ir``/``--vis`` accept (``camN``, ``/dev/videoN``, a URL, a video
            file, an image folder) or ready :class:`~dstfuse_stream.sources.FrameSource` objects.
        pairs, split: a recorded pairs root instead (``ROOT/ir`` + ``ROOT/vi``, or LLVIP's layout).
        fps: frame rate of image folders; timeout_s: camera/stream open and read timeout.
        fuser: a ready :class:`Fuser` (the caller keeps and closes it); otherwise one is built from
            ``weights``, ``backend``, ``device``, ``precision``, ``homography``, ``output``,
            ``ir_range`` (16-bit IR: ``"auto"`` running gain, ``"frame"``, or ``(lo, hi)``),
            ``work_scale``, ``threads``, ``concurrent_frames`` and closed when the iteration ends.
            ``concurrent_frames="auto"``: 2 for recorded sources on a CPU, else 1
            (:func:`auto_concurrent_frames`).
        sinks, timing_log: outputs written by a writer thread (each frame is also yielded).
        options: :class:`PipelineConfig` fields (:data:`PIPELINE_OPTIONS`): ``sync``, ``pairing``,
            ``tolerance_s``, ``queue_size``, ``max_frames``, ``resize_wh``, ``max_size``,
            ``reconnect``, ...

    Iterate the result for :class:`~dstfuse_stream.fuser.FusedFrame` items (``.index``,
    ``.timestamp``, ``.ir``, ``.vis``, ``.fused``; arrays shared with the writer when there are
    ``sinks``: copy before drawing on them). After the loop, ``.summary`` holds the run's
    :class:`~dstfuse_stream.stats.PipelineSummary`; ``.close()`` (or a ``with`` block) ends it early.
    """
    unknown = sorted(set(options) - set(PIPELINE_OPTIONS))
    if unknown:
        raise ConfigError(f"stream: unknown option(s) {unknown}; expected some of {list(PIPELINE_OPTIONS)}")
    config = PipelineConfig(**options)
    builds_fuser = (weights is not None or homography is not None or threads is not None or concurrent_frames != "auto"
                    or (backend, device, precision, output, work_scale, ir_range) != ("auto", "auto", "auto", "bgr", "auto", "auto"))
    if fuser is not None and builds_fuser:
        raise ConfigError("stream: give either fuser= or the arguments to build one (weights, backend, ...), not both")
    ir_src, vis_src = open_source_pair(ir, vis, pairs=pairs, split=split, fps=fps, timeout_s=timeout_s)
    own = fuser is None
    try:
        if own:
            if concurrent_frames == "auto":
                concurrent_frames = auto_concurrent_frames(ir_src, vis_src, backend=backend, device=device, threads=threads)
            fuser = Fuser(weights, backend, device, precision, homography=homography, output=output, ir_range=ir_range,
                          work_scale=work_scale, threads=threads, concurrent_frames=concurrent_frames)
        return FusionPipeline(ir_src, vis_src, fuser, sinks=sinks, config=config, timing_log=timing_log, close_fuser=own)
    except BaseException:
        for closable in (ir_src, vis_src, *(sinks or ()), timing_log, fuser if own else None):
            if closable is not None:
                closable.close()
        raise
