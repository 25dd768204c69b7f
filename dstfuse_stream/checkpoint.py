"""Checkpoints: plain dicts of tensors and python values, loaded with ``weights_only=True``.

Layout (timm-style)::

    {"arch": "dstfuse", "config": DSTFuseConfig.to_dict(), "state_dict": {...},
     "epoch": int, "loss": float | None, ...extra keys (optimizer state, phase, history)}

The package ships trained weights in ``dstfuse_stream/weights/``; :func:`load_model` with no path
loads the default one, offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.errors import CheckpointError, ConfigError
from dstfuse_stream.model import DSTFuse

__all__ = [
    "ARCH",
    "DEFAULT_WEIGHTS",
    "default_weights_path",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "file_sha256",
]

logger = logging.getLogger(__name__)

ARCH = "dstfuse"
#: File name (inside ``dstfuse_stream/weights``) of the checkpoint loaded when no path is given.
DEFAULT_WEIGHTS = "dstfuse_lite.pt"
_REQUIRED_KEYS = ("arch", "config", "state_dict")


def default_weights_path() -> Path:
    """Path of the shipped default checkpoint (it may be absent in a source tree without weights)."""
    return Path(__file__).resolve().parent / "weights" / DEFAULT_WEIGHTS


def save_checkpoint(
    path: str | os.PathLike[str],
    model: DSTFuse,
    *,
    epoch: int,
    loss: float | None = None,
    half: bool = False,
    **extra: Any,
) -> Path:
    """Write ``model`` and its config to ``path`` atomically (temp file + rename).

    ``half=True`` stores floating tensors as float16 (half the size; loading casts back).
    ``extra`` values must be loadable with ``weights_only=True`` (tensors, numbers, strings,
    lists/dicts of those), e.g. optimizer state dicts and a loss history.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "arch": ARCH,
        "config": model.config.to_dict(),
        "state_dict": state,
        "epoch": int(epoch),
        "loss": None if loss is None else float(loss),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint dict (``weights_only=True``; no pickled code is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a non-checkpoint file
        raise CheckpointError(
            f"checkpoint {str(path)!r}: not a weights-only checkpoint dict ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint {str(path)!r}: expected a dict with keys {list(_REQUIRED_KEYS)}")
    if ckpt["arch"] != ARCH:
        raise CheckpointError(f"checkpoint {str(path)!r}: expected arch {ARCH!r}, got {ckpt['arch']!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], *, source: str = "checkpoint") -> DSTFuse:
    """Build a :class:`DSTFuse` from a loaded checkpoint dict (float32, eval mode, on CPU)."""
    try:
        config = DSTFuseConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: bad config ({exc})") from exc
    model = DSTFuse(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: state_dict does not match config {config.name!r}: {exc}") from exc
    return model.float().eval()


def load_model(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> DSTFuse:
    """Load a trained :class:`DSTFuse` in eval mode on ``device``.

    ``path=None`` loads the shipped default weights (:func:`default_weights_path`).
    """
    path = default_weights_path() if path is None else Path(path)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, source=f"checkpoint {str(path)!r}")
    logger.info("loaded %s (config %s, epoch %s)", path, model.config.name, ckpt.get("epoch"))
    return model.to(device)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (used to tie exported artefacts to their checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
