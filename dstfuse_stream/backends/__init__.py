"""Inference backends behind one interface (:class:`FusionBackend`) and a factory.

``create_backend(name, ...)`` with ``name`` one of :data:`BACKEND_NAMES`:

* ``torch``: :class:`~dstfuse_stream.backends.torch_backend.TorchBackend` (eager PyTorch).
* ``onnx``: :class:`~dstfuse_stream.backends.onnx_backend.OnnxBackend` (ONNX Runtime CPU/CUDA/TensorRT
  provider) on ``onnx_path``, or on an export of ``weights`` cached under the user cache folder
  (:mod:`~dstfuse_stream.backends.onnx_cache`; the first export is announced with its path).
* ``tensorrt``: ONNX Runtime's TensorRT provider when onnxruntime offers it, else Torch-TensorRT.
* ``auto``: the fastest available, see :func:`auto_candidates`. A candidate that cannot start (a
  missing optional package such as onnxruntime, a failed export) is skipped with one warning line.
  On a CPU with ``precision="auto"`` it measures the precisions this CPU can run on the first frame
  of each size and keeps the fastest within the fidelity gate
  (:class:`~dstfuse_stream.backends.autoselect.AutoPrecisionBackend`).

Precision names and defaults: :mod:`dstfuse_stream.backends.precision`; work scale:
:mod:`dstfuse_stream.backends.work_scale`. Nothing here imports torch, onnx or onnxruntime at import time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dstfuse_stream.backends.base import FusionBackend, as_batch
from dstfuse_stream.backends.precision import cpu_features, default_precision, default_threads, resolve_precision
from dstfuse_stream.backends.work_scale import parse_work_scale
from dstfuse_stream.errors import BackendError, require_module

__all__ = ["FusionBackend", "as_batch", "create_backend", "auto_candidates", "Candidate", "BACKEND_NAMES", "CPU_AUTO"]

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "onnx", "tensorrt")

#: What ``auto`` uses on CPU, decided by measurement (docs/export.md, ``dstfuse-export
#: compare-cpu --preset lite --size 320x256``): ONNX Runtime CPU ran the lite model faster than torch
#: CPU in every interleaved run on the 2-core development machine. The one-off export (a few seconds)
#: is cached per checkpoint SHA-256.
CPU_AUTO = "onnx"

_ORT_INSTALL = "pip install onnxruntime (or onnxruntime-gpu)"
_EXTRAS = {
    "torch": {"compile", "threads"},
    "onnx": {"providers", "threads", "profile", "cache_dir", "device_id", "spin"},
    "tensorrt": {"profile", "cache_dir", "engine", "method", "device_id"},
}


@dataclass(frozen=True)
class Candidate:
    """One option ``auto`` may take, in order of preference."""

    name: str
    device: str
    precision: str
    reason: str


def auto_candidates(
    *,
    device: str = "auto",
    precision: str | None = None,
    cuda_available: bool,
    ort_providers: Sequence[str],
    torch_tensorrt_available: bool,
    onnx_path: str | os.PathLike[str] | None = None,
) -> list[Candidate]:
    """Ordered backends for ``auto`` given what this machine offers (pure; tested without a GPU).

    GPU: TensorRT (ORT provider or torch-tensorrt, fp16) > ORT CUDA (only with a ready ``onnx_path``)
    > torch CUDA fp16. CPU: :data:`CPU_AUTO` (measured) then torch as the fallback; their precision
    is ``"auto"`` (measured per frame size, see :mod:`~dstfuse_stream.backends.autoselect`) unless one
    was asked for or ``onnx_path`` fixes it (then the file's).
    """
    gpu = cuda_available or "CUDAExecutionProvider" in ort_providers
    gpu_device = str(device) if str(device).startswith("cuda") else "cuda"
    candidates: list[Candidate] = []
    if device != "cpu" and gpu:
        p = precision or default_precision(gpu_device, backend="torch")
        if "TensorrtExecutionProvider" in ort_providers or (torch_tensorrt_available and cuda_available):
            candidates.append(Candidate("tensorrt", gpu_device, p, "GPU with TensorRT: fastest, engine cached on disk"))
        if onnx_path is not None and "CUDAExecutionProvider" in ort_providers:
            candidates.append(Candidate("onnx", gpu_device, p, "GPU without TensorRT: ONNX Runtime CUDA on the given .onnx"))
        if cuda_available:
            candidates.append(Candidate("torch", gpu_device, p, "GPU without TensorRT: torch CUDA"))
    if str(device).startswith("cuda") and not candidates:
        raise BackendError(f"device {device!r}: no CUDA device for torch and no GPU provider in onnxruntime")
    if not candidates:
        p = precision or ("auto" if onnx_path is None else default_precision("cpu", backend="torch"))
        if CPU_AUTO == "onnx":
            candidates.append(Candidate("onnx", "cpu", p, "CPU: ONNX Runtime measured faster than torch (lite, 320x256)"))
        candidates.append(Candidate("torch", "cpu", p, "CPU: torch" + (" (fallback)" if candidates else "")))
    return candidates


def _check_extras(name: str, extras: dict[str, Any]) -> None:
    unknown = set(extras) - _EXTRAS.get(name, set())
    if unknown:
        raise BackendError(
            f"backend {name!r}: unknown option(s) {sorted(unknown)}; expected weights, onnx_path, device, "
            f"precision, model or {sorted(_EXTRAS.get(name, set()))}"
        )


def _torch_tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch_tensorrt") is not None


def _create_onnx(
    weights: Any, onnx_path: Any, device: str, precision: str | None, model: Any, work_scale: float | None, extras: dict
) -> FusionBackend:
    from dstfuse_stream.backends.onnx_backend import OnnxBackend

    if precision == "bf16":
        raise BackendError("backend 'onnx': precision 'bf16': ONNX Runtime's CPU provider has no bf16 convolution kernels; use backend 'torch'")
    root = extras.pop("cache_dir", None)
    require_module("onnxruntime", purpose="backend 'onnx'", install=_ORT_INSTALL)
    if onnx_path is None:
        from dstfuse_stream.backends.onnx_cache import get_or_export_onnx

        onnx_path = get_or_export_onnx(weights, model=model, precision=precision or "fp32", work_scale=work_scale, cache_dir=root)
        work_scale = None  # the cache resolved it ("auto") and checked the file
    trt_cache = None if root is None else Path(root) / "tensorrt"
    return OnnxBackend(onnx_path, device=device, precision=precision, cache_dir=trt_cache, work_scale=work_scale, **extras)


def _create_tensorrt(
    weights: Any, onnx_path: Any, device: str, precision: str | None, model: Any, work_scale: float | None, extras: dict
) -> FusionBackend:
    from dstfuse_stream.backends.tensorrt_options import DEFAULT_PROFILE

    if device == "cpu":
        raise BackendError("backend 'tensorrt': needs device 'cuda' (or 'auto' on a GPU machine), got 'cpu'")
    method = extras.pop("method", "auto")
    if method not in ("auto", "ort", "torch-tensorrt"):
        raise BackendError(f"backend 'tensorrt': method {method!r}: expected 'auto', 'ort' or 'torch-tensorrt'")
    profile = extras.pop("profile", None) or DEFAULT_PROFILE
    precision = precision or default_precision(device, backend="tensorrt")
    available = _ort_providers()
    reasons = []
    if method in ("auto", "ort"):
        if "TensorrtExecutionProvider" in available:
            from dstfuse_stream.backends.onnx_backend import OnnxBackend
            from dstfuse_stream.backends.tensorrt_options import default_cache_dir, tensorrt_provider_options

            if onnx_path is None:
                from dstfuse_stream.backends.onnx_cache import get_or_export_onnx

                onnx_path = get_or_export_onnx(weights, model=model, precision="fp32", work_scale=work_scale, cache_dir=extras.get("cache_dir"))
            cache = Path(extras.get("cache_dir") or default_cache_dir()) / "tensorrt"
            trt = tensorrt_provider_options(profile, cache_dir=cache, fp16=precision == "fp16", device_id=extras.get("device_id", 0))
            providers = [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider"]
            backend = OnnxBackend(
                onnx_path, providers=providers, profile=profile, precision=precision, device_id=extras.get("device_id", 0)
            )
            if backend.active_provider != "TensorrtExecutionProvider":
                backend.close()
                raise BackendError(f"backend 'tensorrt': the TensorRT provider did not start (active: {backend.active_provider})")
            return backend
        reasons.append(f"onnxruntime offers no TensorrtExecutionProvider (providers: {available})")
    if method in ("auto", "torch-tensorrt"):
        from dstfuse_stream.backends.tensorrt_backend import TorchTensorRTBackend

        if extras.get("engine") is None:
            from dstfuse_stream.backends.work_scale import resolve_work_scale, with_work_scale
            from dstfuse_stream.checkpoint import load_model

            model = load_model(weights) if model is None else model
            model = with_work_scale(model, resolve_work_scale(work_scale, model))
        try:
            return TorchTensorRTBackend(extras.get("engine"), model=model, weights=weights, profile=profile, precision=precision)
        except BackendError as exc:
            reasons.append(str(exc))
    raise BackendError("backend 'tensorrt' is not available: " + "; ".join(reasons))


def create_backend(
    name: str = "auto",
    *,
    weights: str | os.PathLike[str] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str | None = None,
    model: Any = None,
    work_scale: Any = "auto",
    **extras: Any,
) -> FusionBackend:
    """Create a backend by name; the stable keyword arguments are the same for every name.

    Args:
        name: ``"auto"``, ``"torch"``, ``"onnx"`` or ``"tensorrt"``.
        weights: checkpoint path; ``None`` = shipped default weights. A path ending in ``.onnx`` is
            taken as ``onnx_path`` (an exported model runs on ``onnx``/``tensorrt``; ``auto`` then
            never falls back to torch, which would run other weights).
        onnx_path: a ready ``.onnx`` (``onnx``/``tensorrt``/``auto``); without it the checkpoint is
            exported once and cached under the user cache folder, keyed by its SHA-256.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        precision: one of :data:`~dstfuse_stream.backends.precision.PRECISIONS`; ``"auto"``/``None`` =
            fp16 on CUDA and TensorRT; on CPU measured per frame size for ``auto``, fp32 for a named backend.
        model: an in-memory :class:`~dstfuse_stream.model.DSTFuse` instead of ``weights`` (never changed).
        work_scale: ``"auto"``, 1, 0.5 or 0.25: the resolution the networks run at
            (:mod:`~dstfuse_stream.backends.work_scale`); with ``onnx_path`` it is checked against the file.
        extras: backend-specific: torch ``compile``, ``threads``; onnx ``providers``, ``threads``, ``profile``,
            ``cache_dir``, ``device_id``, ``spin``; tensorrt ``profile`` (a ``ShapeProfile``), ``cache_dir``,
            ``engine`` (saved torch-tensorrt ``.ep``), ``method`` (``"auto"``/``"ort"``/``"torch-tensorrt"``).
            ``cache_dir`` is the cache root (default ``~/.cache/dstfuse-stream``): ONNX exports go to
            ``<cache_dir>/onnx``, TensorRT engines to ``<cache_dir>/tensorrt``.

    ``auto`` tries :func:`auto_candidates` in order, logs the choice and why, and stores the reason in
    ``backend.selection_reason``.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"backend {name!r}: expected one of {list(BACKEND_NAMES)}")
    if weights is not None and onnx_path is None and os.fspath(weights).lower().endswith(".onnx"):
        if name == "torch":
            raise BackendError(f"weights {os.fspath(weights)!r}: an exported ONNX model runs on backend 'onnx', "
                               "'tensorrt' or 'auto', not 'torch' (give the .pt checkpoint for torch)")
        if not Path(weights).is_file():
            raise BackendError(f"weights {os.fspath(weights)!r}: file not found")
        weights, onnx_path = None, weights
        extras = {**extras, "_onnx_only": True} if name == "auto" else extras
    precision = resolve_precision(precision)
    scale = parse_work_scale(work_scale)
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise BackendError(f"device {device!r}: expected 'auto', 'cpu' or 'cuda'")
    if name == "auto":
        return _create_auto(weights=weights, onnx_path=onnx_path, device=device, precision=precision, model=model, work_scale=scale, extras=extras)
    _check_extras(name, extras)
    if name == "torch":
        from dstfuse_stream.backends.torch_backend import TorchBackend

        return TorchBackend(model, weights=weights, device=device, precision=precision, work_scale=scale, **extras)
    if name == "onnx":
        return _create_onnx(weights, onnx_path, device, precision, model, scale, dict(extras))
    return _create_tensorrt(weights, onnx_path, device, precision, model, scale, dict(extras))


def _ort_providers() -> list[str]:
    """ONNX Runtime's execution providers, or ``[]`` when onnxruntime is not usable."""
    try:
        ort = require_module("onnxruntime", purpose="backend 'onnx'", install=_ORT_INSTALL)
    except BackendError as exc:
        logger.debug("%s", exc)
        return []
    return list(ort.get_available_providers())


def _create_auto_precision(
    name: str, *, weights: Any, model: Any, work_scale: float | None, extras: dict[str, Any]
) -> FusionBackend:
    """CPU, precision "auto": fp32 on ``name``, plus int8 (a calibrated file exists) and bf16 (native
    on this CPU) as measured alternatives; a plain fp32 backend when there is no alternative."""
    from dstfuse_stream.backends.autoselect import AutoPrecisionBackend, ChoiceStore
    from dstfuse_stream.backends.tensorrt_options import default_cache_dir

    def make(backend: str, precision: str) -> FusionBackend:
        options = {k: v for k, v in extras.items() if k in _EXTRAS[backend]}
        return create_backend(backend, weights=weights, device="cpu", precision=precision, model=model, work_scale=work_scale, **options)

    fp32 = make(name, "fp32")
    candidates = {"fp32": fp32}
    alternatives = [("int8", "onnx")] if name == "onnx" else []
    if cpu_features().native_bf16:
        alternatives.append(("bf16", "torch"))
    else:
        logger.info("precision auto: no bf16 candidate (%s has neither AVX512-BF16 nor AMX)", cpu_features().model)
    for precision, backend in alternatives:
        try:
            candidates[precision] = make(backend, precision)
        except BackendError as exc:
            logger.info("precision auto: no %s candidate (%s)", precision, exc)
    if len(candidates) == 1:
        return fp32
    metadata = getattr(fp32, "metadata", {})
    identity = metadata.get("checkpoint_sha256") or metadata.get("state_dict_sha256")
    if not identity:
        return AutoPrecisionBackend(candidates)
    key = (identity, fp32.work_scale, extras.get("threads") or default_threads(), *_library_versions(), cpu_features().summary())
    store = ChoiceStore(Path(extras.get("cache_dir") or default_cache_dir()) / ChoiceStore.FILENAME)
    return AutoPrecisionBackend(candidates, cache_key=key, store=store)


def _library_versions() -> tuple[str, ...]:
    """What a stored precision choice is only valid for: this package, torch and onnxruntime versions."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("dstfuse-stream", "torch", "onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return tuple(found)


def _create_auto(
    *, weights: Any, onnx_path: Any, device: str, precision: str | None, model: Any, work_scale: float | None, extras: dict
) -> FusionBackend:
    import torch

    onnx_only = extras.pop("_onnx_only", False)
    known = set().union(*_EXTRAS.values())
    if set(extras) - known:
        raise BackendError(f"backend 'auto': unknown option(s) {sorted(set(extras) - known)}; expected {sorted(known)}")
    candidates = auto_candidates(
        device=device,
        precision=precision,
        cuda_available=torch.cuda.is_available(),
        ort_providers=_ort_providers(),
        torch_tensorrt_available=_torch_tensorrt_available(),
        onnx_path=onnx_path,
    )
    if onnx_only:
        candidates = [c for c in candidates if c.name != "torch"] or [Candidate("onnx", "cpu", precision or "fp32", "an .onnx file")]
    failures = []
    for cand in candidates:
        options = {k: v for k, v in extras.items() if k in _EXTRAS[cand.name]}
        try:
            if cand.precision == "auto":
                backend = _create_auto_precision(cand.name, weights=weights, model=model, work_scale=work_scale, extras=extras)
            else:
                backend = create_backend(
                    cand.name, weights=weights, onnx_path=onnx_path, device=cand.device, precision=cand.precision, model=model,
                    work_scale=work_scale, **options
                )
        except BackendError as exc:
            logger.warning("backend auto: %s on %s unavailable (%s); trying the next", cand.name, cand.device, exc)
            failures.append(f"{cand.name}: {exc}")
            continue
        backend.selection_reason = cand.reason
        logger.info("backend auto -> %s: %s", backend.describe(), cand.reason)
        return backend
    raise BackendError("backend auto: nothing could be started: " + "; ".join(failures))
