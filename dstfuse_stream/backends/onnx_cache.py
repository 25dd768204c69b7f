"""ONNX exports cached on disk, keyed by the checkpoint's SHA-256 and the work scale (used by ``create_backend("onnx"/"auto")``).

``<cache>/onnx/dstfuse_<sha256[:16]>_<precision>_ws<scale>_opset<N>_v<version>.onnx`` where ``<cache>`` is
:func:`dstfuse_stream.backends.tensorrt_options.default_cache_dir` (``$DSTFUSE_CACHE_DIR`` or
``~/.cache/dstfuse-stream``) and ``<scale>`` the work scale baked into the graph
(:mod:`~dstfuse_stream.backends.work_scale`). A hit is verified against the file's ``metadata_props``
(hash and work scale) and re-exported if they do not match. The first export (a few seconds) is
announced with a warning naming the file. Cached exports are parity-checked on two small shapes (one
odd) only, to keep start-up short; ``dstfuse-export onnx`` runs the full check.

int8 files are never made here: they need calibration data, and ``dstfuse-export int8`` writes them
into this cache (:func:`dstfuse_stream.backends.onnx_quant.quantize_cached`); asking for a missing
one is a :class:`BackendError` that names the command.

When the cache folder cannot be written (read-only home, full disk), the export goes to a folder
under the system temp dir instead, with a warning; if that fails too, :class:`BackendError` lets
``auto`` fall back to torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstfuse_stream import __version__
from dstfuse_stream.backends.tensorrt_options import default_cache_dir
from dstfuse_stream.backends.work_scale import format_work_scale, resolve_work_scale, with_work_scale
from dstfuse_stream.errors import BackendError

if TYPE_CHECKING:
    from dstfuse_stream.model import DSTFuse

__all__ = ["ExportKey", "export_key", "cached_onnx_path", "get_or_export_onnx", "writable_cache_folder", "CACHE_PARITY_SHAPES", "DEFAULT_OPSET"]

logger = logging.getLogger(__name__)

CACHE_PARITY_SHAPES = ((1, 1, 64, 64), (1, 1, 37, 53))
#: Opset of cached exports (see :mod:`dstfuse_stream.backends.onnx_export`; kept here so that a cache
#: lookup does not import onnx).
DEFAULT_OPSET = 17


def cached_onnx_path(
    sha256: str,
    *,
    precision: str,
    work_scale: float = 1.0,
    opset: int = DEFAULT_OPSET,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where the export of the weights with hash ``sha256`` at ``work_scale`` lives under the cache root ``cache_dir``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ws = format_work_scale(work_scale)
    return root / "onnx" / f"dstfuse_{sha256[:16]}_{precision}_ws{ws}_opset{opset}_v{__version__}.onnx"


@dataclass
class ExportKey:
    """What identifies an export: the weights (file or state_dict hash) and the resolved work scale.

    ``model`` is the network at that work scale (what an export traces).
    """

    sha256: str
    hash_key: str  # metadata entry holding the hash: "checkpoint_sha256" or "state_dict_sha256"
    work_scale: float
    weights_path: Path | None
    cache_dir: str | os.PathLike[str] | None
    model: DSTFuse = field(repr=False, compare=False)

    def path(self, precision: str, opset: int = DEFAULT_OPSET) -> Path:
        """The cache file of this key in ``precision``."""
        return cached_onnx_path(self.sha256, precision=precision, work_scale=self.work_scale, opset=opset, cache_dir=self.cache_dir)

    def describe(self) -> str:
        what = f"weights {self.weights_path}" if self.weights_path is not None else f"the in-memory model (state_dict {self.sha256[:16]})"
        return f"{what} at work scale {format_work_scale(self.work_scale)}"


def export_key(
    weights: str | os.PathLike[str] | None = None,
    *,
    model: DSTFuse | None = None,
    work_scale: Any = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> ExportKey:
    """The :class:`ExportKey` of ``model`` (state_dict hash) or ``weights`` (file hash; ``None`` =
    shipped weights). ``work_scale="auto"`` is resolved against the model (loaded for it)."""
    from dstfuse_stream.backends import onnx_export
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_model

    if model is not None:
        scale = resolve_work_scale(work_scale, model)
        return ExportKey(onnx_export.state_dict_sha256(model), "state_dict_sha256", scale, None, cache_dir, with_work_scale(model, scale))
    weights_path = default_weights_path() if weights is None else Path(weights)
    loaded = load_model(weights_path)  # raises CheckpointError naming a missing or bad file
    scale = resolve_work_scale(work_scale, loaded)
    return ExportKey(file_sha256(weights_path), "checkpoint_sha256", scale, weights_path, cache_dir, with_work_scale(loaded, scale))


def _fallback_folder(folder: Path) -> Path:
    return Path(tempfile.gettempdir()) / f"dstfuse-stream-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / folder.name


def writable_cache_folder(folder: Path) -> Path:
    """``folder`` when it can be created and written, else a per-user folder under the temp dir (logged)."""
    fallback = _fallback_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return folder
    except OSError as exc:
        logger.warning("cache folder %s is not writable (%s); using %s", folder, exc, fallback)
    try:
        fallback.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=fallback):
            pass
    except OSError as exc:
        raise BackendError(f"no writable folder for the ONNX export: {folder} and {fallback} both fail ({exc})") from exc
    return fallback


def _is_cached(path: Path, key: ExportKey) -> bool:
    from dstfuse_stream.backends.onnx_export import read_metadata

    if not path.is_file():
        return False
    try:
        metadata = read_metadata(path)
    except BackendError:
        raise  # onnx itself is missing: not a cache problem
    except Exception as exc:  # a truncated or foreign file: export again
        logger.warning("cached %s is unreadable (%s); exporting again", path, exc)
        return False
    if metadata.get(key.hash_key) == key.sha256 and metadata.get("work_scale", "1") == format_work_scale(key.work_scale):
        return True
    logger.warning("cached %s does not match %s %s at work scale %s; exporting again", path, key.hash_key, key.sha256[:16], key.work_scale)
    return False


def get_or_export_onnx(
    weights: str | os.PathLike[str] | None = None,
    *,
    model: DSTFuse | None = None,
    precision: str = "fp32",
    work_scale: Any = "auto",
    opset: int = DEFAULT_OPSET,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Path of a cached ``.onnx`` for ``model`` (keyed by its state_dict hash) or ``weights`` (file
    hash) at ``work_scale``; fp32/fp16 are exported on a miss, int8 must have been made by
    ``dstfuse-export int8``.

    ``weights=None`` and ``model=None`` mean the shipped default weights.
    """
    from dstfuse_stream.backends import onnx_export

    key = export_key(weights, model=model, work_scale=work_scale, cache_dir=cache_dir)
    path = key.path(precision, opset)
    for candidate in (path, _fallback_folder(path.parent) / path.name):
        if _is_cached(candidate, key):
            logger.info("using cached ONNX export %s", candidate)
            return candidate
    if precision == "int8":
        source = "" if key.weights_path is None else f" --weights {key.weights_path}"
        raise BackendError(
            f"precision 'int8': no calibrated int8 model for {key.describe()} (looked for {path}); make one with "
            f"`dstfuse-export int8{source} --work-scale {format_work_scale(key.work_scale)}` (calibrates on training crops)"
        )
    target = writable_cache_folder(path.parent) / path.name
    onnx_export.require_dependencies(precision=precision)
    logger.warning("first use of these weights with ONNX Runtime: exporting %s ONNX to %s (one-off, a few seconds; "
                   "cached for later runs)", precision, target)
    try:
        onnx_export.export_onnx(
            key.model,
            target,
            precision=precision,
            opset=opset,
            checkpoint_sha256=key.sha256 if key.hash_key == "checkpoint_sha256" else None,
            checkpoint_name=None if key.weights_path is None else key.weights_path.name,
            parity_shapes=CACHE_PARITY_SHAPES,
        )
    except BackendError:
        raise
    except Exception as exc:  # ONNX Runtime and the optimizer raise their own types: still "no ONNX backend"
        raise BackendError(f"ONNX export to {target} failed ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
    return target
