"""Several frames in flight at once: :class:`BackendPool`, N backends that take calls from N threads.

On a CPU one session with all cores on one frame (intra-op parallelism) is the lowest latency; N
sessions with ``cores / N`` threads each on N frames at once (inter-op) can give more frames per
second, because small convolutions do not split well over cores. ``dstfuse-bench realtime`` measures
both (``concurrent_frames`` 1 and 2); ``Fuser(concurrent_frames=2)`` and ``dstfuse-stream
--concurrent-frames 2`` use a pool of two.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import Any

import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.errors import BackendError, ConfigError

__all__ = ["BackendPool", "create_backends"]


class BackendPool(FusionBackend):
    """Backends of one model; each call takes a free one (waiting while all are busy).

    Thread-safe: call :meth:`fuse` from up to ``len(backends)`` threads at once to keep them all busy.
    The pool owns the backends and closes them.
    """

    accepts_uint8 = True

    def __init__(self, backends: Sequence[FusionBackend]) -> None:
        if not backends:
            raise ConfigError("BackendPool: expected at least one backend, got none")
        first = backends[0]
        super().__init__(device=first.device, precision=first.precision)
        self.name = first.name
        self.selection_reason = first.selection_reason
        self.backends = list(backends)
        self.config = getattr(first, "config", None)
        self.work_scale = getattr(first, "work_scale", None)
        self._free: queue.Queue[FusionBackend] = queue.Queue()
        for backend in self.backends:
            self._free.put(backend)
        self._closed = False

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError(f"{self.describe()}: backend is closed")
        backend = self._free.get()
        try:
            if not backend.accepts_uint8 and ir.dtype == np.uint8:
                return backend.fuse(ir, vis)
            return backend.fuse_batch(ir, vis)
        finally:
            self._free.put(backend)

    def describe(self) -> str:
        return f"{len(self.backends)} x [{self.backends[0].describe()}] (frames in flight: {len(self.backends)})"

    def close(self) -> None:
        self._closed = True
        for backend in self.backends:
            backend.close()


def create_backends(name: str, *, threads: int | None = None, copies: int = 1, **options: Any) -> FusionBackend:
    """``create_backend(name, **options)``, or for ``copies > 1`` a :class:`BackendPool` of that many
    sharing ``threads`` (default: the usable cores) evenly."""
    from dstfuse_stream.backends import create_backend
    from dstfuse_stream.backends.precision import default_threads

    if copies == 1:
        return create_backend(name, **options, **({} if threads is None else {"threads": threads}))
    share = max(1, (threads or default_threads()) // copies)
    made: list[FusionBackend] = []
    try:
        for _ in range(copies):
            made.append(create_backend(name, threads=share, **options))
    except BaseException:
        for backend in made:
            backend.close()
        raise
    return BackendPool(made)
