"""Checkpoints: plain dicts of tensors and python values, loaded with ``weights_only=True``.

Layout (timm-style)::

    {"arch": "dstfuse", "config": DSTFuseConfig.to_dict(), "state_dict": {...},
     "epoch": int, "loss": float | None, ...extra keys (optimizer state, phase, history)}

The package ships trained weights in ``dstfuse_stream/weights/``; :func:`load_model` with no path
loads the default one, offline, and with a preset name (``load_model("paper")``) that preset's weights.

Weights too large for one file travel as *shards* (:func:`save_checkpoint_shards`):
``<stem>-00001-of-00002.pt`` ..., each a checkpoint dict holding part of the ``state_dict`` plus
``shard``/``num_shards``; :func:`load_model` given any one shard (or the preset name) reassembles them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from dstfuse_stream.config import PRESETS, DSTFuseConfig
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
    "save_checkpoint_shards",
    "load_checkpoint_shards",
    "preset_weights_paths",
    "preset_weights_stem",
]

logger = logging.getLogger(__name__)

ARCH = "dstfuse"
#: File name (inside ``dstfuse_stream/weights``) of the checkpoint loaded when no path is given.
DEFAULT_WEIGHTS = "dstfuse_stream.pt"
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
    _atomic_save(_checkpoint_dict(model, _host_state(model, half=half), epoch=epoch, loss=loss, **extra), path)
    return path


def _host_state(model: DSTFuse, *, half: bool) -> dict[str, torch.Tensor]:
    return {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}


def _checkpoint_dict(model: DSTFuse, state: dict[str, torch.Tensor], *, epoch: int, loss: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "arch": ARCH,
        "config": model.config.to_dict(),
        "state_dict": state,
        "epoch": int(epoch),
        "loss": None if loss is None else float(loss),
        **extra,
    }


def _atomic_save(ckpt: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


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

    ``path=None`` loads the shipped default weights (:func:`default_weights_path`); a preset name
    (``"paper"``) loads that preset's shipped weights (:func:`preset_weights_paths`); a shard file
    loads it together with its sibling shards.
    """
    paths = _weights_paths(path)
    path = paths[0]
    ckpt = load_checkpoint_shards(paths) if _SHARD_RE.match(path.name) else load_checkpoint(path)
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


# ---------------------------------------------------------------------------------------------
# sharded weights (files below a size limit, e.g. for transfers that cap the file size)

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.pt$")
#: Bytes kept free in every shard for torch.save's own records (names, pickle, zip headers).
_SHARD_OVERHEAD = 256 * 1024


def _shard_name(stem: str, index: int, count: int) -> str:
    return f"{stem}-{index + 1:05d}-of-{count:05d}.pt"


def save_checkpoint_shards(
    stem: str | os.PathLike[str], model: DSTFuse, *, max_shard_bytes: int, epoch: int, loss: float | None = None,
    half: bool = True, **extra: Any,
) -> list[Path]:
    """Write ``model`` as shards ``<stem>-00001-of-0000N.pt`` ... of at most ``max_shard_bytes`` each.

    Tensors are packed in ``state_dict`` order (fp16 when ``half``); every shard is a checkpoint dict
    (``arch``, ``config``, ``epoch``, ``loss``, ``extra``) with its part of the ``state_dict`` and
    ``shard`` / ``num_shards``. Raises :class:`CheckpointError` when one tensor alone exceeds the limit.
    """
    stem = Path(stem)
    state = _host_state(model, half=half)
    groups: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if size > max_shard_bytes - _SHARD_OVERHEAD:
            raise CheckpointError(f"tensor {key!r} ({size} bytes) does not fit a shard of {max_shard_bytes} bytes")
        if groups[-1] and used + size > max_shard_bytes - _SHARD_OVERHEAD:
            groups.append({})
            used = 0
        groups[-1][key] = tensor
        used += size
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, part in enumerate(groups):
        path = stem.parent / _shard_name(stem.name, index, len(groups))
        _atomic_save(_checkpoint_dict(model, part, epoch=epoch, loss=loss, shard=index, num_shards=len(groups), **extra), path)
        if path.stat().st_size > max_shard_bytes:
            raise CheckpointError(f"shard {str(path)!r} is {path.stat().st_size} bytes, over the limit of {max_shard_bytes}")
        paths.append(path)
    return paths


def load_checkpoint_shards(paths: list[Path], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read shards written by :func:`save_checkpoint_shards` and merge them into one checkpoint dict."""
    parts = [load_checkpoint(p, map_location=map_location) for p in paths]
    count = parts[0].get("num_shards")
    found = sorted(int(p.get("shard", -1)) for p in parts)
    if count is None or found != list(range(count)):
        numbers = [i + 1 for i in found]
        raise CheckpointError(f"shards {[str(p) for p in paths]}: expected shards 1..{count} of one set, got numbers {numbers}")
    if any(p["config"] != parts[0]["config"] for p in parts):
        raise CheckpointError(f"shards {[str(p) for p in paths]}: their model configs differ")
    merged = {k: v for k, v in parts[0].items() if k not in ("shard", "num_shards")}
    merged["state_dict"] = {k: v for p in parts for k, v in p["state_dict"].items()}
    return merged


def _shard_set(path: Path) -> list[Path]:
    """All shards of the set ``path`` belongs to; :class:`CheckpointError` names missing ones."""
    match = _SHARD_RE.match(path.name)
    if match is None:
        raise CheckpointError(f"checkpoint {str(path)!r}: not a shard name (expected <stem>-NNNNN-of-NNNNN.pt)")
    stem, count = match["stem"], int(match["count"])
    paths = [path.parent / _shard_name(stem, i, count) for i in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r}: shard(s) {missing} of the set are missing")
    return paths


def preset_weights_stem(preset: str) -> str:
    """File stem of ``preset``'s weights: ``dstfuse_<preset>`` (``.pt``, or shards ``-NNNNN-of-NNNNN.pt``)."""
    return f"dstfuse_{preset}"


def preset_weights_paths(preset: str) -> list[Path]:
    """The shipped weights of ``preset``: ``weights/dstfuse_<preset>.pt``, or its shards."""
    folder = default_weights_path().parent
    stem = preset_weights_stem(preset)
    single = folder / f"{stem}.pt"
    if single.is_file():
        return [single]
    shards = sorted(p for p in folder.glob(f"{stem}-*-of-*.pt") if _SHARD_RE.match(p.name))
    if shards:
        return _shard_set(shards[0])
    raise CheckpointError(
        f"the {preset!r} preset has no trained weights yet (no dstfuse_{preset}.pt or dstfuse_{preset}-NNNNN-of-NNNNN.pt "
        f"in {str(folder)!r}); train them with 'dstfuse-train --preset {preset} --device cuda ...' or, on a GPU machine, "
        "'python3 -m benchmarks.gpu_run' (see docs/gpu.md), then copy the weights there"
    )


def _weights_paths(path: str | os.PathLike[str] | None) -> list[Path]:
    if path is None:
        return [default_weights_path()]
    path = Path(path)
    if not path.exists() and str(path) in PRESETS:
        return preset_weights_paths(str(path))
    return _shard_set(path) if _SHARD_RE.match(path.name) else [path]
