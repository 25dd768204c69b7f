"""Thread building blocks of the pipeline: a stop-aware bounded queue, a shared error record, and
a threaded source reader.

Rules every piece follows (the bug they avoid: a producer blocked forever on a full queue after
its consumer failed):

* every ``put``/``get`` waits at most ``poll_s`` at a time and rechecks the shared stop event;
* end of stream is the private sentinel :data:`END`; a stopped wait returns :data:`STOPPED`;
* on shutdown the owner sets the stop event, drains the queues (a blocked producer can then exit)
  and joins each thread with a timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.sources import Frame, FrameSource

__all__ = [
    "END",
    "STOPPED",
    "StopSignal",
    "StopAwareQueue",
    "Failures",
    "SourceReader",
    "SYNC_MODES",
    "resolve_sync",
]

logger = logging.getLogger(__name__)

SYNC_MODES = ("auto", "lossless", "latest")


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


#: Put by a producer after its last item.
END = _Sentinel("end of stream")
#: Returned by :meth:`StopAwareQueue.get` when the stop event ended the wait.
STOPPED = _Sentinel("stopped")


def resolve_sync(mode: str, *, live: bool) -> str:
    """``auto`` -> ``latest`` for a live source, ``lossless`` otherwise."""
    if mode not in SYNC_MODES:
        raise ConfigError(f"sync {mode!r}: expected one of {list(SYNC_MODES)}")
    if mode == "auto":
        return "latest" if live else "lossless"
    return mode


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class StopSignal:
    """The shared stop flag: set by the pipeline (:meth:`set`), or requested from outside
    (:meth:`request`, safe in a signal handler: it only assigns a bool, no lock)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self.requested or self._event.is_set()


class StopAwareQueue:
    """A bounded FIFO whose waits end when ``stop`` is set.

    Args:
        maxsize: capacity.
        stop: the shared stop flag (a :class:`StopSignal` or :class:`threading.Event`).
        poll_s: longest single wait before ``stop`` is rechecked.
        drop_oldest: when full, ``put`` drops the oldest item (``latest`` sync: bounded lag) instead
            of blocking (``lossless``); :attr:`dropped` counts them (:data:`END` is never counted).
    """

    def __init__(self, maxsize: int, *, stop: _Flag, poll_s: float, drop_oldest: bool = False) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = stop
        self.poll_s = poll_s
        self.drop_oldest = drop_oldest
        self.dropped = 0

    def put(self, item: object, *, timeout_s: float | None = None, consumer_alive: Callable[[], bool] | None = None) -> bool:
        """Add ``item``; ``False`` (not added) when stop is set, ``timeout_s`` passed, or
        ``consumer_alive()`` says nobody will ever take it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._stop.is_set():
            if self.drop_oldest:
                try:
                    self._q.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        if self._q.get_nowait() is not END:
                            self.dropped += 1
                    except queue.Empty:
                        pass
                    continue
            try:
                self._q.put(item, timeout=self.poll_s)
                return True
            except queue.Full:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                if consumer_alive is not None and not consumer_alive():
                    return False
        return False

    def get(self, *, producer_alive: Callable[[], bool] | None = None) -> object:
        """Next item, or :data:`STOPPED` once stop is set, or :data:`END` when ``producer_alive()``
        says the producer is gone and the queue is empty."""
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=self.poll_s)
            except queue.Empty:
                if producer_alive is not None and not producer_alive() and self._q.empty():
                    return END
        return STOPPED

    def drain(self) -> None:
        """Discard everything queued (frees a producer blocked on a full queue)."""
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return


class Failures:
    """Errors of all threads in order of arrival; the first one is re-raised in the caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: list[tuple[str, BaseException]] = []

    def record(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            self.errors.append((stage, exc))
        if isinstance(exc, Exception) and not isinstance(exc, DSTFuseError):
            logger.error("%s stage failed", stage, exc_info=exc)
        else:
            logger.debug("%s stage failed: %s", stage, exc)

    @property
    def first(self) -> tuple[str, BaseException] | None:
        with self._lock:
            return self.errors[0] if self.errors else None

    def describe_first(self) -> str | None:
        """``"stage: Type: message"`` of the first error, or ``None``."""
        first = self.first
        return None if first is None else f"{first[0]}: {type(first[1]).__name__}: {first[1]}"


class SourceReader:
    """One daemon thread reading a :class:`FrameSource` into a :class:`StopAwareQueue`.

    A read error ends the stream (frames already queued are still used) and is recorded in
    ``failures`` without stopping the others. The source is closed when the thread ends.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        role: str,
        sync: str,
        queue_size: int,
        stop: _Flag,
        poll_s: float,
        failures: Failures,
    ) -> None:
        self.source = source
        self.role = role
        self.sync = sync
        self.queue = StopAwareQueue(queue_size, stop=stop, poll_s=poll_s, drop_oldest=sync == "latest")
        self.failures = failures
        self.read_count = 0
        self._thread = threading.Thread(target=self._run, name=f"dstfuse-reader-{role}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self.read_count += 1
                if not self.queue.put(frame):
                    return
            self.queue.put(END)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised in the caller
            self.failures.record(f"read {self.role}", exc)
            self.queue.put(END)
        finally:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001
                logger.warning("closing %s failed", self.source, exc_info=True)

    def take(self) -> Frame | object:
        """The next frame (with ``lag_frames`` filled in), :data:`END` or :data:`STOPPED`."""
        item = self.queue.get(producer_alive=lambda: self._thread.is_alive())
        if isinstance(item, Frame):
            return replace(item, lag_frames=max(0, self.read_count - 1 - item.index))
        return item

    def stop(self, timeout_s: float) -> None:
        """After stop is set: drain, join; close the source if the thread never ran."""
        self.queue.drain()
        if self._thread.ident is None:
            self.source.close()
            return
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            logger.warning("%s reader did not stop within %.1f s (blocked in its source)", self.role, timeout_s)
