"""Model-only latency and throughput: one DSTFuse forward pass per call, per backend, preset and size.

Each *case* (backend x preset x resolution, batch 1) runs ``warmup`` untimed calls, then timed
calls until ``iters`` are done, or until ``max_case_s`` seconds have passed and at least
``min_iters`` are done. The clock (``time.perf_counter``) is read after the device is
synchronised (``torch.cuda.synchronize`` on CUDA). Torch runs under ``torch.inference_mode``.

What one call measures: ``backend.fuse_batch(ir, vis)`` on preallocated float32 ``(1, 1, H, W)``
arrays, i.e. the network plus host<->device copies (zero-copy on CPU), without the input range
check of :meth:`FusionBackend.fuse` and without decoding/colour conversion (see
:mod:`dstfuse_bench.pipeline_bench` for those).

Backends (``BACKEND_SPECS``): ``torch`` (eager, CPU, torch's thread setting), ``torch-t1`` (eager,
1 thread), ``torch-compile`` (``torch.compile``, CPU; its
first call includes compilation and is reported as ``first_call_ms``), ``onnx-t1``/``onnx-t2``
(ONNX Runtime CPU with 1 and 2 intra-op threads; the model is exported per preset with
:func:`dstfuse_stream.backends.onnx_export.export_onnx`), ``torch-cuda``, ``onnx-cuda`` and ``tensorrt``
(TensorRT fp16 via ``create_backend("tensorrt")``) and ``auto`` (whatever ``create_backend("auto")``
picks, as the streaming CLI does). A backend the machine lacks is reported as ``skipped`` with the
reason.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.model import DSTFuse
from dstfuse_stream.model_stats import count_macs

from .memory import PeakMemory
from .stats import summarize_latencies

__all__ = [
    "BackendSpec",
    "BACKEND_SPECS",
    "CaseSettings",
    "TimedCalls",
    "backend_unavailable_reason",
    "build_backend",
    "onnx_exporter",
    "time_calls",
    "run_case",
    "run_model_benchmarks",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """One way of running the model.

    Attributes:
        label: name used on the command line and in results (``torch``, ``onnx-t1``...).
        family: ``torch``, ``onnx``, ``tensorrt`` or ``auto`` (what ``dstfuse-stream --backend auto`` picks).
        device: ``cpu``, ``cuda`` or ``auto``.
        compile: wrap the torch model in ``torch.compile``.
        threads: intra-op threads: ONNX Runtime's ``intra_op_num_threads``, or for torch
            ``torch.set_num_threads`` for the duration of the case (``None``: the current default).
        precision: ``fp32`` or ``fp16``.
    """

    label: str
    family: str
    device: str
    compile: bool = False
    threads: int | None = None
    precision: str = "fp32"


BACKEND_SPECS: dict[str, BackendSpec] = {
    spec.label: spec
    for spec in (
        BackendSpec("torch", "torch", "cpu"),
        BackendSpec("torch-t1", "torch", "cpu", threads=1),
        BackendSpec("torch-compile", "torch", "cpu", compile=True),
        BackendSpec("onnx-t1", "onnx", "cpu", threads=1),
        BackendSpec("onnx-t2", "onnx", "cpu", threads=2),
        BackendSpec("torch-cuda", "torch", "cuda"),
        BackendSpec("onnx-cuda", "onnx", "cuda"),
        BackendSpec("tensorrt", "tensorrt", "cuda", precision="fp16"),
        BackendSpec("auto", "auto", "auto", precision="default"),
    )
}


def backend_unavailable_reason(spec: BackendSpec) -> str | None:
    """Why ``spec`` cannot run on this machine, or ``None`` when it can."""
    if spec.device == "cuda" and not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda})"
    if spec.family == "onnx":
        import onnxruntime as ort

        if spec.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if spec.family == "tensorrt":
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers() and importlib.util.find_spec("torch_tensorrt") is None:
            return "neither onnxruntime's TensorrtExecutionProvider nor torch_tensorrt is installed"
    return None


def build_backend(
    spec: BackendSpec,
    model: DSTFuse,
    *,
    resolution_wh: tuple[int, int],
    onnx_path: Callable[[], Path],
) -> FusionBackend:
    """Create the backend of ``spec`` for ``model`` through :func:`dstfuse_stream.backends.create_backend`.

    ``model`` is left untouched (torch-based backends get a copy). ``onnx_path`` returns the ONNX
    export of ``model`` (called only by backends that need one, so the export happens once per
    preset and only when needed). TensorRT gets a fixed shape profile at ``resolution_wh``.
    """
    from dstfuse_stream.backends import create_backend

    if spec.family == "torch":
        if spec.compile:
            torch.compiler.reset()  # a fresh compile per case: first_call_ms is the compile time at this size
        return create_backend(
            "torch", model=copy.deepcopy(model), device=spec.device, precision=spec.precision, compile=spec.compile
        )
    if spec.family == "onnx":
        return create_backend(
            "onnx", model=model, onnx_path=onnx_path(), device=spec.device, precision=spec.precision, threads=spec.threads
        )
    if spec.family == "tensorrt":
        from dstfuse_stream.backends.tensorrt_options import ShapeProfile

        width, height = resolution_wh
        profile = ShapeProfile.from_hw((height, width), (height, width), (height, width))
        return create_backend(
            "tensorrt", model=copy.deepcopy(model), onnx_path=onnx_path(), device="cuda", precision=spec.precision, profile=profile
        )
    if spec.family == "auto":
        return create_backend("auto", model=copy.deepcopy(model), onnx_path=onnx_path(), device=spec.device)
    raise ConfigError(f"backend family {spec.family!r}: expected torch, onnx, tensorrt or auto")


@dataclass
class TimedCalls:
    """Raw timings of one case, in seconds."""

    first_call_s: float
    warmup_s: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int,
    iters: int,
    min_iters: int = 1,
    max_time_s: float = math.inf,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> TimedCalls:
    """Call ``fn`` ``warmup`` times untimed-for-statistics, then time up to ``iters`` calls.

    The timed loop stops early once ``max_time_s`` have passed and at least ``min_iters`` calls
    are done. ``sync`` runs after every call, before the clock is read. The first warm-up call
    (or the first timed call when ``warmup == 0``) is reported as ``first_call_s``.
    """
    if iters < 1 or warmup < 0 or not 1 <= min_iters <= iters:
        raise ConfigError(f"expected iters >= 1, warmup >= 0, 1 <= min_iters <= iters; got {iters}, {warmup}, {min_iters}")
    result = TimedCalls(first_call_s=math.nan)
    for _ in range(warmup):
        t0 = clock()
        fn()
        sync()
        result.warmup_s.append(clock() - t0)
    start = clock()
    for i in range(iters):
        if i >= min_iters and clock() - start >= max_time_s:
            break
        t0 = clock()
        fn()
        sync()
        result.latencies_s.append(clock() - t0)
    result.first_call_s = (result.warmup_s or result.latencies_s)[0]
    return result


@dataclass(frozen=True)
class CaseSettings:
    """Iteration policy of every case (see :func:`time_calls`) and the skip rule.

    ``skip_over_s``: skip a case whose predicted duration ``(warmup + min_iters) x predicted
    latency`` exceeds this; the latency is predicted from the same preset and backend at the
    previous (smaller) resolution, scaled by the pixel count. ``None``: never skip.
    """

    warmup: int = 2
    iters: int = 20
    min_iters: int = 3
    max_case_s: float = 20.0
    skip_over_s: float | None = None
    seed: int = 0


def _sync_for(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def run_case(
    spec: BackendSpec,
    model: DSTFuse,
    *,
    resolution_wh: tuple[int, int],
    settings: CaseSettings,
    onnx_path: Callable[[], Path],
) -> dict[str, Any]:
    """Time one backend x model x resolution; returns the result row (``status`` ``ok``)."""
    width, height = resolution_wh
    rng = np.random.default_rng(settings.seed)
    ir = rng.random((1, 1, height, width), dtype=np.float32)
    vis = rng.random((1, 1, height, width), dtype=np.float32)
    previous_threads = torch.get_num_threads()
    if spec.family == "torch" and spec.threads is not None:
        torch.set_num_threads(spec.threads)
    backend = None
    try:
        backend = build_backend(spec, model, resolution_wh=resolution_wh, onnx_path=onnx_path)
        sync = _sync_for(backend.device)
        gc.collect()
        with torch.inference_mode(), PeakMemory(device=backend.device) as mem:
            timed = time_calls(
                lambda: backend.fuse_batch(ir, vis),
                warmup=settings.warmup,
                iters=settings.iters,
                min_iters=settings.min_iters,
                max_time_s=settings.max_case_s,
                sync=sync,
            )
        description = backend.describe()
    finally:
        if backend is not None:
            backend.close()
        torch.set_num_threads(previous_threads)
    return {
        "status": "ok",
        "backend_description": description,
        "backend_device": backend.device,
        "backend_precision": backend.precision,
        "warmup": len(timed.warmup_s),
        "first_call_ms": timed.first_call_s * 1e3,
        **summarize_latencies(timed.latencies_s),
        "peak_mem_mib": mem.peak_mib,
        "peak_mem_delta_mib": mem.delta_mib,
        "mem_method": mem.method,
        "latencies_ms": [t * 1e3 for t in timed.latencies_s],
    }


def onnx_exporter(model: DSTFuse, folder: Path, preset: str, cache: dict[str, Path]) -> Callable[[], Path]:
    """A function returning the fp32 ONNX export of ``model`` in ``folder``, exported on first call only."""

    def get() -> Path:
        if preset not in cache:
            from dstfuse_stream.backends.onnx_export import export_onnx

            t0 = time.perf_counter()
            result = export_onnx(  # parity-checked against torch on one small odd size (cheap)
                model, folder / f"dstfuse_{preset}_fp32.onnx", precision="fp32", parity_shapes=((1, 1, 37, 53),)
            )
            logger.info("exported %s to ONNX in %.1f s", preset, time.perf_counter() - t0)
            cache[preset] = result.path
        return cache[preset]

    return get


def run_model_benchmarks(
    models: dict[str, DSTFuse],
    *,
    backends: dict[str, Sequence[str]],
    resolutions: Sequence[tuple[int, int]],
    settings: CaseSettings,
    workdir: str | os.PathLike[str],
    weights: dict[str, str] | None = None,
    exports: dict[str, Path] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (preset, resolution, backend) case; never raises for one failing case.

    Args:
        models: preset name -> model (CPU, eval mode).
        backends: preset name -> backend labels (keys of :data:`BACKEND_SPECS`) to run for it.
        resolutions: ``(width, height)`` sizes, run from smallest to largest.
        settings: iteration policy.
        workdir: folder for ONNX exports.
        exports: preset -> ONNX file already exported (filled in by this function; pass the same
            dict to other users of :func:`onnx_exporter` to export each preset once).
        weights: preset name -> where its weights came from (written into each row).
        on_result: called with each row as soon as it exists (progress display).

    Each row has ``preset``, ``backend``, ``width``, ``height``, ``pixels``, ``batch``, ``gmacs`` and
    ``status`` (``ok``, ``skipped`` or ``failed``, with ``reason`` for the latter two) plus, when
    ``ok``, the statistics of :func:`run_case`.
    """
    for preset, labels in backends.items():
        unknown = [label for label in labels if label not in BACKEND_SPECS]
        if unknown:
            raise ConfigError(f"backends for {preset}: unknown {unknown}; expected some of {list(BACKEND_SPECS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exports = {} if exports is None else exports
    rows: list[dict[str, Any]] = []
    ordered = sorted(resolutions, key=lambda wh: wh[0] * wh[1])
    for preset, model in models.items():
        onnx_path = onnx_exporter(model, workdir, preset, exports)
        last_ok: dict[str, tuple[int, float]] = {}
        for width, height in ordered:
            pixels = width * height
            gmacs = count_macs(model, (1, 1, height, width), (1, 1, height, width)) / 1e9
            for label in backends.get(preset, ()):
                spec = BACKEND_SPECS[label]
                row: dict[str, Any] = {
                    "preset": preset,
                    "backend": label,
                    "family": spec.family,
                    "device": spec.device,
                    "precision": spec.precision,
                    "threads": spec.threads
                    if spec.threads is not None
                    else (torch.get_num_threads() if spec.family == "torch" else "default"),
                    "weights": (weights or {}).get(preset, "random"),
                    "width": width,
                    "height": height,
                    "pixels": pixels,
                    "batch": 1,
                    "gmacs": gmacs,
                }
                reason = backend_unavailable_reason(spec)
                if reason is None and settings.skip_over_s is not None and label in last_ok:
                    prev_pixels, prev_s = last_ok[label]
                    predicted_s = prev_s * pixels / prev_pixels * (settings.warmup + settings.min_iters)
                    if predicted_s > settings.skip_over_s:
                        reason = (
                            f"predicted {predicted_s:.0f} s for {settings.warmup} warm-up + {settings.min_iters} timed "
                            f"calls (from {prev_s * 1e3:.0f} ms at {prev_pixels} px) > --skip-over-s {settings.skip_over_s:g}"
                        )
                if reason is not None:
                    row.update(status="skipped", reason=reason)
                else:
                    logger.info("case %s / %s / %dx%d", preset, label, width, height)
                    try:
                        row.update(run_case(spec, model, resolution_wh=(width, height), settings=settings, onnx_path=onnx_path))
                    except Exception as exc:  # noqa: BLE001 - one failing backend must not end the benchmark
                        logger.warning("case %s / %s / %dx%d failed", preset, label, width, height, exc_info=True)
                        row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).strip()[:500]}")
                    else:
                        last_ok[label] = (pixels, row["median_ms"] / 1e3)
                        row["gmacs_per_s"] = gmacs * row["fps"]
                rows.append(row)
                if on_result is not None:
                    on_result(row)
    return rows
