"""ONNX Runtime backend: an exported DSTFuse ``.onnx`` on the CPU, CUDA or TensorRT execution provider.

The file must have inputs ``ir``, ``vis`` and output ``fused`` shaped ``(B, 1, H, W)``, as written by
:mod:`dstfuse_stream.backends.onnx_export` (``dstfuse-export onnx``, or the first-use export of
``auto``) or :mod:`dstfuse_stream.backends.onnx_quant` (int8). Its ``metadata_props`` (precision,
work scale, config) are read when present.

CPU sessions run ``threads`` intra-op threads (default: the usable cores) that sleep between calls
(``spin=False``): ONNX Runtime's default busy-wait took 1.5-7x longer per call here whenever anything
else wanted the cores (the reader/writer threads of the pipeline, a second session, other processes);
docs/benchmarks.md. Input buffers are reused per thread (uint8 frames are converted into them).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dstfuse_stream.backends.base import FusionBackend, to_float32
from dstfuse_stream.backends.precision import default_threads, resolve_precision
from dstfuse_stream.backends.tensorrt_options import (
    ShapeProfile,
    cuda_provider_options,
    default_cache_dir,
    tensorrt_provider_options,
)
from dstfuse_stream.errors import BackendError, require_module

__all__ = ["OnnxBackend", "select_providers", "ProviderSpec", "TRT_PROVIDER", "CUDA_PROVIDER", "CPU_PROVIDER"]

logger = logging.getLogger(__name__)

TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
ProviderSpec = tuple[str, dict[str, Any]]
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save archives


def _import_ort() -> Any:
    return require_module("onnxruntime", purpose="backend 'onnx'", install="pip install onnxruntime (or onnxruntime-gpu)")


def select_providers(
    providers: str | Sequence[str | ProviderSpec],
    *,
    available: Sequence[str],
    device: str = "auto",
    profile: ShapeProfile | None = None,
    fp16: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
) -> list[ProviderSpec]:
    """Resolve ``providers`` to ``[(name, options), ...]`` for ``onnxruntime.InferenceSession``.

    ``"auto"``: on ``device="cpu"`` CPU only; otherwise TensorRT (only when a ``profile`` is given,
    since an engine without one is rebuilt for every new input size) > CUDA > CPU, among ``available``.
    ``device="cuda"`` without a GPU provider is an error. An explicit list is checked against
    ``available``; bare TensorRT/CUDA names get their default options.
    """
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise BackendError(f"device {device!r}: expected 'auto', 'cpu' or 'cuda'")
    trt_cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tensorrt"

    def with_options(name: str) -> ProviderSpec:
        if name == TRT_PROVIDER:
            if profile is None:
                raise BackendError(f"provider {TRT_PROVIDER}: needs a shape profile (min/opt/max shapes)")
            return name, tensorrt_provider_options(profile, cache_dir=trt_cache, fp16=fp16, device_id=device_id)
        if name == CUDA_PROVIDER:
            return name, cuda_provider_options(device_id=device_id)
        return name, {}

    if isinstance(providers, str):
        if providers != "auto":
            providers = [providers]
        elif device == "cpu":
            return [(CPU_PROVIDER, {})]
        else:
            wanted = ([TRT_PROVIDER] if profile is not None else []) + [CUDA_PROVIDER]
            chosen = [with_options(p) for p in wanted if p in available]
            if not chosen and str(device).startswith("cuda"):
                raise BackendError(
                    f"device {device!r}: ONNX Runtime offers no GPU provider (available: {list(available)}); "
                    "install onnxruntime-gpu (pip install 'dstfuse-stream[gpu]')"
                )
            return chosen + [(CPU_PROVIDER, {})]
    resolved: list[ProviderSpec] = []
    for item in providers:
        name, options = (item, None) if isinstance(item, str) else (item[0], dict(item[1]))
        if name not in available:
            raise BackendError(f"provider {name!r}: not offered by this onnxruntime (available: {list(available)})")
        resolved.append(with_options(name) if options is None else (name, options))
    if not resolved:
        raise BackendError("providers: expected 'auto' or a non-empty list")
    return resolved


def _open_session(path: Path, providers: list[ProviderSpec], threads: int | None, spin: bool) -> Any:
    ort = _import_ort()
    if not path.is_file():
        raise BackendError(f"ONNX model {str(path)!r}: file not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == _ZIP_MAGIC:
        raise BackendError(
            f"ONNX model {str(path)!r}: this is a PyTorch checkpoint (zip archive), not an ONNX model; "
            "pass it as weights= or export it with `dstfuse-export onnx --weights PATH`"
        )
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise BackendError(f"threads: expected >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise BackendError(
            f"ONNX model {str(path)!r}: cannot be loaded by ONNX Runtime, expected an ONNX model file "
            f"({type(exc).__name__}: {str(exc).strip()[:300]})"
        ) from exc


def _check_signature(session: Any, path: Path) -> np.dtype:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    got = f"inputs {[(i.name, i.shape) for i in inputs.values()]}, outputs {outputs}"
    if set(inputs) != {"ir", "vis"} or "fused" not in outputs:
        raise BackendError(f"ONNX model {str(path)!r}: expected inputs ir, vis and output fused; got {got}")
    for value in inputs.values():
        shape = value.shape
        fixed_channels = len(shape) == 4 and isinstance(shape[1], int) and shape[1] != 1
        if len(shape) != 4 or fixed_channels:
            raise BackendError(f"ONNX model {str(path)!r}: expected inputs shaped (B, 1, H, W); got {got}")
    types = {i.type for i in inputs.values()}
    if types == {"tensor(float)"}:
        return np.dtype(np.float32)
    if types == {"tensor(float16)"}:
        return np.dtype(np.float16)
    raise BackendError(f"ONNX model {str(path)!r}: expected float32 or float16 inputs, got {sorted(types)}")


def _config_from_metadata(metadata: dict[str, str]) -> Any:
    if "config" not in metadata:
        return None
    from dstfuse_stream.config import DSTFuseConfig

    try:
        return DSTFuseConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
        logger.warning("ONNX metadata 'config' is not a DSTFuse config (%s); ignored", exc)
        return None


class OnnxBackend(FusionBackend):
    """DSTFuse through ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        providers: ``"auto"`` (see :func:`select_providers`), one provider name, or a list of names
            or ``(name, options)`` pairs.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (used by ``providers="auto"``).
        threads: ONNX Runtime intra-op threads (``None``: the usable cores,
            :func:`~dstfuse_stream.backends.precision.default_threads`).
        spin: let idle intra-op threads busy-wait (ONNX Runtime's default); ``False`` (ours) makes
            them sleep, see the module docstring.
        profile: TensorRT shape profile; enables the TensorRT provider under ``"auto"`` and makes
            :meth:`fuse` reject shapes outside it before running.
        cache_dir: TensorRT engine/timing cache folder (default ``<user cache>/dstfuse-stream/tensorrt``).
        precision: expected precision (``"auto"``/``None``: the file's; ``"fp32"``/``"fp16"``/``"int8"``:
            checked against the file's metadata; see :mod:`dstfuse_stream.backends.precision`).
            For the TensorRT provider ``"fp16"`` also enables TensorRT fp16 kernels.
        work_scale: expected work scale (``None``: the file's; else checked against its metadata).
    """

    name = "onnx"
    accepts_uint8 = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: str | Sequence[str | ProviderSpec] = "auto",
        device: str = "auto",
        threads: int | None = None,
        profile: ShapeProfile | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        precision: str | None = None,
        device_id: int = 0,
        spin: bool = False,
        work_scale: float | None = None,
    ) -> None:
        ort = _import_ort()
        precision = resolve_precision(precision)
        if str(device).startswith("cuda:"):
            index = str(device).split(":", 1)[1]
            if not index.isdigit():
                raise BackendError(f"device {device!r}: expected 'cuda:N' with an integer N")
            device_id = int(index)
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"ONNX model {str(self.path)!r}: file not found")
        specs = select_providers(
            providers,
            available=ort.get_available_providers(),
            device=device,
            profile=profile,
            fp16=precision != "fp32",
            cache_dir=cache_dir,
            device_id=device_id,
        )
        if any(name == TRT_PROVIDER for name, _ in specs):
            Path(dict(specs)[TRT_PROVIDER]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            logger.info("TensorRT engine for %s is built on first use (minutes) and cached", self.path.name)
        cpu_only = all(name == CPU_PROVIDER for name, _ in specs)
        self._session = _open_session(self.path, specs, default_threads() if threads is None and cpu_only else threads, spin)
        self._session_options = self._session.get_session_options()
        self._input_dtype = _check_signature(self._session, self.path)
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        #: the model config stored by the exporter (``None`` for files from elsewhere)
        self.config = _config_from_metadata(self.metadata)
        file_precision = self.metadata.get("precision", "fp16" if self._input_dtype == np.float16 else "fp32")
        trt_active = self._session.get_providers()[0] == TRT_PROVIDER
        if precision is not None and precision != file_precision and not trt_active:
            raise BackendError(
                f"ONNX model {str(self.path)!r}: precision {precision!r} requested but the file is {file_precision!r}; "
                f"export the {precision} variant (dstfuse-export onnx --precision {precision})"
            )
        #: the work scale baked into the file (1.0 for files without the entry)
        self.work_scale = float(self.metadata.get("work_scale", "1"))
        if work_scale is not None and float(work_scale) != self.work_scale:
            raise BackendError(
                f"ONNX model {str(self.path)!r}: work scale {work_scale:g} requested but the file runs at {self.work_scale:g}"
            )
        self._buffers = threading.local()
        self.profile = profile
        self._active = active = self._session.get_providers()[0]
        run_device = "cpu" if active == CPU_PROVIDER else f"cuda:{device_id}"
        super().__init__(device=run_device, precision=precision or file_precision)
        logger.info("ONNX Runtime session for %s: providers %s", self.path.name, self._session.get_providers())

    @property
    def active_provider(self) -> str:
        """The highest-priority provider the session actually registered (e.g. ``CPUExecutionProvider``)."""
        return self._active

    @property
    def threads(self) -> int:
        """ONNX Runtime's intra-op thread setting of this session (0 = its default, one per core)."""
        return int(self._session_options.intra_op_num_threads)

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.active_provider == CPU_PROVIDER else ""
        return f"onnx {self.path.name} via {self.active_provider} on {self.device} ({self.precision}, work scale {self.work_scale:g}{threads})"

    def _input(self, name: str, x: np.ndarray) -> np.ndarray:
        """``x`` as the session's input dtype; uint8 goes into a float32 buffer kept per thread and
        input (reallocated when the shape changes), with the values of :func:`to_float32`."""
        if x.dtype != np.uint8 or self._input_dtype != np.float32:
            return to_float32(x).astype(self._input_dtype, copy=False)
        buf = getattr(self._buffers, name, None)
        if buf is None or buf.shape != x.shape:
            buf = np.empty(x.shape, np.float32)
            setattr(self._buffers, name, buf)
        np.multiply(x, np.float32(1.0 / 255.0), out=buf, dtype=np.float32)
        return buf

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise BackendError(f"{self.describe()}: backend is closed")
        if self.profile is not None:
            self.profile.check(ir.shape, "ir")
            self.profile.check(vis.shape, "vis")
        feeds = {name: self._input(name, x) for name, x in (("ir", ir), ("vis", vis))}
        (fused,) = self._session.run(["fused"], feeds)
        return np.asarray(fused, dtype=np.float32)

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
