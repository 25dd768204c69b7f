"""ONNX exports cached on disk, keyed by the checkpoint's SHA-256 (used by ``create_backend("onnx")``).

``<cache>/onnx/dstfuse_<sha256[:16]>_<precision>_opset<N>_v<version>.onnx`` where ``<cache>`` is
:func:`dstfuse_stream.backends.tensorrt_options.default_cache_dir` (``$DSTFUSE_CACHE_DIR`` or
``~/.cache/dstfuse-stream``). A hit is verified against the file's ``metadata_props`` and re-exported
if they do not match. Cached exports are parity-checked on two small shapes (one odd) only, to keep
start-up short; ``dstfuse-export onnx`` runs the full check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dstfuse_stream import __version__
from dstfuse_stream.backends.tensorrt_options import default_cache_dir
from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_model
from dstfuse_stream.model import DSTFuse
from .onnx_export import DEFAULT_OPSET, export_onnx, read_metadata, state_dict_sha256

__all__ = ["cached_onnx_path", "get_or_export_onnx", "CACHE_PARITY_SHAPES"]

logger = logging.getLogger(__name__)

CACHE_PARITY_SHAPES = ((1, 1, 64, 64), (1, 1, 37, 53))


def cached_onnx_path(
    sha256: str, *, precision: str, opset: int = DEFAULT_OPSET, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the export of the weights with hash ``sha256`` lives in the cache."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "onnx" / f"dstfuse_{sha256[:16]}_{precision}_opset{opset}_v{__version__}.onnx"


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
    if model is not None:
        sha, key = state_dict_sha256(model), "state_dict_sha256"
        weights_path = None
    else:
        weights_path = default_weights_path() if weights is None else Path(weights)
        sha, key = file_sha256(weights_path) if weights_path.is_file() else "", "checkpoint_sha256"
        if not sha:
            model = load_model(weights_path)  # raises CheckpointError naming the missing file
    path = cached_onnx_path(sha, precision=precision, opset=opset, cache_dir=cache_dir)
    if path.is_file():
        try:
            if read_metadata(path).get(key) == sha:
                logger.info("using cached ONNX export %s", path)
                return path
        except Exception as exc:  # a truncated or foreign file: export again
            logger.warning("cached %s is unreadable (%s); exporting again", path, exc)
        logger.warning("cached %s does not match %s %s; exporting again", path, key, sha[:16])
    if model is None:
        model = load_model(weights_path)
    logger.info("exporting %s ONNX to %s (one-off, a few seconds)", precision, path)
    export_onnx(
        model,
        path,
        precision=precision,
        opset=opset,
        checkpoint_sha256=sha if key == "checkpoint_sha256" else None,
        checkpoint_name=None if weights_path is None else weights_path.name,
        parity_shapes=CACHE_PARITY_SHAPES,
    )
    return path
