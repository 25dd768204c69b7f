"""The streaming pipeline's orchestrator: two source readers -> pairing + fusion -> one writer.

::

    SourceReader "ir"  --(StopAwareQueue)--\\
                                             +--> the iterating thread: pair, Fuser.process --> yield
    SourceReader "vis" --(StopAwareQueue)--/                 |
                                                      (StopAwareQueue)
                                                              v
                                        FrameWriter thread: sinks, timing log, RunStats

* Iterating a :class:`FusionPipeline` runs it; fusion happens in the iterating thread, which owns
  the device. :meth:`FusionPipeline.run` iterates to the end and returns the summary (the CLI);
  :func:`dstfuse_stream.stream` hands the iterator to the user.
* ``sync`` per stream (:func:`~dstfuse_stream.workers.resolve_sync`): ``lossless`` (a reader blocks
  when its queue is full; nothing is lost: files), ``latest`` (the oldest queued frame is dropped:
  live sources lag at most ``queue_size`` frames), ``auto`` (``latest`` for live sources).
* Stopping: a stream ends, ``max_frames``, :meth:`FusionPipeline.request_stop` (signal-safe), an
  error, or the consumer leaving its loop (``break``, an exception, ``close()``). In every case the
  readers are stopped and joined, everything already fused is written, and the outputs are closed.
* Errors: a reader error ends that stream (frames already read are still fused); a fusion or writer
  error stops everything. The first error is re-raised in the iterating thread after the shutdown
  (:attr:`FusionPipeline.summary` is set either way). A lost live source is reopened by its reader
  ``reconnect`` times first; a run that ends without fusing a frame is an error saying why nothing
  paired. Before anything runs, the outputs are checked against the inputs
  (:func:`~dstfuse_stream.outputs.check_outputs`) and a pair that can never be paired is refused
  (:func:`~dstfuse_stream.pairing.check_pairable`).
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from dstfuse_stream.errors import SourceLostError, StreamMismatchError
from dstfuse_stream.fuser import FusedFrame, Fuser
from dstfuse_stream.geometry import processing_size_wh
from dstfuse_stream.outputs import check_outputs, sink_outputs
from dstfuse_stream.pairing import FramePair, StreamPairer, check_pairable, default_tolerance_s, length_mismatch, resolve_pairing
from dstfuse_stream.pipeline_config import PipelineConfig
from dstfuse_stream.sinks import Sink, TimingLog
from dstfuse_stream.sources import FrameSource
from dstfuse_stream.stats import PipelineSummary, RunStats
from dstfuse_stream.workers import END, STOPPED, SYNC_MODES, Failures, SourceReader, StopSignal, resolve_sync, stop_readers
from dstfuse_stream.writer import FrameWriter

__all__ = ["PipelineConfig", "PipelineSummary", "FusionPipeline", "resolve_sync", "SYNC_MODES"]

logger = logging.getLogger(__name__)


class FusionPipeline:
    """Fuse two frame sources, yielding each :class:`~dstfuse_stream.fuser.FusedFrame` (and writing
    it to ``sinks``) from reader/fusion/writer threads. It owns and closes the sources, sinks and
    timing log (and the fuser when ``close_fuser``). It runs once::

        with FusionPipeline(ir_src, vis_src, Fuser(), sinks=[VideoSink("out.mp4")]) as pipe:
            summary = pipe.run()        # or: for frame in pipe: ...

    ``fuser`` may also be a backend object (wrapped in ``Fuser(backend=...)``).
    """

    def __init__(
        self,
        ir_source: FrameSource,
        vis_source: FrameSource,
        fuser: Fuser | Any,
        *,
        sinks: Sequence[Sink] = (),
        config: PipelineConfig | None = None,
        timing_log: TimingLog | None = None,
        close_fuser: bool = False,
    ) -> None:
        self.fuser = fuser if isinstance(fuser, Fuser) else Fuser(backend=fuser)
        self.config = cfg = config or PipelineConfig()
        self.sources = {"ir": ir_source, "vis": vis_source}
        self.sinks, self.timing_log, self._close_fuser = list(sinks), timing_log, close_fuser
        live = ir_source.is_live or vis_source.is_live
        self.sync = {role: resolve_sync(cfg.sync, live=src.is_live) for role, src in self.sources.items()}
        self.pairing = resolve_pairing(cfg.pairing, live=live, ir_fps=ir_source.fps, vis_fps=vis_source.fps)
        tolerance = cfg.tolerance_s if cfg.tolerance_s is not None else default_tolerance_s(ir_source.fps, vis_source.fps)
        self.tolerance_s = None if self.pairing == "index" else tolerance
        check_pairable(ir_source, vis_source, pairing=self.pairing)
        check_outputs(sink_outputs(self.sinks, timing_log), [ir_source, vis_source])
        self._stop, self._failures = StopSignal(), Failures()
        background = {role: cfg.background_readers and not src.is_live for role, src in self.sources.items()}
        for role, src in self.sources.items():
            if background[role]:  # a decoder's own threads would preempt the fusion's like any other thread
                src.set_decoder_threads(1)
        self.readers = {
            role: SourceReader(src, role=role, sync=self.sync[role], queue_size=cfg.queue_size, stop=self._stop,
                               poll_s=cfg.poll_s, failures=self._failures, reconnect=cfg.reconnect,
                               backoff_s=cfg.reconnect_backoff_s, background=background[role])
            for role, src in self.sources.items()
        }
        self.stats = RunStats(progress=cfg.progress, progress_total=self._expected_frames())
        self.writer = None
        if self.sinks or timing_log is not None:
            self.writer = FrameWriter(self.sinks, timing_log, self.stats, queue_size=cfg.queue_size, poll_s=cfg.poll_s,
                                      failures=self._failures, on_error=self._stop.set, background=cfg.background_writer)
        self._pairer = StreamPairer(policy=self.pairing, tolerance_s=self.tolerance_s)
        self._state, self._stopped_by, self._iteration = "new", None, None
        #: the :class:`PipelineSummary` of the run, set when it ends (also when it raises)
        self.summary: PipelineSummary | None = None

    def _expected_frames(self) -> int | None:
        counts = [s.frame_count for s in self.sources.values()]
        total = min(counts) if None not in counts else None
        limit = self.config.max_frames
        return limit if total is None else total if limit is None else min(total, limit)

    def request_stop(self) -> None:
        """Finish the current frame, write what was fused, close the outputs. Signal-handler safe."""
        self._stop.request()

    def run(self) -> PipelineSummary:
        """Iterate to the end; return the summary (the first error is re-raised after the shutdown)."""
        for _ in self:
            pass
        assert self.summary is not None
        return self.summary

    def __iter__(self) -> Iterator[FusedFrame]:
        if self._state != "new":
            raise RuntimeError("a FusionPipeline runs once")
        self._state = "running"
        iteration = self._iterate()
        self._iteration = weakref.ref(iteration)
        return iteration

    def _iterate(self) -> Iterator[FusedFrame]:
        logger.info("pipeline: sync ir=%s vis=%s, pairing %s (tolerance %s s), queue %d",
                    self.sync["ir"], self.sync["vis"], self.pairing, self.tolerance_s, self.config.queue_size)
        try:
            self.stats.start()
            if self.writer is not None:
                self.writer.start()
            for reader in self.readers.values():
                reader.start()
            yield from self._fused_frames()
        except GeneratorExit:
            self._stopped_by = self._stopped_by or "closed"
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the shutdown
            self._failures.record("fuse", exc)
        finally:
            self._shutdown()
        if self._failures.first is not None:
            raise self._failures.first[1]

    def _fused_frames(self) -> Iterator[FusedFrame]:
        max_frames = self.config.max_frames
        in_flight = self.fuser.concurrent_frames  # Fuser(concurrent_frames=N): N pairs fused at once
        while not self._stop.is_set():
            if max_frames is not None and self.stats.frames_fused >= max_frames:
                self._stopped_by = "max_frames"
                return
            wanted = in_flight if max_frames is None else min(in_flight, max_frames - self.stats.frames_fused)
            t0 = time.perf_counter()
            pairs = []
            while len(pairs) < wanted:
                pair = self._next_pair()
                if pair is None:
                    break
                pairs.append(pair)
            if not pairs:
                if self.stats.frames_fused == 0 and not self._stop.is_set() and self._failures.first is None:
                    read = {r: self.readers[r].read_count for r in ("ir", "vis")}
                    raise StreamMismatchError(f"no frame was fused: read ir {read['ir']} and vis {read['vis']} frames, "
                                              f"but {self._pairer.why_no_pairs()}")
                return
            for frame in self._fuse(pairs, pair_ms=(time.perf_counter() - t0) * 1000.0 / len(pairs)):
                if self.writer is None:
                    self.stats.on_written(frame, 0.0)
                elif not self.writer.put(frame):
                    logger.debug("writer gone; fusion stops")
                    return
                yield frame

    def _next_pair(self) -> FramePair | None:
        pairer = self._pairer
        while True:
            role = pairer.need()
            if role is not None:
                item = self.readers[role].take()
                if item is STOPPED:
                    return None
                pairer.push(role, None if item is END else item)
                continue
            pair = pairer.pop()
            if pair is not None or pairer.done:
                return pair
            if pairer.need() is None:
                raise RuntimeError("pairing made no progress (bug)")

    def _fuse(self, pairs: list[FramePair], *, pair_ms: float) -> list[FusedFrame]:
        cfg = self.config
        sizes = [processing_size_wh(p.vis.size_wh, resize_wh=cfg.resize_wh, max_size=cfg.max_size) for p in pairs]
        frames = self.fuser.process_many([(p.ir.image, p.vis.image, size) for p, size in zip(pairs, sizes)])
        for pair, frame in zip(pairs, frames):
            ir, vis = pair.ir, pair.vis
            frame.index, frame.timestamp, frame.name = pair.index, vis.timestamp_s, vis.name
            frame.captured_s = max(ir.captured_s, vis.captured_s)
            frame.timings = {
                "index": pair.index, "ir_index": ir.index, "vis_index": vis.index,
                "ir_timestamp_s": ir.timestamp_s, "vis_timestamp_s": vis.timestamp_s,
                "lag_frames": max(ir.lag_frames, vis.lag_frames), "read_ms": max(ir.read_ms, vis.read_ms),
                "read_ir_ms": ir.read_ms, "read_vis_ms": vis.read_ms, "pair_ms": pair_ms, **frame.timings,
            }
            self.stats.on_fused(frame)
        return frames

    def _shutdown(self) -> None:
        self._state = "done"
        if self._stop.requested and self._stopped_by is None:
            self._stopped_by = "stop"
            logger.info("stop requested: finished the current frame")
        self._stop.set()
        cfg = self.config
        if self.writer is not None:
            self.writer.finish(timeout_s=cfg.writer_timeout_s, join_timeout_s=cfg.join_timeout_s)
        stop_readers(list(self.readers.values()), cfg.join_timeout_s)
        if self._close_fuser:
            self.fuser.close()
        self.stats.stop()
        first = self._failures.first
        stopped_by = self._stopped_by or "end"
        if first is not None:
            stopped_by = "source_lost" if isinstance(first[1], SourceLostError) else "error"
        readers, pending, src = self.readers, self._pairer.pending(), self.sources
        self.summary = self.stats.summary(
            frames_read={r: readers[r].read_count for r in readers}, queue_dropped={r: readers[r].queue.dropped for r in readers},
            pairing_stats=self._pairer.stats, stopped_by=stopped_by, error=self._failures.describe_first(),
            resolved={"sync": self.sync, "pairing": self.pairing, "tolerance_s": self.tolerance_s},
            unused={r: readers[r].unused + pending[r] for r in readers}, reconnects={r: readers[r].reconnects for r in readers},
            length_mismatch=length_mismatch(self._pairer.stats, live=any(s.is_live for s in src.values()),
                                            lossless=set(self.sync.values()) == {"lossless"},
                                            frame_counts={r: src[r].frame_count for r in src}),
        )

    def close(self) -> None:
        """Stop and release everything (during or after iteration, or instead of it). Safe to call twice."""
        self.request_stop()
        iteration = self._iteration() if self._iteration is not None else None
        if iteration is not None and inspect.getgeneratorstate(iteration) == inspect.GEN_SUSPENDED:
            iteration.close()
        elif self._state != "done":  # never iterated
            self._state = "done"
            self._stop.set()
            if self.writer is not None:
                self.writer.close_outputs()
            stop_readers(list(self.readers.values()), 0.0)
            if self._close_fuser:
                self.fuser.close()

    def __enter__(self) -> "FusionPipeline":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
