"""``precision="auto"`` on a CPU: measure the precisions on the running CPU, keep the fastest within the gate.

CPUs differ (AMX or not, AVX512-BF16 or not, VNNI or not) and so does which precision is fastest for
a given network and frame size; a fixed rule would be wrong somewhere. :class:`AutoPrecisionBackend`
therefore holds one backend per candidate precision (fp32 always; int8 when a calibrated file
exists; bf16 when the CPU has native bf16, see :func:`~dstfuse_stream.backends.precision.cpu_features`)
and, on the first frame of each size, runs :func:`choose_precision`:

1. every candidate fuses that frame once (warm-up; its output is kept);
2. ``rounds`` interleaved timed calls each (interleaving spreads a busy machine's noise over all);
3. a candidate passes when its output is within :data:`~dstfuse_stream.backends.precision.FIDELITY_GATE_DB`
   PSNR of the fp32 output on that frame;
4. the fastest passing candidate wins, unless it is less than ``min_gain`` faster than fp32 (then fp32:
   differences that small are noise).

The choice is cached for the rest of the process per (model, work scale, threads, frame size), so a
second :class:`~dstfuse_stream.fuser.Fuser` on the same weights does not measure again. It costs
``(1 + rounds)`` calls per candidate once per size (a fresh Fuser's first frame took 0.84 s at 640x480 on
2 cores here, 1.39 s for two single-thread copies): on a 20-frame clip that was a third of the run. So the choice is also stored
(:class:`ChoiceStore`, ``precision_choices.json`` in the export cache folder) under a key that names the
model, work scale, threads, frame size, CPU (model and features) and library versions: later processes
on the same machine reuse it and say so in ``describe()``; delete the file to measure again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.precision import FIDELITY_GATE_DB
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.metrics import psnr

__all__ = ["Measurement", "PrecisionChoice", "ChoiceStore", "choose_precision", "AutoPrecisionBackend", "clear_choice_cache"]

logger = logging.getLogger(__name__)

REFERENCE = "fp32"
_choice_cache: dict[tuple, "PrecisionChoice"] = {}
_choice_lock = threading.Lock()
#: one lock per cache key, held while that key is measured: backends that start together (the copies
#: of a :class:`~dstfuse_stream.backends.pool.BackendPool`) wait for one measurement and share its
#: choice instead of timing side by side (slowing each other) and possibly choosing differently
_measure_locks: dict[tuple, threading.Lock] = {}


@dataclass(frozen=True)
class Measurement:
    """One candidate on one frame: median latency and PSNR of its output vs the fp32 output."""

    precision: str
    median_ms: float
    psnr_db: float
    passed: bool


@dataclass(frozen=True)
class PrecisionChoice:
    """What :func:`choose_precision` decided for one frame size, and the numbers it decided on."""

    size_wh: tuple[int, int]
    chosen: str
    measurements: tuple[Measurement, ...]
    #: when this choice was measured (UTC, ISO 8601)
    measured_utc: str = ""
    #: the :class:`ChoiceStore` file it was read from (``None``: measured by this process)
    stored_in: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"size_wh": list(self.size_wh), "chosen": self.chosen, "measurements": [asdict(m) for m in self.measurements],
                "measured_utc": self.measured_utc}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PrecisionChoice":
        w, h = (int(v) for v in data["size_wh"])
        measurements = tuple(Measurement(str(m["precision"]), float(m["median_ms"]), float(m["psnr_db"]), bool(m["passed"]))
                             for m in data["measurements"])
        return cls((w, h), str(data["chosen"]), measurements, str(data.get("measured_utc", "")))

    def describe(self) -> str:
        parts = ", ".join(f"{m.precision} {m.median_ms:.1f} ms" + ("" if m.passed else f" ({m.psnr_db:.1f} dB: fails the gate)")
                          for m in self.measurements)
        stored = f"; measured {self.measured_utc}, stored in {self.stored_in}" if self.stored_in else ""
        return f"{self.size_wh[0]}x{self.size_wh[1]}: {self.chosen} ({parts}{stored})"


class ChoiceStore:
    """Precision choices kept across processes in one JSON file, ``{key: PrecisionChoice.to_dict()}``.

    The caller's key must name everything the choice depends on (model, work scale, threads, frame
    size, CPU, library versions). A missing, unreadable or corrupt file reads as empty (the choice is
    measured again and the file rewritten); a write that fails is logged and ignored: the store only
    saves time. Writes go to a temporary file renamed over the old one, so a reader never sees half a file.
    """

    FILENAME = "precision_choices.json"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("precision choices %s: unreadable (%s); measuring again", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> PrecisionChoice | None:
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            return replace(PrecisionChoice.from_dict(entry), stored_in=str(self.path))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("precision choices %s: bad entry (%s); measuring again", self.path, exc)
            return None

    def put(self, key: str, choice: PrecisionChoice) -> None:
        data = self._read()
        data[key] = choice.to_dict()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.info("precision choices %s: not stored (%s)", self.path, exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # the folder itself is not usable (a file in its place, no permission)
                pass


def _as_2d(output: np.ndarray) -> np.ndarray:
    """A fused output ``(H, W)`` or ``(B, 1, H, W)`` as one 2-D image (rows stacked) for :func:`psnr`."""
    output = np.asarray(output, dtype=np.float32)
    return output.reshape(-1, output.shape[-1])


def choose_precision(
    candidates: Mapping[str, Callable[[], np.ndarray]],
    *,
    rounds: int = 3,
    gate_db: float = FIDELITY_GATE_DB,
    min_gain: float = 0.05,
    clock: Callable[[], float] | None = None,
) -> tuple[str, tuple[Measurement, ...]]:
    """Time the ``candidates`` (precision -> a call fusing one fixed frame) and pick one.

    ``candidates`` must contain ``"fp32"``, the reference for fidelity and the default. Returns the
    chosen precision and one :class:`Measurement` per candidate (in the given order). ``clock``
    defaults to :func:`time.perf_counter`.
    """
    clock = clock or time.perf_counter
    if REFERENCE not in candidates:
        raise ConfigError(f"choose_precision: expected a {REFERENCE!r} candidate, got {sorted(candidates)}")
    if rounds < 1:
        raise ConfigError(f"choose_precision: expected rounds >= 1, got {rounds}")
    outputs = {name: _as_2d(call()) for name, call in candidates.items()}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, call in candidates.items():
            t0 = clock()
            call()
            times[name].append(clock() - t0)
    reference = outputs[REFERENCE]
    measurements = []
    for name in candidates:
        quality = math.inf if name == REFERENCE else psnr(outputs[name], reference)
        measurements.append(Measurement(name, statistics.median(times[name]) * 1e3, quality, quality >= gate_db))
    ref_ms = next(m.median_ms for m in measurements if m.precision == REFERENCE)
    best = min((m for m in measurements if m.passed), key=lambda m: m.median_ms)
    chosen = best.precision if best.median_ms < ref_ms * (1.0 - min_gain) else REFERENCE
    return chosen, tuple(measurements)


def clear_choice_cache() -> None:
    """Forget every cached choice of this process (tests, or after the machine's load changed)."""
    with _choice_lock:
        _choice_cache.clear()


class AutoPrecisionBackend(FusionBackend):
    """Runs each frame size on the precision :func:`choose_precision` picked for it on this CPU.

    Args:
        candidates: precision -> backend (``"fp32"`` required); the backends are owned and closed here.
        cache_key: identifies the model and settings for the process-wide choice cache (``None``: no
            sharing between instances).
        store: where choices outlive the process (:class:`ChoiceStore`; used with a ``cache_key`` only,
            which must then also name the CPU and library versions).
        rounds, min_gain: see :func:`choose_precision`.
    """

    name = "auto"
    accepts_uint8 = True

    def __init__(self, candidates: Mapping[str, FusionBackend], *, cache_key: Any = None, store: ChoiceStore | None = None,
                 rounds: int = 3, min_gain: float = 0.05) -> None:
        if REFERENCE not in candidates:
            raise ConfigError(f"AutoPrecisionBackend: expected a {REFERENCE!r} candidate, got {sorted(candidates)}")
        reference = candidates[REFERENCE]
        super().__init__(device=reference.device, precision="auto")
        self.candidates = dict(candidates)
        self.config = getattr(reference, "config", None)
        self.work_scale = getattr(reference, "work_scale", None)
        self._cache_key, self._store, self._rounds, self._min_gain = cache_key, store, rounds, min_gain
        self._choices: dict[tuple[int, int], PrecisionChoice] = {}
        self._lock = threading.Lock()

    @property
    def choices(self) -> dict[tuple[int, int], PrecisionChoice]:
        """Frame size ``(W, H)`` -> the choice made for it (empty before the first frame)."""
        return dict(self._choices)

    def choice_for(self, ir: np.ndarray, vis: np.ndarray) -> PrecisionChoice:
        """The choice for the size of this batch, measuring on its first pair when there is none yet."""
        size_wh = (int(ir.shape[-1]), int(ir.shape[-2]))
        with self._lock:
            choice = self._choices.get(size_wh)
            if choice is not None:
                return choice
            key = None if self._cache_key is None else (self._cache_key, size_wh)
            if key is None:
                choice = self._measure(ir, vis, size_wh)
            else:
                with _choice_lock:
                    measure_lock = _measure_locks.setdefault(key, threading.Lock())
                with measure_lock:
                    with _choice_lock:
                        choice = _choice_cache.get(key)
                    if choice is None:
                        choice = self._stored_or_measured(ir, vis, size_wh)
                        with _choice_lock:
                            _choice_cache[key] = choice
            self._choices[size_wh] = choice
            self.precision = choice.chosen
            return choice

    def _stored_or_measured(self, ir: np.ndarray, vis: np.ndarray, size_wh: tuple[int, int]) -> PrecisionChoice:
        """The choice the store holds for this key and size, else a new measurement (then stored)."""
        if self._store is None:
            return self._measure(ir, vis, size_wh)
        stored_key = json.dumps([*map(str, self._cache_key), *size_wh])
        choice = self._store.get(stored_key)
        if choice is not None:
            logger.info("precision auto at %s (delete the file to measure again)", choice.describe())
            return choice
        choice = self._measure(ir, vis, size_wh)
        self._store.put(stored_key, choice)
        return choice

    def _measure(self, ir: np.ndarray, vis: np.ndarray, size_wh: tuple[int, int]) -> PrecisionChoice:
        one_ir, one_vis = ir[:1], vis[:1]
        calls = {name: (lambda b=b: b.fuse_batch(one_ir, one_vis)) for name, b in self.candidates.items()}
        chosen, measurements = choose_precision(calls, rounds=self._rounds, min_gain=self._min_gain)
        choice = PrecisionChoice(size_wh, chosen, measurements, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        logger.info("precision auto on this CPU at %s", choice.describe())
        return choice

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return self.candidates[self.choice_for(ir, vis).chosen].fuse_batch(ir, vis)

    def describe(self) -> str:
        made = "; ".join(c.describe() for c in self._choices.values()) or "measured on the first frame of each size"
        return f"auto precision among {list(self.candidates)} on {self.device} [{made}]; fp32 is {self.candidates[REFERENCE].describe()}"

    def close(self) -> None:
        for backend in self.candidates.values():
            backend.close()
