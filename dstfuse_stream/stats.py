"""What one pipeline run measures (:class:`RunStats`) and reports (:class:`PipelineSummary`).

:class:`RunStats` is fed by the fusion thread (:meth:`RunStats.on_fused`) and by whoever finishes a
frame (:meth:`RunStats.on_written`: the writer thread, or the fusion thread when there are no
outputs); each side only touches its own counters.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dstfuse_stream.fuser import FusedFrame
from dstfuse_stream.metrics import TemporalStability
from dstfuse_stream.pairing import PairingStats

__all__ = ["RunStats", "PipelineSummary", "STAGES"]

#: Per-frame stages whose mean the summary reports (milliseconds).
STAGES = ("pair_ms", "preprocess_ms", "fuse_ms", "postprocess_ms", "encode_ms")


@dataclass
class PipelineSummary:
    """What a run did (printed by the CLI, written as JSON next to the output).

    ``stopped_by`` is ``"end"`` (a stream ended), ``"max_frames"``, ``"stop"`` (request_stop /
    signal), ``"closed"`` (the consumer of :func:`dstfuse_stream.stream` left its loop),
    ``"source_lost"`` (a live source stopped delivering and was not reconnected; ``error`` names it)
    or ``"error"``. Per stream, every frame read is accounted for once: ``frames_read = frames_paired
    + unmatched + queue_dropped + unused``, where ``unmatched`` counts frames the pairing dropped,
    ``queue_dropped`` frames the ``latest`` sync policy dropped, and ``unused`` frames still queued
    when the run stopped. ``frames_fused - frames_written`` were fused but not written (an output
    failed). ``reconnects`` counts reconnections of lost live sources. Latencies and stage times
    are in milliseconds.
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
    unused: dict[str, int] = field(default_factory=lambda: {"ir": 0, "vis": 0})
    reconnects: dict[str, int] = field(default_factory=lambda: {"ir": 0, "vis": 0})
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
            f"queue (latest) ir {self.queue_dropped['ir']} / vis {self.queue_dropped['vis']}; "
            f"unused at stop ir {self.unused['ir']} / vis {self.unused['vis']}",
            f"throughput: {self.fps:.2f} fps over {self.elapsed_s:.2f} s; latency p50 {lat['p50']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms",
            "stage means: " + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in self.stage_ms_mean.items()),
            f"temporal stability: fused MAD {ts['fused_mad']:.3f}, source MAD {ts['source_mad']:.3f}, "
            f"ratio {ts['ratio']:.3f} ({ts['steps']} steps)",
            f"sync ir={self.sync['ir']} vis={self.sync['vis']}, pairing {self.pairing}; stopped by {self.stopped_by}",
        ]
        if self.length_mismatch:
            lines.append(f"length mismatch: the {self.length_mismatch} stream is longer; stopped at the shorter")
        if any(self.reconnects.values()):
            lines.append(f"reconnected: ir {self.reconnects['ir']}, vis {self.reconnects['vis']} times")
        return "\n".join(lines)


class RunStats:
    """Counters, per-stage time sums, end-to-end latencies and temporal stability of one run.

    Args:
        progress_total: show a tqdm bar of finished frames on stderr with this total (``None``:
            unknown); ``progress=False`` shows none.
    """

    def __init__(self, *, progress: bool = False, progress_total: int | None = None) -> None:
        self.frames_fused = 0
        self.frames_written = 0
        self.size_wh: tuple[int, int] | None = None
        self._latencies = array("d")
        self._stage_sums = dict.fromkeys(STAGES, 0.0)
        self._stability = TemporalStability()
        self._t_start = self._t_end = 0.0
        self._progress = None
        if progress:
            from tqdm import tqdm

            self._progress = tqdm(total=progress_total, unit="frame", dynamic_ncols=True, leave=True)

    def start(self) -> None:
        self._t_start = time.perf_counter()

    def stop(self) -> None:
        self._t_end = time.perf_counter()
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def on_fused(self, frame: FusedFrame) -> None:
        """Fusion thread: one more frame fused."""
        self.frames_fused += 1
        for key in STAGES[:-1]:
            self._stage_sums[key] += frame.timings.get(key, 0.0)
        if self.size_wh is None:
            self.size_wh = (int(frame.fused_y.shape[1]), int(frame.fused_y.shape[0]))

    def on_written(self, frame: FusedFrame, encode_ms: float) -> dict[str, Any]:
        """A frame was handed to every output; returns its complete timing-log row."""
        latency_ms = (time.monotonic() - frame.captured_s) * 1000.0
        self._stability.update(frame.ir, frame.vis_y, frame.fused_y)
        self._stage_sums["encode_ms"] += encode_ms
        self._latencies.append(latency_ms)
        self.frames_written += 1
        if self._progress is not None:
            self._progress.update(1)
        return {**frame.timings, "encode_ms": encode_ms, "latency_ms": latency_ms}

    def summary(self, *, frames_read: dict[str, int], queue_dropped: dict[str, int], pairing_stats: PairingStats | None,
                stopped_by: str, error: str | None, resolved: dict[str, Any], unused: dict[str, int] | None = None,
                reconnects: dict[str, int] | None = None, length_mismatch: str | None = None) -> PipelineSummary:
        """The run's :class:`PipelineSummary`; ``resolved`` holds ``sync``, ``pairing``, ``tolerance_s``;
        ``length_mismatch`` is the pipeline's verdict (the pairer's alone is wrong once frames were dropped)."""
        elapsed = max((self._t_end or time.perf_counter()) - self._t_start, 1e-9)
        lat = np.frombuffer(self._latencies, dtype=np.float64) if len(self._latencies) else np.empty(0)
        if lat.size:
            p50, p99 = np.percentile(lat, [50, 99])
            latency = {"p50": float(p50), "p99": float(p99), "mean": float(lat.mean()), "max": float(lat.max())}
        else:
            latency = dict.fromkeys(("p50", "p99", "mean", "max"), float("nan"))
        counts = {k: self.frames_written if k == "encode_ms" else self.frames_fused for k in STAGES}
        stage_mean = {k: (self._stage_sums[k] / counts[k] if counts[k] else float("nan")) for k in STAGES}
        ps = pairing_stats or PairingStats()
        return PipelineSummary(
            frames_read=frames_read,
            frames_paired=ps.paired,
            unmatched={"ir": ps.unmatched_ir, "vis": ps.unmatched_vis},
            queue_dropped=queue_dropped,
            frames_fused=self.frames_fused,
            frames_written=self.frames_written,
            elapsed_s=elapsed,
            fps=self.frames_written / elapsed,
            latency_ms=latency,
            stage_ms_mean=stage_mean,
            temporal_stability=self._stability.result(),
            stopped_by=stopped_by,
            ended_first=ps.ended_first,
            length_mismatch=length_mismatch,
            sync=dict(resolved["sync"]),
            pairing=resolved["pairing"],
            tolerance_s=resolved["tolerance_s"],
            processing_size_wh=list(self.size_wh) if self.size_wh else None,
            unused=dict(unused or {"ir": 0, "vis": 0}),
            reconnects=dict(reconnects or {"ir": 0, "vis": 0}),
            error=error,
        )
