"""Numeric precision of inference: the one place that says which precisions exist and which run where.

``precision`` is one of :data:`PRECISIONS` everywhere (``Fuser``, ``create_backend``, the CLIs):

* ``"auto"`` (or ``None``): the backend's default, :func:`default_precision`: fp16 for CUDA and
  TensorRT, fp32 on CPU.
* ``"fp32"``: every backend.
* ``"fp16"``: torch on CUDA, an fp16 ONNX file, TensorRT. Not on CPU (no fast fp16 kernels there).
* ``"bf16"``, ``"int8"``: accepted names, not implemented yet: :func:`resolve_precision` raises
  :class:`~dstfuse_stream.errors.ConfigError` (a setting error, so ``auto`` does not hide it by
  falling back to another backend).
"""

from __future__ import annotations

from dstfuse_stream.errors import BackendError, ConfigError

__all__ = ["PRECISIONS", "IMPLEMENTED", "resolve_precision", "default_precision", "require_cuda_for"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: Precisions some backend can run today.
IMPLEMENTED = ("fp32", "fp16")


def resolve_precision(precision: str | None) -> str | None:
    """Validate a requested precision; ``"auto"``/``None`` -> ``None`` (the backend picks)."""
    if precision in (None, "auto"):
        return None
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision not in IMPLEMENTED:
        raise ConfigError(f"precision {precision!r}: not implemented yet; use one of {['auto', *IMPLEMENTED]}")
    return precision


def default_precision(device: str, *, backend: str) -> str:
    """What ``"auto"`` means for ``backend`` on ``device``: fp16 on CUDA or TensorRT, else fp32."""
    return "fp16" if backend == "tensorrt" or str(device).startswith("cuda") else "fp32"


def require_cuda_for(precision: str, device: str, *, backend: str) -> None:
    """Raise :class:`BackendError` for fp16 on a non-CUDA device (``backend`` names who asks)."""
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise BackendError(f"backend {backend!r}: precision 'fp16' needs a CUDA device, got device {device!r}")
