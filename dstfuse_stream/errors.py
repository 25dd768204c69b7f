"""Error hierarchy of dstfuse-stream.

Every error a user can cause (bad path, bad shape, unreadable stream) derives from
:class:`DSTFuseError`; the CLIs turn these into one clear line and the error's :attr:`exit_code`
(2; 3 for :class:`SourceLostError`). Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
from types import ModuleType

__all__ = [
    "DSTFuseError",
    "CheckpointError",
    "ConfigError",
    "InputShapeError",
    "BackendError",
    "SourceError",
    "StreamMismatchError",
    "SinkError",
    "SourceLostError",
    "require_module",
    "os_error_reason",
]


class DSTFuseError(Exception):
    """Base class of every user-facing error raised by dstfuse-stream."""

    #: exit code of a command that stops with this error
    exit_code = 2


class ConfigError(DSTFuseError, ValueError):
    """A configuration value is out of range or names something unknown."""


class CheckpointError(DSTFuseError):
    """A checkpoint file is missing, not a checkpoint, or does not match its architecture."""


class InputShapeError(DSTFuseError, ValueError):
    """A tensor or array does not have the shape, dtype or value range that was expected."""


class BackendError(DSTFuseError):
    """An inference backend is unavailable or cannot run the given model/input."""


class SourceError(DSTFuseError):
    """A frame source (camera, file, folder, URL) cannot be opened or read."""


class SourceLostError(SourceError):
    """A live source (camera, network stream) stopped delivering frames after it had opened, and
    reconnecting (if asked for) did not bring it back. Exit code 3: not a bad input, a lost one."""

    exit_code = 3


class StreamMismatchError(DSTFuseError):
    """The IR and visible streams cannot be paired (length, size, or timing mismatch)."""


class SinkError(DSTFuseError):
    """An output (video file, image folder) cannot be written."""


def require_module(name: str, *, purpose: str, install: str) -> ModuleType:
    """``import name``, or raise :class:`BackendError` saying what needs it and how to install it.

    Optional dependencies (onnx, onnxruntime, onnxscript, onnx-ir, tensorrt...) are imported through
    this, so that a missing one is the package's own error and ``backend="auto"`` can fall back.
    """
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or OSError from a wheel whose native libraries are missing
        raise BackendError(
            f"{purpose} needs the Python package {name!r}, which is not usable here "
            f"({type(exc).__name__}: {exc}); install it with: {install}"
        ) from exc


def os_error_reason(exc: BaseException) -> str:
    """``"ENOSPC: No space left on device"``: the errno name and text of an OS error (else its message)."""
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]}: {text}"
    return f"{type(exc).__name__}: {text}"
