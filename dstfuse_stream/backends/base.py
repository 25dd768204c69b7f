"""The inference-backend interface shared by torch, ONNX Runtime and TensorRT.

A backend owns one model on one device and fuses luma batches::

    with create_backend("auto") as backend:
        fused = backend.fuse(ir, vis)   # (H, W) or (B, 1, H, W); float32 in [0, 1] out

Inputs are uint8 (0-255) or float (values in [0, 1]). A backend that sets ``accepts_uint8`` gets uint8
batches in :meth:`FusionBackend.fuse_batch` as they are and converts them where it is cheapest
(torch: on the device, after the 4x smaller copy); the others get float32. The output always has the layout of the input and dtype float32. Torch tensors go
through :meth:`FusionBackend.fuse_tensor` and come back on their own device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from dstfuse_stream.errors import InputShapeError

if TYPE_CHECKING:
    import torch

__all__ = ["FusionBackend", "as_batch", "to_float32", "check_tensor_pair"]

_RANGE_TOL = 1e-3


def _check_batch(x: object, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InputShapeError(f"{name}: expected a numpy array (H, W) or (B, 1, H, W), got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim != 4 or x.shape[1] != 1:
        raise InputShapeError(f"{name}: expected shape (H, W) or (B, 1, H, W), got {x.shape}")
    if 0 in x.shape:
        raise InputShapeError(f"{name}: expected a non-empty image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputShapeError(f"{name}: expected float in [0, 1] or uint8, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise InputShapeError(f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


def as_batch(ir: object, vis: object) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a pair; return ``(ir, vis, was_2d)`` as contiguous ``(B, 1, H, W)`` of one dtype.

    uint8 stays uint8 when both are uint8; otherwise both become float32 in [0, 1].
    """
    ir_b = _check_batch(ir, "ir")
    vis_b = _check_batch(vis, "vis")
    if ir_b.shape != vis_b.shape:
        raise InputShapeError(f"ir and vis: expected the same shape, got ir {ir_b.shape} and vis {vis_b.shape}")
    if ir_b.dtype != vis_b.dtype:
        ir_b, vis_b = to_float32(ir_b), to_float32(vis_b)
    return ir_b, vis_b, np.ndim(ir) == 2


def to_float32(x: np.ndarray) -> np.ndarray:
    """uint8 (0-255) -> float32 in [0, 1]; float32 as is."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1.0 / 255.0)
    return x


def check_tensor_pair(ir: object, vis: object) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Validate two float tensors ``(B, 1, H, W)`` of one shape (the edge of ``fuse_tensor``)."""
    import torch

    for x, name in ((ir, "ir"), (vis, "vis")):
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"{name}: expected a torch.Tensor (B, 1, H, W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 1 or 0 in x.shape:
            raise InputShapeError(f"{name}: expected a non-empty tensor (B, 1, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputShapeError(f"{name}: expected a float tensor in [0, 1], got {x.dtype}")
    if ir.shape != vis.shape:
        raise InputShapeError(f"ir and vis: expected the same shape, got {tuple(ir.shape)} and {tuple(vis.shape)}")
    return ir, vis


class FusionBackend(ABC):
    """One fusion model on one device. Subclasses implement :meth:`fuse_batch`."""

    #: backend family: ``"torch"``, ``"onnx"`` or ``"tensorrt"``
    name: str = "abstract"
    #: why ``create_backend("auto")`` chose this backend (``None`` when created by name)
    selection_reason: str | None = None
    #: :meth:`fuse_batch` takes uint8 batches too (else :meth:`fuse` converts them to float32 first)
    accepts_uint8: bool = False

    def __init__(self, *, device: str, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision

    @abstractmethod
    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse validated contiguous float32 ``(B, 1, H, W)`` arrays in [0, 1] (also uint8 ones when
        :attr:`accepts_uint8`); return float32 ``(B, 1, H, W)``."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse one pair ``(H, W)`` or a batch ``(B, 1, H, W)``; output has the input's layout."""
        ir_b, vis_b, was_2d = as_batch(ir, vis)
        if ir_b.dtype == np.uint8 and not self.accepts_uint8:
            ir_b, vis_b = to_float32(ir_b), to_float32(vis_b)
        fused = self.fuse_batch(ir_b, vis_b)
        return fused[0, 0] if was_2d else fused

    def fuse_tensor(self, ir: "torch.Tensor", vis: "torch.Tensor") -> "torch.Tensor":
        """Fuse float tensors ``(B, 1, H, W)`` in [0, 1] on any device; float32 result on ``ir``'s device.

        This default goes through host memory; the torch backend overrides it to stay on the device.
        """
        import torch

        ir, vis = check_tensor_pair(ir, vis)
        host = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in (ir, vis)]
        return torch.from_numpy(self.fuse_batch(*host)).to(ir.device)

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
