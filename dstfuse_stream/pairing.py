"""Pairing IR and visible frames (geometry, i.e. bringing a pair onto one grid, is in :mod:`dstfuse_stream.geometry`).

Pairing policies (:class:`StreamPairer`):

* ``index``: frame ``i`` of IR with frame ``i`` of visible (recorded sequences, equal frame rate);
  a frame whose partner index never arrives (dropped upstream) is counted as unmatched. Pairing
  stops when either stream ends; if the other stream still had a frame, that is a length mismatch
  (:attr:`PairingStats.length_mismatch` names the longer stream).
* ``timestamp``: nearest timestamps within ``tolerance_s``, each frame used at most once (live
  streams, or streams of different frame rates). A frame whose timestamp is more than the tolerance
  before the other stream's current frame can no longer be matched and is dropped; among frames
  within tolerance the closest one wins (one frame of look-ahead on the earlier stream). Dropped
  frames are counted per stream. Pairing stops when either stream ends.

A live source is timestamped with the capture clock (``time.monotonic()``) and a recording from 0,
so the two never pair by timestamp: :func:`check_pairable` refuses that mix before the run.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from dstfuse_stream.errors import ConfigError, StreamMismatchError
from dstfuse_stream.sources import Frame, FrameSource

__all__ = [
    "FramePair",
    "PairingStats",
    "StreamPairer",
    "pair_streams",
    "resolve_pairing",
    "default_tolerance_s",
    "check_pairable",
    "length_mismatch",
    "PAIRING_POLICIES",
]

logger = logging.getLogger(__name__)

PAIRING_POLICIES = ("auto", "index", "timestamp")
_FALLBACK_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class FramePair:
    """An IR frame and its visible partner; ``index`` counts pairs from 0."""

    index: int
    ir: Frame
    vis: Frame


@dataclass
class PairingStats:
    """Counts kept by :class:`StreamPairer`.

    Attributes:
        paired: pairs emitted.
        unmatched_ir / unmatched_vis: frames dropped because no partner was within tolerance
            (timestamp policy), or left over when the other stream ended.
        ended_first: ``"ir"`` or ``"vis"``: the stream whose end stopped pairing (``None`` while running).
        length_mismatch: index policy only: the stream that had more frames than the other.
    """

    paired: int = 0
    unmatched_ir: int = 0
    unmatched_vis: int = 0
    ended_first: str | None = None
    length_mismatch: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def default_tolerance_s(ir_fps: float | None, vis_fps: float | None) -> float:
    """Half the frame interval of the slower stream (50 ms when no rate is known)."""
    rates = [r for r in (ir_fps, vis_fps) if r and r > 0]
    return 0.5 / min(rates) if rates else _FALLBACK_TOLERANCE_S


def resolve_pairing(policy: str, *, live: bool, ir_fps: float | None, vis_fps: float | None) -> str:
    """``auto`` -> ``timestamp`` for live sources or known, different frame rates; else ``index``."""
    if policy not in PAIRING_POLICIES:
        raise ConfigError(f"pairing {policy!r}: expected one of {list(PAIRING_POLICIES)}")
    if policy != "auto":
        return policy
    if live:
        return "timestamp"
    if ir_fps and vis_fps and abs(ir_fps - vis_fps) > 0.01 * max(ir_fps, vis_fps):
        return "timestamp"
    return "index"


class StreamPairer:
    """Incremental pairing of two frame streams (no threads; the pipeline drives it).

    Drive it with :meth:`need` / :meth:`push` / :meth:`pop`::

        while (role := pairer.need()) is not None or not pairer.done:
            if role is not None:
                pairer.push(role, next_frame_or_None(role))   # None = that stream ended
            elif (pair := pairer.pop()) is not None:
                use(pair)
    """

    def __init__(self, *, policy: str = "index", tolerance_s: float | None = None) -> None:
        if policy not in ("index", "timestamp"):
            raise ConfigError(f"pairing {policy!r}: expected 'index' or 'timestamp' (resolve 'auto' first)")
        if tolerance_s is not None and not (math.isfinite(tolerance_s) and tolerance_s >= 0):
            raise ConfigError(f"tolerance_s: expected a finite number >= 0, got {tolerance_s}")
        self.policy = policy
        self.tolerance_s = _FALLBACK_TOLERANCE_S if tolerance_s is None else float(tolerance_s)
        self.stats = PairingStats()
        self._buf: dict[str, deque[Frame]] = {"ir": deque(), "vis": deque()}
        self._ended = {"ir": False, "vis": False}
        self._done = False
        self._span_s: dict[str, list[float]] = {}  # role -> [first, last] timestamp pushed

    @property
    def done(self) -> bool:
        """True once no further pair can be produced."""
        return self._done

    def push(self, role: str, frame: Frame | None) -> None:
        """Add the next frame of ``role`` (``"ir"``/``"vis"``); ``None`` marks the end of that stream."""
        if frame is None:
            self._ended[role] = True
        elif self._ended[role]:
            raise ConfigError(f"{role}: frame pushed after the end of the stream")
        else:
            self._buf[role].append(frame)
            self._span_s.setdefault(role, [frame.timestamp_s, frame.timestamp_s])[1] = frame.timestamp_s

    def pending(self) -> dict[str, int]:
        """Frames pushed but neither paired nor dropped yet, per stream (left over when a run stops)."""
        return {role: len(buf) for role, buf in self._buf.items()}

    def why_no_pairs(self) -> str:
        """Why nothing paired (for the error of a run that fused no frame)."""
        spans = {r: self._span_s.get(r) for r in ("ir", "vis")}
        seen = ", ".join(f"{r} {s[0]:.3f}..{s[1]:.3f} s" if s else f"{r} none" for r, s in spans.items())
        if self.policy == "index":
            return f"no frame index appeared in both streams (frames dropped by the 'latest' sync?); timestamps seen: {seen}"
        return (f"no two frames were within the tolerance of {self.tolerance_s * 1000:.1f} ms (timestamps seen: {seen}); "
                "raise --tolerance-ms, or pair frame i with frame i (--pairing index)")

    def need(self) -> str | None:
        """The stream that must supply a frame before :meth:`pop` can decide, or ``None``."""
        if self._done:
            return None
        ir, vis = self._buf["ir"], self._buf["vis"]
        if self.policy == "timestamp" and self._exhausted():
            return None
        if not ir and not self._ended["ir"]:
            return "ir"
        if not vis and not self._ended["vis"]:
            return "vis"
        if self.policy == "timestamp" and ir and vis:
            a, b = ir[0].timestamp_s, vis[0].timestamp_s
            if abs(a - b) <= self.tolerance_s:
                if a < b and len(ir) < 2 and not self._ended["ir"]:
                    return "ir"
                if b < a and len(vis) < 2 and not self._ended["vis"]:
                    return "vis"
        return None

    def _exhausted(self) -> str | None:
        for role in ("ir", "vis"):
            if self._ended[role] and not self._buf[role]:
                return role
        return None

    def _drop(self, role: str) -> None:
        self._buf[role].popleft()
        if role == "ir":
            self.stats.unmatched_ir += 1
        else:
            self.stats.unmatched_vis += 1

    def _emit(self) -> FramePair:
        pair = FramePair(self.stats.paired, self._buf["ir"].popleft(), self._buf["vis"].popleft())
        self.stats.paired += 1
        return pair

    def _finish(self, ended: str) -> None:
        other = "vis" if ended == "ir" else "ir"
        self.stats.ended_first = ended
        if self.policy == "index" and self._buf[other]:
            self.stats.length_mismatch = other
            logger.info(
                "%s stream ended after %d frames but the %s stream has more: stopped at the shorter",
                ended, self.stats.paired, other,
            )
        while self._buf[other]:
            self._drop(other)
        self._done = True

    def pop(self) -> FramePair | None:
        """The next pair if it can be decided with the frames pushed so far, else ``None``."""
        if self._done:
            return None
        ir, vis = self._buf["ir"], self._buf["vis"]
        while ir and vis:
            if self.policy == "index":
                # equal indices pair; a frame whose partner was dropped upstream (``latest``) is unmatched
                if ir[0].index < vis[0].index:
                    self._drop("ir")
                    continue
                if vis[0].index < ir[0].index:
                    self._drop("vis")
                    continue
                return self._emit()
            a, b = ir[0].timestamp_s, vis[0].timestamp_s
            if b - a > self.tolerance_s:
                self._drop("ir")
                continue
            if a - b > self.tolerance_s:
                self._drop("vis")
                continue
            earlier = "ir" if a < b else "vis" if b < a else None
            if earlier is not None:
                buf, partner = (ir, b) if earlier == "ir" else (vis, a)
                if len(buf) >= 2:
                    if abs(buf[1].timestamp_s - partner) < abs(buf[0].timestamp_s - partner):
                        self._drop(earlier)
                        continue
                elif not self._ended[earlier]:
                    return None  # need() asks for the look-ahead frame
            return self._emit()
        ended = self._exhausted()
        if ended is not None:
            other = "vis" if ended == "ir" else "ir"
            # index policy: read one more frame of the other stream to detect a length mismatch
            if self.policy == "timestamp" or self._buf[other] or self._ended[other]:
                self._finish(ended)
        return None


def pair_streams(
    ir_frames: Iterable[Frame],
    vis_frames: Iterable[Frame],
    *,
    policy: str = "index",
    tolerance_s: float | None = None,
    stats: PairingStats | None = None,
) -> Iterator[FramePair]:
    """Pair two frame iterables in the calling thread (see :class:`StreamPairer`).

    Pass a :class:`PairingStats` as ``stats`` to read the counts afterwards.
    """
    pairer = StreamPairer(policy=policy, tolerance_s=tolerance_s)
    if stats is not None:
        pairer.stats = stats
    its = {"ir": iter(ir_frames), "vis": iter(vis_frames)}
    while not pairer.done:
        role = pairer.need()
        if role is not None:
            pairer.push(role, next(its[role], None))
            continue
        pair = pairer.pop()
        if pair is not None:
            yield pair
        elif pairer.need() is None and not pairer.done:  # pragma: no cover - defensive
            raise RuntimeError("pairing made no progress")


def check_pairable(ir: FrameSource, vis: FrameSource, *, pairing: str) -> None:
    """Raise :class:`StreamMismatchError` when ``pairing="timestamp"`` would never pair: one source
    live (capture clock) and the other recorded (clock from 0)."""
    if pairing != "timestamp" or ir.is_live == vis.is_live:
        return
    live, recorded = (ir, vis) if ir.is_live else (vis, ir)
    raise StreamMismatchError(
        f"cannot pair the live {live.name} with the recorded {recorded.name} by timestamp: a live source is "
        "timestamped with the capture clock and a recording from 0, so no two frames would ever be paired; "
        "pair frame i with frame i instead (--pairing index)"
    )


def length_mismatch(stats: PairingStats, *, live: bool, lossless: bool, frame_counts: dict[str, int | None]) -> str | None:
    """The longer of two recorded streams, or ``None``: the pairer's finding when both were read
    losslessly; when frames were dropped (``latest``) only the declared frame counts can tell; live
    streams have no length."""
    if live:
        return None
    if lossless:
        return stats.length_mismatch
    ir, vis = frame_counts["ir"], frame_counts["vis"]
    if ir is None or vis is None or ir == vis:
        return None
    return "ir" if ir > vis else "vis"
