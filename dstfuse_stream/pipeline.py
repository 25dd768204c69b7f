"""The threaded streaming pipeline: two readers -> pairing + fusion -> one writer.

::

    reader "ir"  --(bounded queue)--\\
                                     +--> caller's thread: pair, preprocess, fuse, postprocess
    reader "vis" --(bounded queue)--/                 |
                                              (bounded queue)
                                                      v
                                        writer thread: sinks, timing log, metrics

* Fusion runs in the thread that calls :meth:`FusionPipeline.run`: that thread owns the device.
* ``sync`` per stream: ``lossless`` (reader blocks when its queue is full; no frame lost: files),
  ``latest`` (reader drops the oldest queued frame: live sources keep a lag of at most
  ``queue_size`` frames), ``auto`` (``latest`` for live sources, ``lossless`` otherwise).
* One stop event is shared by all stages; every ``put``/``get`` uses a timeout and rechecks it, so
  no stage stays blocked on a queue (supervision's bug: a failing callback left the reader stuck
  on a full queue). End of stream is a private sentinel.
* Errors: a reader error ends that stream (frames already read are still fused), then is
  re-raised; a fusion error stops the readers at once; a writer error stops everything. The first
  error is re-raised in the caller after the shutdown. In every case the writer closes the sinks,
  so what was already fused is written and the video plays.
* :meth:`FusionPipeline.request_stop` (safe to call from a signal handler: it only sets a flag)
  finishes the frame being fused, writes every fused frame and closes the outputs.

The fuser is any object with ``fuse(ir, vis)`` taking two float32 ``(H, W)`` arrays in [0, 1] (IR
and visible luma) and returning the fused luma ``(H, W)`` as float in [0, 1] or uint8, e.g. a
:class:`dstfuse_stream.backends.FusionBackend`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from dstfuse_stream.colour import float_to_uint8, merge_luma, split_luma
from dstfuse_stream.errors import BackendError, ConfigError, DSTFuseError
from dstfuse_stream.imageio import to_gray
from dstfuse_stream.metrics import TemporalStability
from dstfuse_stream.pairing import (
    FramePair,
    StreamPairer,
    align_ir,
    default_tolerance_s,
    processing_size_wh,
    resize_to,
    resolve_pairing,
)
from dstfuse_stream.sinks import FusedFrame, Sink, TimingLog
from dstfuse_stream.sources import FrameSource

__all__ = [
    "Fuser",
    "PipelineConfig",
    "PipelineSummary",
    "PreparedPair",
    "FusionPipeline",
    "prepare_pair",
    "finish_fused",
    "resolve_sync",
    "SYNC_MODES",
]

logger = logging.getLogger(__name__)

SYNC_MODES = ("auto", "lossless", "latest")
_STAGES = ("pair_ms", "preprocess_ms", "fuse_ms", "postprocess_ms", "encode_ms")


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_END = _Sentinel("end of stream")
_STOPPED = _Sentinel("stopped")


class Fuser(Protocol):
    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray: ...


def resolve_sync(mode: str, *, live: bool) -> str:
    """``auto`` -> ``latest`` for a live source, ``lossless`` otherwise."""
    if mode not in SYNC_MODES:
        raise ConfigError(f"sync {mode!r}: expected one of {list(SYNC_MODES)}")
    if mode == "auto":
        return "latest" if live else "lossless"
    return mode


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one :class:`FusionPipeline` run.

    Attributes:
        sync: ``auto``, ``lossless`` or ``latest`` (see the module docstring).
        pairing: ``auto``, ``index`` or ``timestamp`` (see :mod:`dstfuse_stream.pairing`).
        tolerance_s: timestamp pairing tolerance; ``None`` = half the slower stream's frame interval.
        queue_size: capacity of each reader queue and of the writer queue.
        max_frames: stop after this many fused frames (``None``: until a stream ends).
        resize_wh: fuse at exactly this size (``W, H``).
        max_size: else shrink so the longer side is at most this (aspect kept, even sides).
        gray: write the fused luma only (default: fused Y + visible chroma).
        poll_s: timeout of every queue ``get``/``put`` before the stop event is rechecked.
        join_timeout_s: how long the shutdown waits for each reader thread.
        writer_timeout_s: how long the shutdown waits for the writer to flush its queue.
        progress: show a tqdm progress bar (frames written, fps) on stderr.
    """

    sync: str = "auto"
    pairing: str = "auto"
    tolerance_s: float | None = None
    queue_size: int = 4
    max_frames: int | None = None
    resize_wh: tuple[int, int] | None = None
    max_size: int | None = None
    gray: bool = False
    poll_s: float = 0.05
    join_timeout_s: float = 5.0
    writer_timeout_s: float = 60.0
    progress: bool = False

    def __post_init__(self) -> None:
        resolve_sync(self.sync, live=False)
        resolve_pairing(self.pairing, live=False, ir_fps=None, vis_fps=None)
        if self.queue_size < 1:
            raise ConfigError(f"queue_size: expected >= 1, got {self.queue_size}")
        if self.max_frames is not None and self.max_frames < 0:
            raise ConfigError(f"max_frames: expected >= 0, got {self.max_frames}")
        if self.tolerance_s is not None and self.tolerance_s < 0:
            raise ConfigError(f"tolerance_s: expected >= 0, got {self.tolerance_s}")
        if self.max_size is not None and self.max_size < 2:
            raise ConfigError(f"max_size: expected >= 2, got {self.max_size}")
        if self.resize_wh is not None:
            w, h = self.resize_wh
            if w < 1 or h < 1:
                raise ConfigError(f"resize_wh: expected positive sides, got {self.resize_wh}")
        if self.poll_s <= 0:
            raise ConfigError(f"poll_s: expected > 0, got {self.poll_s}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineSummary:
    """What a run did (printed by the CLI, written as JSON next to the output).

    ``stopped_by`` is ``"end"`` (a stream ended), ``"max_frames"``, ``"stop"`` (request_stop /
    signal) or ``"error"``. ``unmatched`` counts frames the pairing dropped; ``queue_dropped``
    frames the ``latest`` sync policy dropped. Latencies and stage times are in milliseconds.
    """

    frames_read: dict[str, int]
    frames_paired: int
    unmatched: dict[str, int]
    queue_dropped: dict[str, int]
    frames_fused: int
    frames_written: int
    elapsed_s: float
    fps: float
    latency_ms: dict[str, float]
    stage_ms_mean: dict[str, float]
    temporal_stability: dict[str, float]
    stopped_by: str
    ended_first: str | None
    length_mismatch: str | None
    sync: dict[str, str]
    pairing: str
    tolerance_s: float | None
    processing_size_wh: list[int] | None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A few human-readable lines."""
        lat = self.latency_ms
        ts = self.temporal_stability
        lines = [
            f"frames read: ir {self.frames_read['ir']}, vis {self.frames_read['vis']}; "
            f"paired {self.frames_paired}; fused {self.frames_fused}; written {self.frames_written}",
            f"dropped: unmatched ir {self.unmatched['ir']} / vis {self.unmatched['vis']}, "
            f"queue (latest) ir {self.queue_dropped['ir']} / vis {self.queue_dropped['vis']}",
            f"throughput: {self.fps:.2f} fps over {self.elapsed_s:.2f} s; latency p50 {lat['p50']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms",
            "stage means: " + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in self.stage_ms_mean.items()),
            f"temporal stability: fused MAD {ts['fused_mad']:.3f}, source MAD {ts['source_mad']:.3f}, "
            f"ratio {ts['ratio']:.3f} ({ts['steps']} steps)",
            f"sync ir={self.sync['ir']} vis={self.sync['vis']}, pairing {self.pairing}; stopped by {self.stopped_by}",
        ]
        if self.length_mismatch:
            lines.append(f"length mismatch: the {self.length_mismatch} stream is longer; stopped at the shorter")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# per-pair processing (pure functions, used by the pipeline's fusion thread)


@dataclass
class PreparedPair:
    """A pair on one grid at processing size: IR luma, visible image, its luma and chroma."""

    ir_y: np.ndarray
    vis: np.ndarray
    vis_y: np.ndarray
    crcb: np.ndarray | None


def prepare_pair(
    ir: np.ndarray,
    vis: np.ndarray,
    *,
    homography: np.ndarray | None = None,
    resize_wh: tuple[int, int] | None = None,
    max_size: int | None = None,
) -> PreparedPair:
    """IR -> luma, registered/resized onto the visible grid; both at the processing size."""
    vis_wh = (int(vis.shape[1]), int(vis.shape[0]))
    size_wh = processing_size_wh(vis_wh, resize_wh=resize_wh, max_size=max_size)
    ir_y = align_ir(to_gray(ir), vis_wh, size_wh=size_wh, homography=homography)
    vis = resize_to(vis, size_wh)
    if vis.ndim == 3:
        vis_y, crcb = split_luma(vis)
    else:
        vis_y, crcb = vis, None
    return PreparedPair(ir_y=ir_y, vis=vis, vis_y=vis_y, crcb=crcb)


def finish_fused(fused: object, prepared: PreparedPair, *, gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fuser output -> ``(fused_y uint8, output image)``; colour keeps the visible CrCb."""
    arr = np.asarray(fused)
    if arr.ndim == 4 and arr.shape[:2] == (1, 1):
        arr = arr[0, 0]
    if arr.shape != prepared.vis_y.shape:
        raise BackendError(f"fuser returned shape {arr.shape}, expected {prepared.vis_y.shape}")
    if arr.dtype == np.uint8:
        fused_y = arr
    elif np.issubdtype(arr.dtype, np.floating):
        fused_y = float_to_uint8(arr)
    else:
        raise BackendError(f"fuser returned dtype {arr.dtype}, expected float in [0, 1] or uint8")
    if gray or prepared.crcb is None:
        return fused_y, fused_y
    return fused_y, merge_luma(fused_y, prepared.crcb)


# ---------------------------------------------------------------------------------------------


class FusionPipeline:
    """Fuse two frame sources into sinks with reader/fusion/writer threads.

    The pipeline owns the sources, sinks and timing log: it closes them. Run it once::

        with FusionPipeline(ir_src, vis_src, backend, sinks=[VideoSink("out.mp4")]) as pipe:
            summary = pipe.run()

    Args:
        ir_source, vis_source: frame sources.
        fuser: object with ``fuse(ir, vis)`` (see the module docstring).
        sinks: outputs written by the writer thread.
        config: :class:`PipelineConfig`.
        homography: 3x3 IR -> visible matrix (see :mod:`dstfuse_stream.registration`).
        timing_log: per-frame timing rows.
    """

    def __init__(
        self,
        ir_source: FrameSource,
        vis_source: FrameSource,
        fuser: Fuser,
        *,
        sinks: list[Sink] | tuple[Sink, ...] = (),
        config: PipelineConfig | None = None,
        homography: np.ndarray | None = None,
        timing_log: TimingLog | None = None,
    ) -> None:
        if not callable(getattr(fuser, "fuse", None)):
            raise ConfigError(f"fuser: expected an object with fuse(ir, vis), got {type(fuser).__name__}")
        self.config = config or PipelineConfig()
        self.sources = {"ir": ir_source, "vis": vis_source}
        self.fuser = fuser
        self.sinks = list(sinks)
        self.homography = homography
        self.timing_log = timing_log
        live = ir_source.is_live or vis_source.is_live
        self.sync = {role: resolve_sync(self.config.sync, live=src.is_live) for role, src in self.sources.items()}
        self.pairing = resolve_pairing(self.config.pairing, live=live, ir_fps=ir_source.fps, vis_fps=vis_source.fps)
        self.tolerance_s = (
            None
            if self.pairing == "index"
            else self.config.tolerance_s
            if self.config.tolerance_s is not None
            else default_tolerance_s(ir_source.fps, vis_source.fps)
        )
        q = self.config.queue_size
        self._queues = {"ir": queue.Queue(maxsize=q), "vis": queue.Queue(maxsize=q)}
        self._out_q: queue.Queue = queue.Queue(maxsize=q)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._stop_requested = False
        self._errors: list[tuple[str, BaseException]] = []
        self._errors_lock = threading.Lock()
        self._readers: dict[str, threading.Thread] = {}
        self._writer: threading.Thread | None = None
        self._started = False
        self._finished = False
        self._read_count = {"ir": 0, "vis": 0}
        self._queue_dropped = {"ir": 0, "vis": 0}
        self._pairer: StreamPairer | None = None
        self._frames_fused = 0
        self._frames_written = 0
        self._stopped_by: str | None = None
        self._latencies = array("d")
        self._stage_sums = dict.fromkeys(_STAGES, 0.0)
        self._stability = TemporalStability()
        self._size_wh: tuple[int, int] | None = None
        self._t_start = 0.0
        self._t_end = 0.0
        self._progress = None
        #: the :class:`PipelineSummary` of the run, also set when :meth:`run` raises
        self.summary: PipelineSummary | None = None

    # -- control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current frame, write what was fused, close outputs. Signal-handler safe."""
        self._stop_requested = True

    def _stopping(self) -> bool:
        return self._stop_requested or self._stop.is_set()

    def _check_stop_request(self) -> None:
        if self._stop_requested and not self._stop.is_set():
            self._stopped_by = self._stopped_by or "stop"
            logger.info("stop requested: finishing the current frame")
            self._stop.set()

    def _fail(self, stage: str, exc: BaseException, *, stop: bool = True) -> None:
        with self._errors_lock:
            self._errors.append((stage, exc))
        if isinstance(exc, Exception) and not isinstance(exc, DSTFuseError):
            logger.error("%s stage failed", stage, exc_info=exc)
        else:
            logger.debug("%s stage failed: %s", stage, exc)
        if stop:
            self._stopped_by = "error"
            self._stop.set()

    # -- threads ----------------------------------------------------------------------------

    def _put_in(self, role: str, item: object) -> bool:
        q = self._queues[role]
        poll = self.config.poll_s
        if self.sync[role] == "latest":
            while not self._stopping():
                try:
                    q.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        old = q.get_nowait()
                    except queue.Empty:
                        continue
                    if old is not _END:
                        self._queue_dropped[role] += 1
            return False
        while not self._stopping():
            try:
                q.put(item, timeout=poll)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, role: str) -> None:
        source = self.sources[role]
        try:
            for frame in source.frames():
                self._read_count[role] += 1
                if not self._put_in(role, frame):
                    return
            self._put_in(role, _END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            self._fail(f"read {role}", exc, stop=False)
            self._put_in(role, _END)
        finally:
            try:
                source.close()
            except Exception:  # noqa: BLE001
                logger.warning("closing %s failed", source, exc_info=True)

    def _write(self) -> None:
        poll = self.config.poll_s
        try:
            while True:
                try:
                    item = self._out_q.get(timeout=poll)
                except queue.Empty:
                    if self._abort.is_set():
                        return
                    continue
                if item is _END:
                    return
                self._write_one(item)
        except BaseException as exc:  # noqa: BLE001
            self._fail("write", exc)
            self._abort.set()
        finally:
            self._close_outputs()

    def _write_one(self, item: FusedFrame) -> None:
        t0 = time.perf_counter()
        for sink in self.sinks:
            sink.write(item)
        encode_ms = (time.perf_counter() - t0) * 1000.0
        latency_ms = (time.monotonic() - item.captured_s) * 1000.0
        self._stability.update(item.ir, item.vis_y, item.fused_y)
        row = {**item.timings, "encode_ms": encode_ms, "latency_ms": latency_ms}
        self._stage_sums["encode_ms"] += encode_ms
        self._latencies.append(latency_ms)
        if self.timing_log is not None:
            self.timing_log.write(row)
        self._frames_written += 1
        if self._progress is not None:
            self._progress.update(1)

    def _close_outputs(self) -> None:
        for closable in [*self.sinks, self.timing_log]:
            if closable is None:
                continue
            try:
                closable.close()
            except BaseException as exc:  # noqa: BLE001
                self._fail("close output", exc)
        if self._progress is not None:
            self._progress.close()

    # -- fusion (caller's thread) -----------------------------------------------------------

    def _take(self, role: str) -> object:
        q = self._queues[role]
        reader = self._readers[role]
        while True:
            self._check_stop_request()
            if self._stop.is_set():
                return _STOPPED
            try:
                item = q.get(timeout=self.config.poll_s)
            except queue.Empty:
                if not reader.is_alive() and q.empty():
                    return _END
                continue
            if item is _END:
                return _END
            lag = self._read_count[role] - 1 - item.index
            return replace(item, lag_frames=max(0, lag))

    def _next_pair(self, pairer: StreamPairer) -> FramePair | None:
        while True:
            role = pairer.need()
            if role is not None:
                item = self._take(role)
                if item is _STOPPED:
                    return None
                pairer.push(role, None if item is _END else item)
                continue
            pair = pairer.pop()
            if pair is not None:
                return pair
            if pairer.done:
                self._stopped_by = self._stopped_by or "end"
                return None
            if pairer.need() is None:
                raise RuntimeError("pairing made no progress (bug)")

    def _process(self, pair: FramePair, pair_ms: float) -> FusedFrame:
        cfg = self.config
        t0 = time.perf_counter()
        prepared = prepare_pair(
            pair.ir.image, pair.vis.image, homography=self.homography, resize_wh=cfg.resize_wh, max_size=cfg.max_size
        )
        ir_f = prepared.ir_y.astype(np.float32) / np.float32(255.0)
        vis_f = prepared.vis_y.astype(np.float32) / np.float32(255.0)
        t1 = time.perf_counter()
        fused = self.fuser.fuse(ir_f, vis_f)
        t2 = time.perf_counter()
        fused_y, output = finish_fused(fused, prepared, gray=cfg.gray)
        t3 = time.perf_counter()
        if self._size_wh is None:
            self._size_wh = (int(fused_y.shape[1]), int(fused_y.shape[0]))
        timings = {
            "index": pair.index,
            "ir_index": pair.ir.index,
            "vis_index": pair.vis.index,
            "ir_timestamp_s": pair.ir.timestamp_s,
            "vis_timestamp_s": pair.vis.timestamp_s,
            "lag_frames": max(pair.ir.lag_frames, pair.vis.lag_frames),
            "read_ms": max(pair.ir.read_ms, pair.vis.read_ms),
            "read_ir_ms": pair.ir.read_ms,
            "read_vis_ms": pair.vis.read_ms,
            "pair_ms": pair_ms,
            "preprocess_ms": (t1 - t0) * 1000.0,
            "fuse_ms": (t2 - t1) * 1000.0,
            "postprocess_ms": (t3 - t2) * 1000.0,
        }
        for key in ("pair_ms", "preprocess_ms", "fuse_ms", "postprocess_ms"):
            self._stage_sums[key] += timings[key]
        return FusedFrame(
            index=pair.index,
            ir=prepared.ir_y,
            vis=prepared.vis,
            vis_y=prepared.vis_y,
            fused_y=fused_y,
            output=output,
            timestamp_s=pair.vis.timestamp_s,
            name=pair.vis.name,
            captured_s=max(pair.ir.captured_s, pair.vis.captured_s),
            timings=timings,
        )

    def _put_out(self, item: object, *, deadline: float | None = None) -> bool:
        writer = self._writer
        while writer is not None and writer.is_alive() and not self._abort.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            try:
                self._out_q.put(item, timeout=self.config.poll_s)
                return True
            except queue.Full:
                continue
        return False

    def _fusion_loop(self) -> None:
        pairer = self._pairer = StreamPairer(policy=self.pairing, tolerance_s=self.tolerance_s)
        max_frames = self.config.max_frames
        while True:
            self._check_stop_request()
            if self._stop.is_set():
                break
            if max_frames is not None and self._frames_fused >= max_frames:
                self._stopped_by = "max_frames"
                break
            t0 = time.perf_counter()
            pair = self._next_pair(pairer)
            if pair is None:
                break
            item = self._process(pair, (time.perf_counter() - t0) * 1000.0)
            if not self._put_out(item):
                logger.debug("writer gone; fusion stops")
                break
            self._frames_fused += 1

    # -- run / shutdown ---------------------------------------------------------------------

    def _progress_total(self) -> int | None:
        counts = [s.frame_count for s in self.sources.values()]
        total = min(counts) if all(c is not None for c in counts) else None
        if self.config.max_frames is not None:
            total = self.config.max_frames if total is None else min(total, self.config.max_frames)
        return total

    def run(self) -> PipelineSummary:
        """Run to the end of the shorter stream, ``max_frames``, a stop request or an error.

        Returns the summary; on error the first error is re-raised after every thread has
        stopped and the outputs are closed (:attr:`summary` is still set).
        """
        if self._started:
            raise RuntimeError("FusionPipeline.run() can only be called once")
        self._started = True
        logger.info(
            "pipeline: sync ir=%s vis=%s, pairing %s (tolerance %s s), queue %d",
            self.sync["ir"], self.sync["vis"], self.pairing, self.tolerance_s, self.config.queue_size,
        )
        if self.config.progress:
            from tqdm import tqdm

            self._progress = tqdm(total=self._progress_total(), unit="frame", dynamic_ncols=True, leave=True)
        self._t_start = time.perf_counter()
        try:
            self._writer = threading.Thread(target=self._write, name="dstfuse-writer", daemon=True)
            self._writer.start()
            for role in ("ir", "vis"):
                thread = threading.Thread(target=self._read, args=(role,), name=f"dstfuse-reader-{role}", daemon=True)
                self._readers[role] = thread
                thread.start()
            self._fusion_loop()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            self._fail("fuse", exc)
        finally:
            self._shutdown()
        self.summary = self._summarise()
        if self._errors:
            stage, exc = self._errors[0]
            logger.debug("re-raising the %s error", stage)
            raise exc
        return self.summary

    def _shutdown(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        writer = self._writer
        if writer is not None and writer.is_alive():
            deadline = time.monotonic() + self.config.writer_timeout_s
            if not self._put_out(_END, deadline=deadline):
                self._abort.set()
            writer.join(timeout=max(0.0, deadline - time.monotonic()))
            if writer.is_alive():
                logger.error("writer did not finish within %.0f s; abandoning it", self.config.writer_timeout_s)
                self._abort.set()
                writer.join(timeout=self.config.join_timeout_s)
        elif writer is None:
            self._close_outputs()
        for role, q in self._queues.items():
            _drain(q)
        for role, thread in self._readers.items():
            thread.join(timeout=self.config.join_timeout_s)
            if thread.is_alive():
                logger.warning("%s reader did not stop within %.1f s (blocked in its source)", role, self.config.join_timeout_s)
        for role, source in self.sources.items():
            if role not in self._readers:
                source.close()
        self._t_end = time.perf_counter()

    def _summarise(self) -> PipelineSummary:
        elapsed = max(self._t_end - self._t_start, 1e-9)
        lat = np.frombuffer(self._latencies, dtype=np.float64) if len(self._latencies) else np.empty(0)
        if lat.size:
            latency = {
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
                "mean": float(lat.mean()),
                "max": float(lat.max()),
            }
        else:
            latency = dict.fromkeys(("p50", "p99", "mean", "max"), float("nan"))
        stage_counts = {k: self._frames_written if k == "encode_ms" else self._frames_fused for k in _STAGES}
        stage_mean = {k: (self._stage_sums[k] / stage_counts[k] if stage_counts[k] else float("nan")) for k in _STAGES}
        stats = self._pairer.stats if self._pairer is not None else None
        error = None
        if self._errors:
            stage, exc = self._errors[0]
            error = f"{stage}: {type(exc).__name__}: {exc}"
        return PipelineSummary(
            frames_read=dict(self._read_count),
            frames_paired=stats.paired if stats else 0,
            unmatched={"ir": stats.unmatched_ir if stats else 0, "vis": stats.unmatched_vis if stats else 0},
            queue_dropped=dict(self._queue_dropped),
            frames_fused=self._frames_fused,
            frames_written=self._frames_written,
            elapsed_s=elapsed,
            fps=self._frames_written / elapsed,
            latency_ms=latency,
            stage_ms_mean=stage_mean,
            temporal_stability=self._stability.result(),
            stopped_by="error" if self._errors else (self._stopped_by or "end"),
            ended_first=stats.ended_first if stats else None,
            length_mismatch=stats.length_mismatch if stats else None,
            sync=dict(self.sync),
            pairing=self.pairing,
            tolerance_s=self.tolerance_s,
            processing_size_wh=list(self._size_wh) if self._size_wh else None,
            error=error,
        )

    def close(self) -> None:
        """Stop and release everything (after :meth:`run`, or instead of it). Safe to call twice."""
        self.request_stop()
        self._stop.set()
        if self._started:
            self._shutdown()
        elif not self._finished:
            self._finished = True
            self._close_outputs()
            for source in self.sources.values():
                source.close()

    def __enter__(self) -> "FusionPipeline":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
