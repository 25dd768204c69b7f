"""PyTorch backend: eager (optionally ``torch.compile``-d) DSTFuse on CPU or CUDA, fp32 or fp16."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend, check_tensor_pair
from dstfuse_stream.backends.precision import default_precision, require_cuda_for, resolve_precision
from dstfuse_stream.checkpoint import load_model
from dstfuse_stream.errors import BackendError
from dstfuse_stream.model import DSTFuse

__all__ = ["TorchBackend", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; validate explicit names."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__})")
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise BackendError(f"device {device!r}: not a torch device name ({exc})") from exc
    return device


class TorchBackend(FusionBackend):
    """DSTFuse in PyTorch under ``torch.inference_mode``.

    Args:
        model: a :class:`DSTFuse`; if ``None`` it is loaded from ``weights`` (default: shipped weights).
        weights: checkpoint path used when ``model`` is ``None``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (fp16 on CUDA, else fp32), ``"fp32"`` or ``"fp16"`` (CUDA only);
            see :mod:`dstfuse_stream.backends.precision`.
        compile: wrap the model in ``torch.compile``.
        threads: CPU intra-op threads (``torch.set_num_threads``, which is process-wide); ``None``
            leaves torch's setting alone.
    """

    name = "torch"
    accepts_uint8 = True

    def __init__(
        self,
        model: DSTFuse | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = "auto",
        precision: str | None = "fp32",
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        device = resolve_device(device)
        precision = resolve_precision(precision) or default_precision(device, backend="torch")
        require_cuda_for(precision, device, backend="torch")
        if threads is not None:
            if threads < 1:
                raise BackendError(f"threads: expected >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        super().__init__(device=device, precision=precision)
        model = load_model(weights) if model is None else model
        self.config = model.config
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.eval().to(device=device, dtype=self._dtype)
        self._run = torch.compile(self.model) if compile else self.model
        self.compiled = compile

    def describe(self) -> str:
        extra = ", compiled" if self.compiled else ""
        return f"torch on {self.device} ({self.precision}{extra}, model {self.config.name})"

    def _forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Tensors already on the device (uint8 0-255 or float in [0, 1]) -> float32 fused."""
        if ir.dtype == torch.uint8:
            ir, vis = (t.float().mul_(1.0 / 255.0) for t in (ir, vis))
        with torch.inference_mode():
            return self._run(ir.to(self._dtype), vis.to(self._dtype)).float()

    def fuse_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse float tensors ``(B, 1, H, W)`` in [0, 1] on any device; float32 result on ``ir``'s device."""
        ir, vis = check_tensor_pair(ir, vis)
        fused = self._forward(ir.to(self.device), vis.to(self.device))
        return fused.to(ir.device)

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        ir_t = torch.from_numpy(ir).to(self.device, non_blocking=True)
        vis_t = torch.from_numpy(vis).to(self.device, non_blocking=True)
        return self._forward(ir_t, vis_t).cpu().numpy()
