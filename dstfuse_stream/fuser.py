"""The fusion step on numpy frames: :class:`Fuser` (prepare -> fuse -> finish) and one-shot :func:`fuse`.

::

    fuser = Fuser()                       # shipped weights, fastest backend here
    fused = fuser(ir, vis)                # uint8 BGR at the visible frame's size

One pair goes through three steps, the same for single calls, batches, previews, the streaming
pipeline and the benchmarks:

1. **prepare**: check both frames (:func:`~dstfuse_stream.imageio.check_image`); IR to uint8 luma
   (:func:`~dstfuse_stream.colour.ir_to_luma`: gray as is, BGR's Y plane, uint16 through the Fuser's
   :class:`~dstfuse_stream.colour.IrGain`, ``ir_range``) and onto
   the visible grid (resized, or warped by the homography); the visible frame resized to the
   processing size (default: its own) and split once into Y and CrCb.
2. **fuse**: the backend fuses the two uint8 Y planes (it converts them to float in [0, 1]).
3. **finish**: fused Y to uint8 (fixed mapping, no per-frame stretch), merged once with the visible
   CrCb into BGR; or the fused Y alone for ``output="gray"`` (and for a gray visible frame).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.pool import BackendPool
from dstfuse_stream.colour import IrGain, float_to_uint8, ir_to_luma, merge_luma, split_luma
from dstfuse_stream.errors import BackendError, ConfigError, InputShapeError
from dstfuse_stream.geometry import align_ir, resize_to
from dstfuse_stream.imageio import check_image, to_gray

if TYPE_CHECKING:
    import torch

__all__ = ["Fuser", "FusedFrame", "PreparedPair", "fuse", "default_fuser", "OUTPUTS"]

logger = logging.getLogger(__name__)

OUTPUTS = ("bgr", "gray")


@dataclass
class FusedFrame:
    """One fused pair; every image uint8 at the processing size.

    Attributes:
        ir: IR luma on the visible grid ``(H, W)``.
        vis: the visible frame ``(H, W, 3)`` BGR or ``(H, W)`` gray.
        vis_y: visible luma ``(H, W)``.
        fused_y: fused luma ``(H, W)``.
        fused: the result: fused Y with the visible chroma as BGR ``(H, W, 3)``, or ``fused_y``
            (``output="gray"``, or a gray visible frame).
        index: position in the stream (0 for single pairs).
        timestamp: the visible frame's timestamp in seconds (0.0 for single pairs).
        name: source file stem (image folders), else ``None``.
        captured_s: ``time.monotonic()`` when the later of the two source frames was read.
        timings: milliseconds per stage (``preprocess_ms``, ``fuse_ms``, ``postprocess_ms``; the
            pipeline adds its own, see :data:`dstfuse_stream.sinks.TIMING_COLUMNS`).
    """

    ir: np.ndarray
    vis: np.ndarray
    vis_y: np.ndarray
    fused_y: np.ndarray
    fused: np.ndarray
    index: int = 0
    timestamp: float = 0.0
    name: str | None = None
    captured_s: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)


class PreparedPair(NamedTuple):
    """A pair on one grid, as the backend gets it: IR and visible luma (uint8), the visible frame and
    its chroma (``None`` for gray output or a gray visible frame)."""

    ir_y: np.ndarray
    vis: np.ndarray
    vis_y: np.ndarray
    crcb: np.ndarray | None


class _ObjectBackend(FusionBackend):
    """Adapts any object with ``fuse(ir, vis)`` (uint8 ``(H, W)`` luma -> float in [0, 1] or uint8)."""

    name = "custom"
    accepts_uint8 = True

    def __init__(self, obj: Any) -> None:
        if not callable(getattr(obj, "fuse", None)):
            raise ConfigError(f"backend: expected a name, a FusionBackend or an object with fuse(ir, vis), got {type(obj).__name__}")
        super().__init__(device=str(getattr(obj, "device", "cpu")), precision=str(getattr(obj, "precision", "n/a")))
        self.obj = obj

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        out = [np.asarray(self.obj.fuse(ir[i, 0], vis[i, 0])) for i in range(ir.shape[0])]
        return np.stack([o.astype(np.float32) / np.float32(255.0) if o.dtype == np.uint8 else o.astype(np.float32) for o in out])[:, None]

    def describe(self) -> str:
        return f"custom fuser {type(self.obj).__name__}"

    def close(self) -> None:
        if callable(getattr(self.obj, "close", None)):
            self.obj.close()


class Fuser:
    """Fuse IR and visible frames (numpy uint8, IR also uint16) with DSTFuse.

    Args:
        weights: checkpoint path; ``None`` = the shipped weights.
        backend: ``"auto"`` (fastest available, see :func:`dstfuse_stream.backends.create_backend`),
            ``"torch"``, ``"onnx"``, ``"tensorrt"``; or a ready backend object (a
            :class:`~dstfuse_stream.backends.FusionBackend`, or anything with ``fuse(ir, vis)`` taking
            uint8 ``(H, W)`` luma and returning ``(H, W)`` float in [0, 1] or uint8), which the Fuser
            then owns; a :class:`~dstfuse_stream.backends.pool.BackendPool` fuses one frame per member at once.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"`` (GPU: fp16; CPU: the fastest of fp32/int8/bf16 within the fidelity gate,
            measured on the first frame of each size), ``"fp32"``, ``"fp16"`` (CUDA), ``"bf16"``,
            ``"int8"`` (needs a calibrated file: ``dstfuse-export int8``); see
            :mod:`dstfuse_stream.backends.precision`.
        homography: 3x3 IR -> visible pixel map, given once: every IR frame is warped with it onto the
            visible grid. Without it, IR is resized to the visible frame's size.
        output: ``"bgr"`` (fused luma + the visible chroma) or ``"gray"`` (the fused luma).
        threads: CPU threads of the backend (ONNX Runtime session, default: the usable cores; torch:
            process-wide, default: torch's).
        ir_range: how uint16 IR becomes 8-bit (:mod:`dstfuse_stream.colour`): ``"auto"`` (running
            percentile stretch: automatic gain control for video; its state is :attr:`ir_gain`),
            ``"frame"`` (each frame's own percentiles) or ``(lo, hi)`` raw values (fixed).
        work_scale: ``"auto"`` (0.5 for models that support it, else 1), 1, 0.5 or 0.25: the
            resolution the networks run at; their decisions are applied to the full-resolution frames
            (:mod:`dstfuse_stream.backends.work_scale`).
        concurrent_frames: frames fused at once by :meth:`process_many` (and the streaming pipeline):
            that many backends with ``threads / concurrent_frames`` threads each
            (:class:`~dstfuse_stream.backends.pool.BackendPool`); 1 (default) is the lowest latency.

    Call it as ``fuser(ir, vis)``: IR ``(H, W)`` gray or ``(H, W, 3)`` BGR, uint8 or uint16 (see
    :func:`~dstfuse_stream.colour.ir_to_luma`); visible BGR or gray uint8; any sizes. Returns uint8 at
    the visible frame's size: ``(H, W, 3)`` BGR, or ``(H, W)`` for ``output="gray"`` or a gray visible.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        backend: str | Any = "auto",
        device: str = "auto",
        precision: str = "auto",
        *,
        homography: np.ndarray | Sequence[Sequence[float]] | None = None,
        output: str = "bgr",
        threads: int | None = None,
        ir_range: str | Sequence[float] = "auto",
        work_scale: float | str = "auto",
        concurrent_frames: int = 1,
    ) -> None:
        if output not in OUTPUTS:
            raise ConfigError(f"output {output!r}: expected one of {list(OUTPUTS)}")
        if not isinstance(concurrent_frames, int) or concurrent_frames < 1:
            raise ConfigError(f"concurrent_frames: expected an int >= 1, got {concurrent_frames!r}")
        #: uint16 IR -> uint8 (running state for ``ir_range="auto"``; ``ir_gain.reset()`` restarts it)
        self.ir_gain = IrGain(ir_range)
        if homography is not None:
            from dstfuse_stream.registration import check_homography

            homography = check_homography(homography)
        self.homography: np.ndarray | None = homography
        self.output = output
        self.concurrent_frames = concurrent_frames
        self._executor: ThreadPoolExecutor | None = None
        if isinstance(backend, str):
            from dstfuse_stream.backends.pool import create_backends

            self.backend: FusionBackend = create_backends(
                backend, weights=weights, device=device, precision=precision, work_scale=work_scale, threads=threads,
                copies=concurrent_frames,
            )
        else:
            given = {"weights": weights, "device": device != "auto", "precision": precision != "auto", "threads": threads,
                     "work_scale": work_scale != "auto", "concurrent_frames": concurrent_frames != 1}
            if any(v not in (None, False) for v in given.values()):
                raise ConfigError(f"backend object given: set {[k for k, v in given.items() if v not in (None, False)]} on it instead")
            self.backend = backend if isinstance(backend, FusionBackend) else _ObjectBackend(backend)
            self.concurrent_frames = len(backend.backends) if isinstance(backend, BackendPool) else 1

    # -- the three steps ------------------------------------------------------------------------

    def prepare(self, ir: np.ndarray, vis: np.ndarray, *, size_wh: tuple[int, int] | None = None) -> PreparedPair:
        """Step 1: check both frames, IR to luma on the visible grid, visible resized and split."""
        vis = check_image(vis, "vis")
        vis_wh = (int(vis.shape[1]), int(vis.shape[0]))
        size_wh = vis_wh if size_wh is None else size_wh
        ir_y = align_ir(ir_to_luma(ir, self.ir_gain), vis_wh, size_wh=size_wh, homography=self.homography)
        vis = resize_to(vis, size_wh)
        if vis.ndim == 3 and self.output == "bgr":
            vis_y, crcb = split_luma(vis)
        else:
            vis_y, crcb = to_gray(vis), None
        return PreparedPair(ir_y, vis, vis_y, crcb)

    def finish(self, fused: np.ndarray, prepared: PreparedPair) -> tuple[np.ndarray, np.ndarray]:
        """Step 3: the backend's ``(H, W)`` output -> ``(fused_y, result)``, both uint8."""
        if fused.shape != prepared.vis_y.shape:
            raise BackendError(f"backend returned shape {fused.shape}, expected {prepared.vis_y.shape}")
        fused_y = fused if fused.dtype == np.uint8 else float_to_uint8(fused)
        return fused_y, fused_y if prepared.crcb is None else merge_luma(fused_y, prepared.crcb)

    def process(self, ir: np.ndarray, vis: np.ndarray, *, size_wh: tuple[int, int] | None = None) -> FusedFrame:
        """Fuse one pair and keep every intermediate: a :class:`FusedFrame` with stage timings.

        ``size_wh`` fuses at that size instead of the visible frame's (the pipeline's ``--resize`` /
        ``--max-size``).
        """
        t0 = time.perf_counter()
        prepared = self.prepare(ir, vis, size_wh=size_wh)
        t1 = time.perf_counter()
        fused = self.backend.fuse(prepared.ir_y, prepared.vis_y)
        t2 = time.perf_counter()
        fused_y, out = self.finish(np.asarray(fused), prepared)
        t3 = time.perf_counter()
        timings = {"preprocess_ms": (t1 - t0) * 1e3, "fuse_ms": (t2 - t1) * 1e3, "postprocess_ms": (t3 - t2) * 1e3}
        return FusedFrame(prepared.ir_y, prepared.vis, prepared.vis_y, fused_y, out, timings=timings)

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse one pair; see the class docstring for what goes in and comes out."""
        return self.process(ir, vis).fused

    def process_many(self, pairs: Sequence[tuple[np.ndarray, np.ndarray, tuple[int, int] | None]]) -> list[FusedFrame]:
        """:meth:`process` each ``(ir, vis, size_wh)``, up to :attr:`concurrent_frames` at once; results in order."""
        if self.concurrent_frames == 1 or len(pairs) < 2:
            return [self.process(ir, vis, size_wh=size_wh) for ir, vis, size_wh in pairs]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.concurrent_frames, thread_name_prefix="dstfuse-fuse")
        futures = [self._executor.submit(self.process, ir, vis, size_wh=size_wh) for ir, vis, size_wh in pairs]
        return [f.result() for f in futures]

    def fuse_batch(self, irs: Sequence[np.ndarray] | np.ndarray, vis_list: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Fuse many pairs, one backend call per distinct visible size.

        ``irs``/``vis_list``: lists of frames, or stacked arrays ``(N, H, W[, 3])``. Returns a list,
        or one stacked array when both inputs were arrays.
        """
        if len(irs) != len(vis_list):
            raise InputShapeError(f"fuse_batch: expected as many IR as visible frames, got {len(irs)} and {len(vis_list)}")
        prepared = [self.prepare(ir, vis) for ir, vis in zip(irs, vis_list)]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, p in enumerate(prepared):
            by_shape[p.vis_y.shape].append(i)
        results: list[np.ndarray] = [np.empty(0)] * len(prepared)
        for idx in by_shape.values():
            ir_b = np.stack([prepared[i].ir_y for i in idx])[:, None]
            vis_b = np.stack([prepared[i].vis_y for i in idx])[:, None]
            fused_b = np.asarray(self.backend.fuse(ir_b, vis_b))
            for k, i in enumerate(idx):
                results[i] = self.finish(fused_b[k, 0], prepared[i])[1]
        if isinstance(irs, np.ndarray) and isinstance(vis_list, np.ndarray):
            return np.stack(results) if results else np.empty((0,), np.uint8)
        return results

    def fuse_tensor(self, ir: "torch.Tensor", vis: "torch.Tensor") -> "torch.Tensor":
        """Fuse luma tensors ``(B, 1, H, W)``, float in [0, 1], on any device; float32 ``(B, 1, H, W)``
        on the same device (no colour handling, no resizing: both must have one size)."""
        return self.backend.fuse_tensor(ir, vis)

    # -- the rest -------------------------------------------------------------------------------

    @property
    def model_config(self) -> Any:
        """The backend's model config (a :class:`~dstfuse_stream.config.DSTFuseConfig`), when it has one."""
        return getattr(self.backend, "config", None)

    def describe(self) -> str:
        """One line: backend, device, precision, output."""
        warp = ", homography" if self.homography is not None else ""
        return f"{self.backend.describe()}; output {self.output}{warp}"

    def close(self) -> None:
        """Release the backend (and the threads of :meth:`process_many`). Safe to call twice."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.backend.close()

    def __enter__(self) -> "Fuser":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Fuser: {self.describe()}>"


# ---------------------------------------------------------------------------------------------
# one-shot convenience

_CACHE_SIZE = 4
_cache: dict[tuple, Fuser] = {}
_cache_lock = threading.Lock()


def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, str(value.dtype), value.tobytes())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def default_fuser(**kwargs: Any) -> Fuser:
    """The cached :class:`Fuser` for these keyword arguments (created on first use; at most four kept)."""
    key = tuple(sorted((name, _hashable(value)) for name, value in kwargs.items()))
    with _cache_lock:
        fuser = _cache.get(key)
        if fuser is None:
            fuser = _cache[key] = Fuser(**kwargs)
            while len(_cache) > _CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
    return fuser


def fuse(ir: np.ndarray, vis: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Fuse one pair with a cached default :class:`Fuser` built from ``kwargs`` (same arguments).

    The first call for given arguments loads the model (and may export ONNX once); later calls
    reuse it. Pairs are independent: uint16 IR is stretched per frame (``ir_range="frame"``) unless
    ``ir_range`` is given.
    """
    kwargs.setdefault("ir_range", "frame")
    return default_fuser(**kwargs)(ir, vis)
