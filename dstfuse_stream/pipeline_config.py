"""Settings of one :class:`~dstfuse_stream.pipeline.FusionPipeline` run (what ``stream(**options)``
and the ``dstfuse-stream`` flags set), checked when made: every bad value is a
:class:`~dstfuse_stream.errors.ConfigError` before anything is opened."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from dstfuse_stream.errors import ConfigError
from dstfuse_stream.geometry import MAX_SIDE_PX
from dstfuse_stream.pairing import resolve_pairing
from dstfuse_stream.workers import resolve_sync

__all__ = ["PipelineConfig"]


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one :class:`FusionPipeline` run.

    Attributes:
        sync: ``auto``, ``lossless`` or ``latest`` (see the module docstring).
        pairing: ``auto``, ``index`` or ``timestamp`` (see :mod:`dstfuse_stream.pairing`).
        tolerance_s: timestamp pairing tolerance; ``None`` = half the slower stream's frame interval.
        queue_size: capacity of each reader queue and of the writer queue.
        max_frames: stop after this many fused frames (``None``: until a stream ends).
        resize_wh: fuse at exactly this size ``(W, H)`` (sides at most :data:`~dstfuse_stream.geometry.MAX_SIDE_PX`).
        max_size: else shrink so the longer side is at most this (aspect kept, even sides).
        reconnect: reopen a lost live source up to this many times in a row (0: a loss ends the run).
        reconnect_backoff_s: wait before the first reconnect attempt; doubled for each further one.
        poll_s: longest wait on a queue before the stop flag is rechecked.
        join_timeout_s: how long the shutdown waits for the reader threads (all together; a reader
            stuck in a stalled stream is abandoned after it).
        writer_timeout_s: how long the shutdown waits for the writer to flush its queue.
        progress: show a tqdm progress bar (frames finished) on stderr.
        background_writer: the writer thread (preview rendering, encoding, and the encoders' own
            threads) runs at idle CPU priority (:func:`~dstfuse_stream.workers.run_in_background`): it
            uses the cores the fusion leaves free instead of preempting it. Off: the writer competes
            with the fusion as an equal.
        background_readers: the readers of recorded sources (files, folders) run at idle CPU priority
            too, with single-threaded video decoding: the fusion waits for them only when they fall
            behind, and then a core is free for them. Readers of live sources (cameras, network
            streams) always keep normal priority and the decoder's default threads: a camera does not
            wait. Off: every reader at normal priority with FFmpeg's default decoding threads.
    """

    sync: str = "auto"
    pairing: str = "auto"
    tolerance_s: float | None = None
    queue_size: int = 4
    max_frames: int | None = None
    resize_wh: tuple[int, int] | None = None
    max_size: int | None = None
    reconnect: int = 0
    reconnect_backoff_s: float = 0.5
    poll_s: float = 0.05
    join_timeout_s: float = 1.0
    writer_timeout_s: float = 60.0
    progress: bool = False
    background_writer: bool = True
    background_readers: bool = True

    def __post_init__(self) -> None:
        resolve_sync(self.sync, live=False)
        resolve_pairing(self.pairing, live=False, ir_fps=None, vis_fps=None)
        checks = {"queue_size": (self.queue_size, 1), "max_frames": (self.max_frames, 0), "max_size": (self.max_size, 2),
                  "reconnect": (self.reconnect, 0)}
        for name, (value, low) in checks.items():
            if value is not None and value < low:
                raise ConfigError(f"{name}: expected >= {low}, got {value}")
        for name in ("tolerance_s", "reconnect_backoff_s", "join_timeout_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: expected a finite number >= 0, got {value}")
        if self.resize_wh is not None and not all(1 <= side <= MAX_SIDE_PX for side in self.resize_wh):
            raise ConfigError(f"resize_wh: expected sides from 1 to {MAX_SIDE_PX} pixels, got {self.resize_wh}")
        if not (math.isfinite(self.poll_s) and self.poll_s > 0):
            raise ConfigError(f"poll_s: expected > 0, got {self.poll_s}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
