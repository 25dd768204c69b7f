"""Error hierarchy of dstfuse-stream.

Every error a user can cause (bad path, bad shape, unreadable stream) derives from
:class:`DSTFuseError`; the CLIs turn these into one clear line and exit code 2. Anything else
escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "DSTFuseError",
    "CheckpointError",
    "ConfigError",
    "InputShapeError",
    "BackendError",
    "SourceError",
    "StreamMismatchError",
    "SinkError",
]


class DSTFuseError(Exception):
    """Base class of every user-facing error raised by dstfuse-stream."""


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


class StreamMismatchError(DSTFuseError):
    """The IR and visible streams cannot be paired (length, size, or timing mismatch)."""


class SinkError(DSTFuseError):
    """An output (video file, image folder) cannot be written."""
