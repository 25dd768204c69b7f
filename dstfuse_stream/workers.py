"""Thread building blocks of the pipeline: a stop-aware bounded queue, a shared error record, and
a threaded source reader.

Rules every piece follows (the bug they avoid: a producer blocked forever on a full queue after
its consumer failed):

* every ``put``/``get`` waits at most ``poll_s`` at a time and rechecks the shared stop event;
* end of stream is the private sentinel :data:`END`; a stopped wait returns :data:`STOPPED`;
* on shutdown the owner sets the stop event, drains the queues (a blocked producer can then exit)
  and joins the threads in parallel, with one shared timeout (:func:`stop_readers`).

A live source that is lost (:class:`~dstfuse_stream.errors.SourceLostError`) is reopened by its
reader up to ``reconnect`` times in a row, waiting ``backoff_s``, then twice as long each time (at
most :data:`MAX_BACKOFF_S`); frames keep counting on from where the lost connection stopped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from dstfuse_stream.errors import ConfigError, DSTFuseError, SourceError, SourceLostError
from dstfuse_stream.sources import Frame, FrameSource

__all__ = [
    "END",
    "STOPPED",
    "StopSignal",
    "StopAwareQueue",
    "Failures",
    "SourceReader",
    "stop_readers",
    "SYNC_MODES",
    "resolve_sync",
    "MAX_BACKOFF_S",
    "run_in_background",
]

logger = logging.getLogger(__name__)

SYNC_MODES = ("auto", "lossless", "latest")
#: longest wait between two reconnect attempts of a lost live source
MAX_BACKOFF_S = 8.0


def run_in_background() -> bool:
    """Give the calling thread (and the threads it starts, e.g. an encoder's) idle priority, so it
    runs on cores the fusion leaves free instead of preempting the fusion's threads (Linux
    ``SCHED_IDLE``). The pipeline's writer does this when ``background_writer`` is on: a fusion thread
    preempted by an encoder stalls its partner at the next barrier, so sharing the cores by time
    slices costs more than the encoder's own CPU time. Returns ``False`` (and changes nothing) where
    the OS has no such policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


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
            of blocking (``lossless``); :attr:`dropped` counts them. :data:`END` is never dropped and
            never drops a frame (it waits for room), so a stream's last frame is always delivered.
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
            if self.drop_oldest and item is not END:  # END waits for room: it never displaces the last frame
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
                    # a producer that saw the stop flag exits without END: that is a stop, not an end
                    return STOPPED if self._stop.is_set() else END
        return STOPPED

    def drain(self) -> int:
        """Discard everything queued (frees a producer blocked on a full queue); returns how many
        items that were not :data:`END` it discarded."""
        discarded = 0
        while True:
            try:
                discarded += self._q.get_nowait() is not END
            except queue.Empty:
                return discarded


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
    ``failures`` without stopping the others; a lost live source is first reopened up to
    ``reconnect`` times in a row (see the module docstring). The source is closed when the thread ends.

    ``background=True`` runs the thread (and the decoder threads it starts) at idle CPU priority
    (:func:`run_in_background`).

    Counters: :attr:`read_count` frames read, :attr:`unused` frames read but discarded at the stop
    (still queued, or refused by a stopped queue), :attr:`reconnects` successful reconnections.
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
        reconnect: int = 0,
        backoff_s: float = 0.5,
        background: bool = False,
    ) -> None:
        self.source = source
        self.background = background
        self.role = role
        self.sync = sync
        self.queue = StopAwareQueue(queue_size, stop=stop, poll_s=poll_s, drop_oldest=sync == "latest")
        self.failures = failures
        self.reconnect, self.backoff_s = reconnect, backoff_s
        self._stop, self._poll_s = stop, poll_s
        self.read_count = self.unused = self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"dstfuse-reader-{role}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        if self.background:
            run_in_background()
        attempts = 0  # reconnect attempts since the last frame
        try:
            while True:
                offset = self.read_count
                try:
                    for frame in self.source.frames():
                        self.read_count += 1
                        attempts = 0
                        if offset:
                            frame = replace(frame, index=frame.index + offset)
                        if not self.queue.put(frame):
                            self.unused += 1
                            return
                    break
                except SourceLostError as exc:
                    attempts = self._reconnect(exc, attempts)
                    if attempts == 0:  # stopped while waiting
                        break
            self.queue.put(END)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised in the caller
            self.failures.record(f"read {self.role}", exc)
            self.queue.put(END)
        finally:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001
                logger.warning("closing %s failed", self.source, exc_info=True)

    def _reconnect(self, lost: SourceLostError, attempts: int) -> int:
        """Reopen the lost source, waiting ``backoff_s * 2**attempt`` before each try; returns the
        attempts used so far once it is back (0 when the stop flag ended the wait). Raises
        :class:`SourceLostError` once ``reconnect`` attempts in a row brought no frame."""
        error: SourceError = lost
        while attempts < self.reconnect:
            delay = min(self.backoff_s * 2**attempts, MAX_BACKOFF_S)
            attempts += 1
            logger.warning("%s; reconnecting in %.1f s (attempt %d of %d)", error, delay, attempts, self.reconnect)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self._stop.is_set():
                    return 0
                time.sleep(min(self._poll_s, max(0.0, deadline - time.monotonic())))
            try:
                self.source.reopen()
            except SourceError as exc:
                error = exc
                continue
            self.reconnects += 1
            logger.warning("%s: reconnected", self.source.name)
            return attempts
        if self.reconnect == 0:
            raise lost
        raise SourceLostError(f"{error}; gave up after {self.reconnect} reconnect attempt(s)") from error

    def take(self) -> Frame | object:
        """The next frame (with ``lag_frames`` filled in), :data:`END` or :data:`STOPPED`."""
        item = self.queue.get(producer_alive=lambda: self._thread.is_alive())
        if isinstance(item, Frame):
            return replace(item, lag_frames=max(0, self.read_count - 1 - item.index))
        return item

    def stop(self, timeout_s: float) -> None:
        """After stop is set: drain, join; close the source if the thread never ran."""
        stop_readers([self], timeout_s)


def stop_readers(readers: list[SourceReader], timeout_s: float) -> None:
    """After stop is set: drain every queue (a blocked reader can exit), join all readers within one
    shared ``timeout_s`` (a reader stuck in its source, e.g. a stalled stream, is abandoned: daemon
    thread), count the frames discarded as :attr:`SourceReader.unused`."""
    for reader in readers:
        reader.unused += reader.queue.drain()
    deadline = time.monotonic() + timeout_s
    for reader in readers:
        if reader._thread.ident is None:
            reader.source.close()
            continue
        reader._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if reader._thread.is_alive():
            logger.warning("%s reader did not stop within %.1f s (blocked in its source); abandoning it", reader.role, timeout_s)
        reader.unused += reader.queue.drain()
