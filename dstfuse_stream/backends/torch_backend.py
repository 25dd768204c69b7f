"""PyTorch backend: eager (optionally ``torch.compile``-d) DSTFuse on CPU or CUDA, fp32 or fp16."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend
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
        precision: ``"fp32"`` or ``"fp16"`` (fp16 needs CUDA).
        compile: wrap the model in ``torch.compile``.
    """

    name = "torch"

    def __init__(
        self,
        model: DSTFuse | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = "auto",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        device = resolve_device(device)
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"precision {precision!r}: expected 'fp32' or 'fp16'")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError(f"precision 'fp16' needs a CUDA device, got device {device!r}")
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

    def fuse_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse tensors already on the backend's device; returns float32 ``(B, 1, H, W)``."""
        with torch.inference_mode():
            return self._run(ir.to(self._dtype), vis.to(self._dtype)).float()

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        ir_t = torch.from_numpy(ir).to(self.device, non_blocking=True)
        vis_t = torch.from_numpy(vis).to(self.device, non_blocking=True)
        return self.fuse_tensor(ir_t, vis_t).cpu().numpy()
