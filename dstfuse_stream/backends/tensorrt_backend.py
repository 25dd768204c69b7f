"""Torch-TensorRT backend: DSTFuse compiled to a TensorRT engine with one dynamic-shape profile.

``torch_tensorrt`` (and ``tensorrt``) are imported inside functions only: this module imports on
machines without them and every entry point raises :class:`BackendError` saying what is missing.
A saved engine (``torch_tensorrt.save``, ExportedProgram ``.ep``) has its profile in a JSON file
beside it (``<engine>.profile.json``), so inputs outside the profile are rejected before running.

Untested in this repository's CI (no GPU); the ONNX Runtime TensorRT provider
(:class:`dstfuse_stream.backends.onnx_backend.OnnxBackend` with a ``profile``) is the other route.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.precision import resolve_precision
from dstfuse_stream.backends.tensorrt_options import DEFAULT_PROFILE, ShapeProfile
from dstfuse_stream.errors import BackendError
from dstfuse_stream.model import DSTFuse

__all__ = [
    "TorchTensorRTBackend",
    "require_cuda",
    "import_torch_tensorrt",
    "profile_path_for",
    "compile_torch_tensorrt",
    "save_torch_tensorrt",
    "load_torch_tensorrt",
]

logger = logging.getLogger(__name__)


def require_cuda(what: str) -> None:
    """Raise :class:`BackendError` unless torch sees a CUDA device."""
    if not torch.cuda.is_available():
        raise BackendError(f"{what}: needs a CUDA GPU, but torch {torch.__version__} sees none")


def import_torch_tensorrt() -> Any:
    """``import torch_tensorrt`` or raise :class:`BackendError` with the install command."""
    try:
        import torch_tensorrt
    except Exception as exc:  # ImportError, or OSError/RuntimeError from missing CUDA/TensorRT libraries
        raise BackendError(
            f"torch_tensorrt is not usable here ({type(exc).__name__}: {exc}); "
            "install it with pip install 'dstfuse-stream[tensorrt]' on a CUDA machine"
        ) from exc
    return torch_tensorrt


def profile_path_for(engine_path: str | os.PathLike[str]) -> Path:
    """The JSON file holding an engine's shape profile."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".profile.json")


def compile_torch_tensorrt(model: DSTFuse, profile: ShapeProfile, *, precision: str = "fp16") -> torch.nn.Module:
    """``torch_tensorrt.compile`` (dynamo) with explicit min/opt/max shapes for ``ir`` and ``vis``."""
    require_cuda("torch-tensorrt compile")
    trt = import_torch_tensorrt()
    precision = resolve_precision(precision) or "fp16"
    model = model.eval().to("cuda")
    inputs = [
        trt.Input(
            min_shape=profile.min_shape,
            opt_shape=profile.opt_shape,
            max_shape=profile.max_shape,
            dtype=torch.float32,
            name=name,
        )
        for name in ("ir", "vis")
    ]
    precisions = {torch.float16, torch.float32} if precision == "fp16" else {torch.float32}
    logger.info("compiling with torch_tensorrt %s: profile %s, %s", trt.__version__, profile.to_dict(), precision)
    return trt.compile(model, ir="dynamo", inputs=inputs, enabled_precisions=precisions)


def save_torch_tensorrt(module: torch.nn.Module, path: str | os.PathLike[str], profile: ShapeProfile) -> Path:
    """``torch_tensorrt.save`` to ``path`` plus the profile JSON beside it."""
    trt = import_torch_tensorrt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = [torch.rand(profile.opt_shape, device="cuda") for _ in range(2)]
    trt.save(module, str(path), inputs=example)
    profile_path_for(path).write_text(json.dumps(profile.to_dict()) + "\n")
    return path


def load_torch_tensorrt(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, ShapeProfile]:
    """Load an engine saved by :func:`save_torch_tensorrt` and its profile."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"TensorRT engine {str(path)!r}: file not found")
    sidecar = profile_path_for(path)
    if not sidecar.is_file():
        raise BackendError(f"TensorRT engine {str(path)!r}: its profile {sidecar.name!r} is missing")
    profile = ShapeProfile.from_dict(json.loads(sidecar.read_text()))
    require_cuda("TensorRT engine")
    trt = import_torch_tensorrt()
    try:
        module = trt.load(str(path)).module()
    except Exception as exc:
        raise BackendError(f"TensorRT engine {str(path)!r}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
    return module, profile


class TorchTensorRTBackend(FusionBackend):
    """DSTFuse as a Torch-TensorRT engine on CUDA.

    Args:
        engine: a saved engine (``.ep``); else the model is compiled at start-up from ``model`` or
            ``weights`` (default: shipped weights) for ``profile``.
        model, weights: the network to compile when ``engine`` is ``None``.
        profile: min/opt/max shapes (default :data:`DEFAULT_PROFILE`); ignored with ``engine``,
            whose own profile is read from its JSON file.
        precision: ``"fp16"`` (default) or ``"fp32"`` TensorRT kernels; inputs/outputs stay float32.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine: str | os.PathLike[str] | None = None,
        *,
        model: DSTFuse | None = None,
        weights: str | os.PathLike[str] | None = None,
        profile: ShapeProfile | None = None,
        precision: str = "fp16",
    ) -> None:
        require_cuda("backend 'tensorrt'")
        import_torch_tensorrt()
        if engine is not None:
            self.module, self.profile = load_torch_tensorrt(engine)
            source = Path(engine).name
        else:
            from dstfuse_stream.checkpoint import load_model

            model = load_model(weights) if model is None else model
            self.profile = profile or DEFAULT_PROFILE
            self.module = compile_torch_tensorrt(model, self.profile, precision=precision)
            source = f"compiled {model.config.name}"
        self.source = source
        super().__init__(device="cuda", precision=precision)

    def describe(self) -> str:
        p = self.profile
        return f"tensorrt (torch-tensorrt, {self.source}) on cuda ({self.precision}, profile {p.min_shape}..{p.max_shape})"

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        self.profile.check(ir.shape, "ir")
        self.profile.check(vis.shape, "vis")
        with torch.inference_mode():
            fused = self.module(torch.from_numpy(ir).to("cuda"), torch.from_numpy(vis).to("cuda"))
        return fused.float().cpu().numpy()
