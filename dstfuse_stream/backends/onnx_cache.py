"""ONNX exports cached on disk, keyed by the checkpoint's SHA-256 (used by ``create_backend("onnx"/"auto")``).

``<cache>/onnx/dstfuse_<sha256[:16]>_<precision>_opset<N>_v<version>.onnx`` where ``<cache>`` is
:func:`dstfuse_stream.backends.tensorrt_options.default_cache_dir` (``$DSTFUSE_CACHE_DIR`` or
``~/.cache/dstfuse-stream``). A hit is verified against the file's ``metadata_props`` and re-exported
if they do not match. The first export (a few seconds) is announced with a warning naming the file.
Cached exports are parity-checked on two small shapes (one odd) only, to keep start-up short;
``dstfuse-export onnx`` runs the full check.

When the cache folder cannot be written (read-only home, full disk), the export goes to a folder
under the system temp dir instead, with a warning; if that fails too, :class:`BackendError` lets
``auto`` fall back to torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dstfuse_stream import __version__
from dstfuse_stream.backends.tensorrt_options import default_cache_dir
from dstfuse_stream.errors import BackendError

if TYPE_CHECKING:
    from dstfuse_stream.model import DSTFuse

__all__ = ["cached_onnx_path", "get_or_export_onnx", "writable_cache_folder", "CACHE_PARITY_SHAPES", "DEFAULT_OPSET"]

logger = logging.getLogger(__name__)

CACHE_PARITY_SHAPES = ((1, 1, 64, 64), (1, 1, 37, 53))
#: Opset of cached exports (see :mod:`dstfuse_stream.backends.onnx_export`; kept here so that a cache
#: lookup does not import onnx).
DEFAULT_OPSET = 17


def cached_onnx_path(
    sha256: str, *, precision: str, opset: int = DEFAULT_OPSET, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the export of the weights with hash ``sha256`` lives under the cache root ``cache_dir``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "onnx" / f"dstfuse_{sha256[:16]}_{precision}_opset{opset}_v{__version__}.onnx"


def writable_cache_folder(folder: Path) -> Path:
    """``folder`` when it can be created and written, else a per-user folder under the temp dir (logged)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return folder
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"dstfuse-stream-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / folder.name
        logger.warning("cache folder %s is not writable (%s); using %s", folder, exc, fallback)
    try:
        fallback.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=fallback):
            pass
    except OSError as exc:
        raise BackendError(f"no writable folder for the ONNX export: {folder} and {fallback} both fail ({exc})") from exc
    return fallback


def _is_cached(path: Path, key: str, sha: str) -> bool:
    from dstfuse_stream.backends.onnx_export import read_metadata

    if not path.is_file():
        return False
    try:
        if read_metadata(path).get(key) == sha:
            return True
    except BackendError:
        raise  # onnx itself is missing: not a cache problem
    except Exception as exc:  # a truncated or foreign file: export again
        logger.warning("cached %s is unreadable (%s); exporting again", path, exc)
        return False
    logger.warning("cached %s does not match %s %s; exporting again", path, key, sha[:16])
    return False


def get_or_export_onnx(
    weights: str | os.PathLike[str] | None = None,
    *,
    model: DSTFuse | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Path of a cached ``.onnx`` for ``model`` (keyed by its state_dict hash) or ``weights`` (file hash).

    ``weights=None`` and ``model=None`` mean the shipped default weights.
    """
    from dstfuse_stream.backends import onnx_export
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_model

    weights_path = None
    if model is not None:
        sha, key = onnx_export.state_dict_sha256(model), "state_dict_sha256"
    else:
        weights_path = default_weights_path() if weights is None else Path(weights)
        if not weights_path.is_file():
            load_model(weights_path)  # raises CheckpointError naming the missing file
        sha, key = file_sha256(weights_path), "checkpoint_sha256"
    path = cached_onnx_path(sha, precision=precision, opset=opset, cache_dir=cache_dir)
    if _is_cached(path, key, sha):
        logger.info("using cached ONNX export %s", path)
        return path
    target = writable_cache_folder(path.parent) / path.name
    if target != path and _is_cached(target, key, sha):
        logger.info("using cached ONNX export %s", target)
        return target
    if model is None:
        model = load_model(weights_path)
    onnx_export.require_dependencies(precision=precision)
    logger.warning("first use of these weights with ONNX Runtime: exporting %s ONNX to %s (one-off, a few seconds; "
                   "cached for later runs)", precision, target)
    try:
        onnx_export.export_onnx(
            model,
            target,
            precision=precision,
            opset=opset,
            checkpoint_sha256=sha if key == "checkpoint_sha256" else None,
            checkpoint_name=None if weights_path is None else weights_path.name,
            parity_shapes=CACHE_PARITY_SHAPES,
        )
    except BackendError:
        raise
    except Exception as exc:  # ONNX Runtime and the optimizer raise their own types: still "no ONNX backend"
        raise BackendError(f"ONNX export to {target} failed ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
    return target
