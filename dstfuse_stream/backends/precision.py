"""Numeric precision of inference: which precisions exist and run where, and what the CPU offers for them.

``precision`` is one of :data:`PRECISIONS` everywhere (``Fuser``, ``create_backend``, the CLIs):

* ``"auto"`` (or ``None``): on a GPU fp16 (CUDA, TensorRT). On a CPU, ``backend="auto"`` measures
  the precisions this machine can run (fp32; int8 when a calibrated file exists; bf16 when the CPU
  has native bf16) on the first frame of each size and keeps the fastest whose output is within
  :data:`FIDELITY_GATE_DB` of fp32 (:mod:`dstfuse_stream.backends.autoselect`); a backend chosen by
  name runs fp32 on a CPU (:func:`default_precision`).
* ``"fp32"``: every backend.
* ``"fp16"``: torch on CUDA, an fp16 ONNX file, TensorRT. Not on CPU (no fast fp16 kernels there).
* ``"bf16"``: torch (bf16 weights and activations, channels-last). Fast on CPUs with AVX512-BF16 or
  AMX (:func:`cpu_features`); elsewhere it runs, emulated and slow (a warning says so). ONNX
  Runtime's CPU provider has no bf16 convolution kernels, so ``backend="onnx"`` refuses it.
* ``"int8"``: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations)
  of the fp32 export, calibrated on training crops by ``dstfuse-export int8``
  (:mod:`dstfuse_stream.backends.onnx_quant`).
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dstfuse_stream.errors import BackendError, ConfigError

__all__ = [
    "PRECISIONS",
    "IMPLEMENTED",
    "FIDELITY_GATE_DB",
    "CpuFeatures",
    "cpu_features",
    "parse_cpu_flags",
    "default_threads",
    "resolve_precision",
    "default_precision",
    "require_cuda_for",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: Precisions some backend can run.
IMPLEMENTED = ("fp32", "bf16", "fp16", "int8")
#: A reduced-precision (or reduced-work) output must be within this PSNR (dB) of the fp32 output.
FIDELITY_GATE_DB = 35.0

#: ``/proc/cpuinfo`` flags read into :class:`CpuFeatures` (same names).
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for reduced precision (from ``/proc/cpuinfo``; all ``False`` elsewhere).

    Attributes:
        model: the CPU's model name.
        avx2, avx512f: vector units (fp32 speed).
        avx512_vnni, avx_vnni: int8 dot products (ONNX Runtime's u8s8 kernels use them).
        avx512_bf16: bf16 dot products (oneDNN's bf16 convolutions).
        amx_bf16, amx_int8: Intel AMX tile units (much faster bf16/int8 matrix products).
    """

    model: str
    avx2: bool = False
    avx512f: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False
    amx_int8: bool = False

    @property
    def native_bf16(self) -> bool:
        """bf16 runs on hardware units here (AVX512-BF16 or AMX), not emulated."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions (VNNI or AMX) are available."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    def summary(self) -> str:
        """One line for tables: ``AMD EPYC (AMX no, AVX512-BF16 yes, VNNI yes)``."""
        yes = lambda flag: "yes" if flag else "no"  # noqa: E731
        return f"{self.model} (AMX {yes(self.amx_bf16)}, AVX512-BF16 {yes(self.avx512_bf16)}, VNNI {yes(self.int8_dot)})"

    def to_dict(self) -> dict[str, object]:
        return {**{k: getattr(self, k) for k in ("model", *_FLAGS)}, "native_bf16": self.native_bf16, "summary": self.summary()}


def parse_cpu_flags(cpuinfo: str) -> CpuFeatures:
    """:class:`CpuFeatures` from the text of ``/proc/cpuinfo`` (the first processor's lines)."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuFeatures(model=model or platform.processor() or "unknown", **{name: name in flags for name in _FLAGS})


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once per process)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return CpuFeatures(model=platform.processor() or "unknown")
    return parse_cpu_flags(text)


def default_threads() -> int:
    """Intra-op threads for a CPU backend: the cores this process may run on (its CPU affinity, which
    ``taskset`` and container CPU sets narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_precision(precision: str | None) -> str | None:
    """Validate a requested precision; ``"auto"``/``None`` -> ``None`` (the backend picks)."""
    if precision in (None, "auto"):
        return None
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    return precision


def default_precision(device: str, *, backend: str) -> str:
    """What ``"auto"`` means for a backend chosen by name: fp16 on CUDA or TensorRT, else fp32."""
    return "fp16" if backend == "tensorrt" or str(device).startswith("cuda") else "fp32"


def require_cuda_for(precision: str, device: str, *, backend: str) -> None:
    """Raise :class:`BackendError` for fp16 on a non-CUDA device (``backend`` names who asks)."""
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise BackendError(f"backend {backend!r}: precision 'fp16' needs a CUDA device, got device {device!r}")
