"""Model-only speed on a GPU: DSTFuse presets x sizes x batches x precisions x layouts x compile modes.

A *case* is a model spec (a preset, optionally with a work scale: ``stream@0.5``), a size ``WxH``, a
batch size and a :class:`Variant` (precision ``fp32``/``fp16``/``bf16``, NCHW or channels_last, eager
or a ``torch.compile`` mode). Per case, on random inputs (never zeros):

1. **correct first**: the first output against an fp32 eager reference computed with TF32 off,
   ``rel_err = ||out - ref|| / ||ref||``; a case over its :data:`PARITY_GATES` entry is reported with
   ``parity_ok: false`` and never counts as the fastest. The first call also compiles (``torch.compile``)
   and autotunes (cuDNN): ``first_call_ms``.
2. **warm-up**, then **back-to-back calls** alternating two input sets, each call bracketed by CUDA
   events with no host sync in between (one at the end): per-call device time (``median_ms``...) and
   ``fps = batch x calls / sum of call times``; then a few calls each followed by a host sync
   (``sync_median_ms``: the latency of a caller that waits for every result).
3. **peak memory** over the case: ``torch.cuda.max_memory_allocated`` (CPU: peak RSS; see :mod:`.memory`).

On a CPU (the rehearsal) events become ``time.perf_counter``, fp16 and the CUDA-graph modes are skipped
with their reason, and ``torch.compile`` runs its ``eager`` backend (graph capture only, no code generation).
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dstfuse_stream.config import get_config
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.model import DSTFuse
from dstfuse_stream.model_stats import count_macs

from .memory import PeakMemory
from .stats import summarize_latencies

__all__ = [
    "DTYPES",
    "COMPILE_MODES",
    "PARITY_GATES",
    "Variant",
    "Case",
    "build_model",
    "prepare_variant",
    "relative_error",
    "case_matrix",
    "skip_reason",
    "run_case",
    "run_cases",
]

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: ``torch.compile`` modes (inductor); the ones with ``cudagraphs`` capture CUDA graphs.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
_CUDA_GRAPH_MODES = ("max-autotune", "reduce-overhead")
#: Largest ``rel_err`` against the fp32 reference that still counts as correct (fp32 runs cuDNN's TF32).
PARITY_GATES = {"fp32": 1e-2, "fp16": 2e-2, "bf16": 5e-2}


@dataclass(frozen=True)
class Variant:
    """How the network runs: ``precision``, ``channels_last`` memory format, ``compile_mode`` (``None``: eager)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ConfigError(f"precision {self.precision!r}: expected one of {list(DTYPES)}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"compile mode {self.compile_mode!r}: expected one of {list(COMPILE_MODES)}")

    @property
    def label(self) -> str:
        """``fp16/cl/max-autotune``-style name (``nchw`` and ``eager`` spelled out)."""
        return "/".join((self.precision, "cl" if self.channels_last else "nchw", self.compile_mode or "eager"))

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """Inverse of :attr:`label`: ``"bf16/cl/eager"``."""
        parts = text.split("/")
        if len(parts) != 3 or parts[1] not in ("cl", "nchw"):
            raise ConfigError(f"variant {text!r}: expected PRECISION/cl|nchw/eager|MODE, e.g. 'fp16/cl/max-autotune'")
        return cls(parts[0], parts[1] == "cl", None if parts[2] == "eager" else parts[2])


@dataclass(frozen=True)
class Case:
    """One timed configuration."""

    model: str
    size_wh: tuple[int, int]
    batch: int
    variant: Variant


def build_model(spec: str, *, seed: int = 0) -> DSTFuse:
    """A randomly initialised model (speed does not depend on the weight values) for ``preset[@scale]``."""
    name, _, scale = spec.partition("@")
    torch.manual_seed(seed)
    model = DSTFuse(get_config(name)).eval()
    return model.set_work_scale(float(scale)) if scale else model


def prepare_variant(model: DSTFuse, variant: Variant, device: str, *, compile_backend: str = "inductor") -> torch.nn.Module:
    """A copy of ``model`` on ``device`` in the variant's dtype and layout, compiled when it says so."""
    net = copy.deepcopy(model).to(device=device, dtype=DTYPES[variant.precision]).eval()
    if variant.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if variant.compile_mode is None:
        return net
    # A fresh dynamo cache per case: every model copy shares DSTFuse.forward's code object, and past the
    # recompile limit dynamo would silently run it eagerly. Inductor's autotuning caches are kept.
    torch.compiler.reset()
    if compile_backend == "inductor":
        return torch.compile(net, mode=variant.compile_mode, dynamic=False)
    from torch import _inductor

    _inductor.list_mode_options(variant.compile_mode)  # raises for a misspelt mode, as inductor would
    return torch.compile(net, backend=compile_backend, dynamic=False)


def make_inputs(size_wh: tuple[int, int], batch: int, device: str, *, seed: int, sets: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``sets`` float32 ``(ir, vis)`` pairs, uniform in [0, 1], on ``device``."""
    width, height = size_wh
    gen = torch.Generator().manual_seed(seed)

    def pair() -> tuple[torch.Tensor, torch.Tensor]:
        ir, vis = (torch.rand(batch, 1, height, width, generator=gen).to(device) for _ in range(2))
        return ir, vis

    return [pair() for _ in range(sets)]


def as_variant_inputs(inputs: list[tuple[torch.Tensor, torch.Tensor]], variant: Variant) -> list[tuple[torch.Tensor, ...]]:
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    return [tuple(t.to(DTYPES[variant.precision]).contiguous(memory_format=fmt) for t in pair) for pair in inputs]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (``nan`` when ``out`` has a non-finite value)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return math.nan
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def reference_output(model: DSTFuse, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """fp32 eager output with TF32 off (cuDNN and matmul), the yardstick of every variant."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        net = copy.deepcopy(model).to(ir.device).float().eval()
        with torch.inference_mode():
            return net(ir, vis).float().cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def skip_reason(variant: Variant, device: str) -> str | None:
    """Why ``variant`` is not run on ``device`` (``None``: it runs)."""
    if device.startswith("cuda"):
        return None
    if variant.precision == "fp16":
        return "fp16 is a CUDA path (the runtime refuses fp16 on a CPU)"
    if variant.compile_mode in _CUDA_GRAPH_MODES:
        return f"mode {variant.compile_mode!r} captures CUDA graphs: needs a CUDA device"
    return None


def case_matrix(models: Sequence[str], sizes: Sequence[tuple[int, int]], batches: Sequence[int], variants: Sequence[Variant]) -> list[Case]:
    """Every combination, most important first: size, then batch, then model, then variant, in the given orders."""
    return [Case(m, s, b, v) for s in sizes for b in batches for m in models for v in variants]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _grad_mode(variant: Variant) -> Any:
    # compiled graphs (and CUDA-graph capture) are run under no_grad, the documented path; eager under inference_mode
    return torch.no_grad() if variant.compile_mode else torch.inference_mode()


def time_forward(
    net: Callable[..., torch.Tensor], inputs: list[tuple[torch.Tensor, ...]], *, device: str, batch: int,
    warmup: int, min_iters: int, max_iters: int, target_s: float, sync_iters: int,
) -> dict[str, Any]:
    """Warm up, then time back-to-back calls (events on CUDA) and a few host-synchronised calls."""
    for i in range(warmup):
        net(*inputs[i % len(inputs)])
    _sync(device)
    t0 = time.perf_counter()
    net(*inputs[0])
    _sync(device)
    probe_s = time.perf_counter() - t0
    iters = max(min_iters, min(max_iters, int(target_s / max(probe_s, 1e-6))))
    if device.startswith("cuda"):
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            net(*inputs[i % len(inputs)])
            end.record()
        torch.cuda.synchronize(device)
        latencies_s = [start.elapsed_time(end) / 1e3 for start, end in events]
        clock = "cuda_events"
    else:
        latencies_s = []
        for i in range(iters):
            t0 = time.perf_counter()
            net(*inputs[i % len(inputs)])
            latencies_s.append(time.perf_counter() - t0)
        clock = "perf_counter"
    synced = []
    for i in range(sync_iters):
        t0 = time.perf_counter()
        net(*inputs[i % len(inputs)])
        _sync(device)
        synced.append(time.perf_counter() - t0)
    stats = summarize_latencies(latencies_s, frames_per_call=batch)
    return {
        **stats, "clock": clock, "warmup": warmup,
        "sync_median_ms": statistics.median(synced) * 1e3 if synced else None,
    }


def run_case(case: Case, *, device: str, settings: dict[str, Any], models: dict[str, DSTFuse],
             references: dict[tuple[str, tuple[int, int], int], torch.Tensor]) -> dict[str, Any]:
    """Check and time one case; returns its row (``status: ok``). ``models`` and ``references`` are caches."""
    if case.model not in models:
        models[case.model] = build_model(case.model, seed=settings["seed"])
    model = models[case.model]
    width, height = case.size_wh
    inputs = make_inputs(case.size_wh, case.batch, device, seed=settings["seed"])
    key = (case.model, case.size_wh, case.batch)
    if key not in references:
        references[key] = reference_output(model, *inputs[0])
    variant = case.variant
    net = prepare_variant(model, variant, device, compile_backend=settings["compile_backend"])
    var_inputs = as_variant_inputs(inputs, variant)
    gc.collect()
    with _grad_mode(variant), PeakMemory(device=device) as mem:
        t0 = time.perf_counter()
        first = net(*var_inputs[0]).float().cpu()  # copied out before a CUDA-graph replay can overwrite it
        _sync(device)
        first_call_ms = (time.perf_counter() - t0) * 1e3
        timing = time_forward(
            net, var_inputs, device=device, batch=case.batch, warmup=settings["warmup"], min_iters=settings["min_iters"],
            max_iters=settings["max_iters"], target_s=settings["case_target_s"], sync_iters=settings["sync_iters"],
        )
    rel_err = relative_error(first, references[key])
    macs = count_macs(model, (1, 1, height, width), (1, 1, height, width))
    del net
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "status": "ok", "first_call_ms": first_call_ms, **timing,
        "rel_err": rel_err, "parity_ok": bool(rel_err <= PARITY_GATES[variant.precision]),
        "gmacs_per_frame": macs / 1e9, "tflops": 2 * macs * timing["fps"] / 1e12,
        "peak_mem_mib": mem.peak_mib, "mem_method": mem.method,
    }


def case_row(case: Case) -> dict[str, Any]:
    """The identifying part of a result row."""
    v = case.variant
    return {
        "model": case.model, "width": case.size_wh[0], "height": case.size_wh[1], "batch": case.batch,
        "variant": v.label, "precision": v.precision, "channels_last": v.channels_last, "compile_mode": v.compile_mode,
    }


def run_cases(
    cases: Iterable[Case], *, device: str, settings: dict[str, Any], deadline: float,
    on_row: Callable[[dict[str, Any]], None], min_case_s: float = 0.0,
) -> None:
    """Run ``cases`` in order until ``deadline`` (``time.monotonic``); every case gives one row to ``on_row``.

    A case is skipped (with its reason) when its variant cannot run here or fewer than ``min_case_s``
    seconds are left; an exception in one case is recorded as ``failed`` and the next case runs.
    """
    models: dict[str, DSTFuse] = {}
    references: dict[tuple[str, tuple[int, int], int], torch.Tensor] = {}
    for case in cases:
        row = case_row(case)
        reason = skip_reason(case.variant, device)
        left = deadline - time.monotonic()
        if reason is None and left < min_case_s:
            reason = f"stage budget: {left:.0f} s left, a case needs about {min_case_s:.0f} s"
        if reason is not None:
            row.update(status="skipped", reason=reason)
        else:
            logger.info("case %s %dx%d b%d %s", case.model, *case.size_wh, case.batch, case.variant.label)
            try:
                row.update(run_case(case, device=device, settings=settings, models=models, references=references))
            except Exception as exc:  # noqa: BLE001 - one failing case must not end the stage
                logger.warning("case %s failed", row, exc_info=True)
                row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).strip()[:400]}")
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        on_row(row)
