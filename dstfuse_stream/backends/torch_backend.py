"""PyTorch backend: eager (optionally ``torch.compile``-d) DSTFuse on CPU or CUDA, fp32, fp16 or bf16.

bf16 runs the whole network in bfloat16 (weights and activations, channels-last memory layout, the
fastest layout for oneDNN's bf16 convolutions) and returns float32. Measured on real frames
(``stream``, work scale 0.5): 54-55 dB PSNR vs fp32 after rounding to 8 bits, and faster than autocast,
which keeps every elementwise op in fp32 (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend, check_tensor_pair
from dstfuse_stream.backends.precision import cpu_features, default_precision, require_cuda_for, resolve_precision
from dstfuse_stream.backends.work_scale import resolve_work_scale, with_work_scale
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
        precision: ``"auto"`` (fp16 on CUDA, else fp32), ``"fp32"``, ``"fp16"`` (CUDA only) or
            ``"bf16"``; see :mod:`dstfuse_stream.backends.precision`.
        compile: wrap the model in ``torch.compile``.
        threads: CPU intra-op threads (``torch.set_num_threads``, which is process-wide); ``None``
            leaves torch's setting alone.
        work_scale: ``"auto"``, 1, 0.5 or 0.25 (:mod:`dstfuse_stream.backends.work_scale`).

    A given ``model`` is used as is when nothing has to change; for another dtype or work scale the
    backend works on a copy, so the caller's model is never converted.
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
        work_scale: Any = "auto",
    ) -> None:
        device = resolve_device(device)
        precision = resolve_precision(precision) or default_precision(device, backend="torch")
        require_cuda_for(precision, device, backend="torch")
        if precision == "int8":
            raise BackendError("backend 'torch': precision 'int8' runs on ONNX Runtime; use backend 'onnx' or 'auto'")
        if precision == "bf16" and device == "cpu" and not cpu_features().native_bf16:
            logger.warning("precision bf16 on %s: no AVX512-BF16 or AMX, bf16 is emulated (slower than fp32)", cpu_features().model)
        if threads is not None:
            if threads < 1:
                raise BackendError(f"threads: expected >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        super().__init__(device=device, precision=precision)
        given = model
        model = load_model(weights) if model is None else model
        self.config = model.config
        self.work_scale = resolve_work_scale(work_scale, model)
        model = with_work_scale(model, self.work_scale)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        if self._dtype != torch.float32 and model is given:
            model = copy.deepcopy(model)
        self.model = model.eval().to(device=device, dtype=self._dtype)
        if precision == "bf16":
            self.model = self.model.to(memory_format=torch.channels_last)
        self._run = torch.compile(self.model) if compile else self.model
        self.compiled = compile
        #: why ``torch.compile`` was abandoned for eager (``None`` while it works or was not asked for)
        self.compile_error: str | None = None

    def describe(self) -> str:
        extra = ", compiled" if self.compiled else ""
        return f"torch on {self.device} ({self.precision}{extra}, model {self.config.name}, work scale {self.work_scale:g})"

    def _forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Tensors already on the device (uint8 0-255 or float in [0, 1]) -> float32 fused."""
        if ir.dtype == torch.uint8:
            ir, vis = (t.float().mul_(1.0 / 255.0) for t in (ir, vis))
        with torch.inference_mode():
            return self._call(ir.to(self._dtype), vis.to(self._dtype)).float()

    def _call(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The model, compiled when asked; a compiler failure (TorchDynamo / Inductor: e.g. torch 2.13's
        Inductor fails on the ``stream`` CST, whose two stages share one trunk) falls back to eager
        once, with a warning, instead of failing the run. Errors of the eager model propagate."""
        try:
            return self._run(ir, vis)
        except Exception as exc:  # noqa: BLE001 - only compiler failures are absorbed, see below
            if not (self.compiled and type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))):
                raise
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            self.compile_error = f"{type(exc).__name__}: {first_line}"
            logger.warning("torch.compile failed for model %s (%s); running it eager", self.config.name, self.compile_error)
            self._run, self.compiled = self.model, False
            return self._run(ir, vis)

    def fuse_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse float tensors ``(B, 1, H, W)`` in [0, 1] on any device; float32 result on ``ir``'s device."""
        ir, vis = check_tensor_pair(ir, vis)
        fused = self._forward(ir.to(self.device), vis.to(self.device))
        return fused.to(ir.device)

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        ir_t = torch.from_numpy(ir).to(self.device, non_blocking=True)
        vis_t = torch.from_numpy(vis).to(self.device, non_blocking=True)
        return self._forward(ir_t, vis_t).cpu().numpy()
