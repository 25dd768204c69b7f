"""Build TensorRT engines for DSTFuse, two ways (both need a CUDA GPU; neither is tested in CI):

* **ONNX Runtime TensorrtExecutionProvider** (default, ``--method ort``): the exported ``.onnx``
  (whose odd-size padding is verified on CPU) with an explicit optimisation profile
  (``trt_profile_min/opt/max_shapes``), fp16, and the engine + timing cache on disk
  (``trt_engine_cache_enable``/``trt_engine_cache_path``). "Building" = opening a session and running
  the opt, min and max shapes once; later sessions with the same options load the cached engine.
* **torch-tensorrt** (``--method torch-tensorrt``): ``torch_tensorrt.compile(ir="dynamo")`` with
  min/opt/max ``Input``s, saved with ``torch_tensorrt.save`` plus the profile as JSON. It traces with
  ``torch.export``, which is the exporter that failed on the model's dynamic padding (see
  ``dstfuse_stream/backends/onnx_export.py``): expect to need a profile of multiples of 4 or a fixed size there.

``tensorrt``/``torch_tensorrt`` are imported lazily; without CUDA every function raises
:class:`BackendError`. The pure option builders live in :mod:`dstfuse_stream.backends.tensorrt_options`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dstfuse_stream.backends.onnx_backend import CPU_PROVIDER, CUDA_PROVIDER, TRT_PROVIDER, OnnxBackend
from dstfuse_stream.backends.tensorrt_backend import compile_torch_tensorrt, require_cuda, save_torch_tensorrt
from dstfuse_stream.backends.tensorrt_options import (
    DEFAULT_PROFILE,
    ShapeProfile,
    cuda_provider_options,
    default_cache_dir,
    tensorrt_provider_options,
)
from dstfuse_stream.backends.onnx_parity import random_pair
from dstfuse_stream.errors import BackendError

__all__ = [
    "ort_tensorrt_providers",
    "require_ort_tensorrt",
    "build_ort_tensorrt_engine",
    "build_torch_tensorrt_engine",
]

logger = logging.getLogger(__name__)


def ort_tensorrt_providers(
    profile: ShapeProfile,
    *,
    cache_dir: str | os.PathLike[str],
    precision: str = "fp16",
    device_id: int = 0,
) -> list[tuple[str, dict]]:
    """``[(TensorRT, options), (CUDA, options), (CPU, {})]`` for ``InferenceSession(providers=...)``."""
    return [
        (TRT_PROVIDER, tensorrt_provider_options(profile, cache_dir=cache_dir, fp16=precision == "fp16", device_id=device_id)),
        (CUDA_PROVIDER, cuda_provider_options(device_id=device_id)),
        (CPU_PROVIDER, {}),
    ]


def require_ort_tensorrt(available: list[str] | None = None) -> None:
    """Raise :class:`BackendError` unless onnxruntime offers the TensorRT provider."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if TRT_PROVIDER not in available:
        raise BackendError(
            f"ONNX Runtime TensorRT provider not available (providers: {available}); "
            "needs onnxruntime-gpu with TensorRT libraries on a CUDA machine"
        )


def build_ort_tensorrt_engine(
    onnx_path: str | os.PathLike[str],
    profile: ShapeProfile = DEFAULT_PROFILE,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
    device_id: int = 0,
) -> Path:
    """Build (or load from cache) the TensorRT engine of ``onnx_path``; return the cache folder."""
    require_ort_tensorrt()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    providers = ort_tensorrt_providers(profile, cache_dir=cache, precision=precision, device_id=device_id)
    with OnnxBackend(onnx_path, providers=providers, profile=profile) as backend:
        if backend.active_provider != TRT_PROVIDER:
            raise BackendError(f"{onnx_path}: the TensorRT provider did not start (active: {backend.active_provider})")
        for shape in (profile.opt_shape, profile.min_shape, profile.max_shape):
            logger.info("running %s once (builds the engine the first time)", shape)
            backend.fuse_batch(*random_pair(shape, seed=0))
    return cache


def build_torch_tensorrt_engine(
    weights: str | os.PathLike[str] | None,
    profile: ShapeProfile = DEFAULT_PROFILE,
    *,
    out: str | os.PathLike[str],
    precision: str = "fp16",
) -> Path:
    """Compile ``weights`` (default: shipped) with torch-tensorrt for ``profile`` and save to ``out``."""
    require_cuda("torch-tensorrt build")
    from dstfuse_stream.checkpoint import load_model

    module = compile_torch_tensorrt(load_model(weights), profile, precision=precision)
    return save_torch_tensorrt(module, out, profile)
