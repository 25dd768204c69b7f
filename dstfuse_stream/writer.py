"""The pipeline's writer thread: fused frames -> sinks (plain images) + timing log + run statistics.

It drains its queue until the end sentinel, so everything fused before a stop request is written;
an error in a sink stops the writer (and, through ``on_error``, the pipeline). The sinks and the
timing log are closed on every exit path, so a video holds every frame written so far and plays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from dstfuse_stream.fuser import FusedFrame
from dstfuse_stream.sinks import Sink, TimingLog
from dstfuse_stream.stats import RunStats
from dstfuse_stream.visualize import side_by_side
from dstfuse_stream.workers import END, Failures, StopAwareQueue, run_in_background

__all__ = ["FrameWriter", "render"]

logger = logging.getLogger(__name__)


def render(frame: FusedFrame, content: str) -> np.ndarray:
    """The image a sink with ``content`` gets: the fused result, or ``ir | vis | fused`` panels."""
    return side_by_side(frame.ir, frame.vis, frame.fused) if content == "preview" else frame.fused


class FrameWriter:
    """One daemon thread writing :class:`FusedFrame` items to ``sinks`` and ``timing_log``.

    Args:
        sinks: outputs; each gets :func:`render` of its :attr:`~dstfuse_stream.sinks.Sink.content`.
        timing_log: per-frame timing rows (optional).
        stats: receives :meth:`RunStats.on_written` for every frame.
        failures: where errors are recorded.
        on_error: called after an error was recorded (the pipeline stops its other stages).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        timing_log: TimingLog | None,
        stats: RunStats,
        *,
        queue_size: int,
        poll_s: float,
        failures: Failures,
        on_error: Callable[[], None],
        background: bool = False,
    ) -> None:
        self.sinks = list(sinks)
        self.background = background
        self.timing_log = timing_log
        self.stats = stats
        self.failures = failures
        self.on_error = on_error
        self.abort = threading.Event()
        self.queue = StopAwareQueue(queue_size, stop=self.abort, poll_s=poll_s)
        self._thread = threading.Thread(target=self._run, name="dstfuse-writer", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def put(self, frame: FusedFrame) -> bool:
        """Queue ``frame``; ``False`` when the writer has stopped (after an error)."""
        return self.queue.put(frame, consumer_alive=self._thread.is_alive)

    def _run(self) -> None:
        if self.background:
            run_in_background()
        try:
            while True:
                item = self.queue.get()
                if not isinstance(item, FusedFrame):  # END, or STOPPED after an abort
                    return
                self._write(item)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised in the caller
            self._fail("write", exc)
            self.abort.set()
        finally:
            self.close_outputs()

    def _write(self, frame: FusedFrame) -> None:
        t0 = time.perf_counter()
        for sink in self.sinks:
            sink.write(render(frame, sink.content), index=frame.index, timestamp_s=frame.timestamp, name=frame.name)
        row = self.stats.on_written(frame, (time.perf_counter() - t0) * 1000.0)
        if self.timing_log is not None:
            self.timing_log.write(row)

    def _fail(self, stage: str, exc: BaseException) -> None:
        self.failures.record(stage, exc)
        self.on_error()

    def close_outputs(self) -> None:
        """Close every sink and the timing log (once; errors are recorded, the rest still closed)."""
        if self._closed:
            return
        self._closed = True
        for closable in [*self.sinks, self.timing_log]:
            if closable is None:
                continue
            try:
                closable.close()
            except BaseException as exc:  # noqa: BLE001
                self._fail("close output", exc)

    def finish(self, *, timeout_s: float, join_timeout_s: float) -> None:
        """Send the end sentinel, wait up to ``timeout_s`` for the queue to be written, then join.

        A writer that never started just closes the outputs; one that does not finish in time is
        aborted (frames still queued are dropped) and abandoned after ``join_timeout_s``.
        """
        if self._thread.ident is None:
            self.close_outputs()
            return
        deadline = time.monotonic() + timeout_s
        if not self.queue.put(END, timeout_s=timeout_s, consumer_alive=self._thread.is_alive):
            self.abort.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            logger.error("writer did not finish within %.0f s; abandoning it", timeout_s)
            self.abort.set()
            self._thread.join(timeout=join_timeout_s)
