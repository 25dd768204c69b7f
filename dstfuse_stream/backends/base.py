"""The inference-backend interface shared by torch, ONNX Runtime and TensorRT.

A backend owns one model on one device and fuses numpy batches::

    with create_backend("auto") as backend:
        fused = backend.fuse(ir, vis)   # (H, W) or (B, 1, H, W) float32 in [0, 1]

Inputs may be float (values in [0, 1]) or uint8 (0-255, divided by 255). The output always has
the layout of the input and dtype float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from dstfuse_stream.errors import InputShapeError

__all__ = ["FusionBackend", "as_batch"]

_RANGE_TOL = 1e-3


def _as_float_batch(x: object, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InputShapeError(f"{name}: expected a numpy array (H, W) or (B, 1, H, W), got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim != 4 or x.shape[1] != 1:
        raise InputShapeError(f"{name}: expected shape (H, W) or (B, 1, H, W), got {x.shape}")
    if 0 in x.shape:
        raise InputShapeError(f"{name}: expected a non-empty image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputShapeError(f"{name}: expected float in [0, 1] or uint8, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise InputShapeError(f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


def as_batch(ir: object, vis: object) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a pair and return ``(ir, vis, was_2d)`` as contiguous float32 ``(B, 1, H, W)``."""
    ir_b = _as_float_batch(ir, "ir")
    vis_b = _as_float_batch(vis, "vis")
    if ir_b.shape != vis_b.shape:
        raise InputShapeError(f"ir and vis: expected the same shape, got ir {ir_b.shape} and vis {vis_b.shape}")
    return ir_b, vis_b, np.ndim(ir) == 2


class FusionBackend(ABC):
    """One fusion model on one device. Subclasses implement :meth:`fuse_batch`."""

    #: backend family: ``"torch"``, ``"onnx"`` or ``"tensorrt"``
    name: str = "abstract"
    #: why ``create_backend("auto")`` chose this backend (``None`` when created by name)
    selection_reason: str | None = None

    def __init__(self, *, device: str, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision

    @abstractmethod
    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse validated contiguous float32 ``(B, 1, H, W)`` arrays; return the same shape, float32."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse one pair ``(H, W)`` or a batch ``(B, 1, H, W)``; output has the input's layout."""
        ir_b, vis_b, was_2d = as_batch(ir, vis)
        fused = self.fuse_batch(ir_b, vis_b)
        return fused[0, 0] if was_2d else fused

    def describe(self) -> str:
        """One line naming the backend, device and precision (shown by the CLIs)."""
        return f"{self.name} on {self.device} ({self.precision})"

    def close(self) -> None:
        """Release device resources. Safe to call twice."""

    def __enter__(self) -> "FusionBackend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"
