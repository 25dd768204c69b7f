"""dstfuse-stream: real-time infrared/visible video fusion with the DSTFuse network.

::

    import dstfuse_stream as ds

    fused = ds.Fuser()(ir, vis)                       # numpy frames in, uint8 BGR out
    fused = ds.fuse(ir, vis)                          # the same with a cached default Fuser
    for frame in ds.stream(ir="ir.mp4", vis="vi.mp4"):  # any source pair the CLI accepts
        ...

Names are imported on first use (module ``__getattr__``), so ``import dstfuse_stream`` and its
numpy-only modules (``dstfuse_stream.metrics``, ``.colour``, ``.imageio``...) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "Fuser": "dstfuse_stream.fuser",
    "FusedFrame": "dstfuse_stream.fuser",
    "fuse": "dstfuse_stream.fuser",
    "stream": "dstfuse_stream.streaming",
    "FusionPipeline": "dstfuse_stream.pipeline",
    "PipelineSummary": "dstfuse_stream.stats",
    "create_backend": "dstfuse_stream.backends",
    "load_model": "dstfuse_stream.checkpoint",
    "DSTFuse": "dstfuse_stream.model",
    "DSTFuseConfig": "dstfuse_stream.config",
    "get_config": "dstfuse_stream.config",
    "DSTFuseError": "dstfuse_stream.errors",
    "ConfigError": "dstfuse_stream.errors",
    "InputShapeError": "dstfuse_stream.errors",
    "BackendError": "dstfuse_stream.errors",
    "SourceError": "dstfuse_stream.errors",
    "SourceLostError": "dstfuse_stream.errors",
    "SinkError": "dstfuse_stream.errors",
    "StreamMismatchError": "dstfuse_stream.errors",
    "CheckpointError": "dstfuse_stream.errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dstfuse_stream.backends import create_backend
    from dstfuse_stream.checkpoint import load_model
    from dstfuse_stream.config import DSTFuseConfig, get_config
    from dstfuse_stream.errors import (
        BackendError,
        CheckpointError,
        ConfigError,
        DSTFuseError,
        InputShapeError,
        SinkError,
        SourceError,
        SourceLostError,
        StreamMismatchError,
    )
    from dstfuse_stream.fuser import FusedFrame, Fuser, fuse
    from dstfuse_stream.model import DSTFuse
    from dstfuse_stream.pipeline import FusionPipeline
    from dstfuse_stream.stats import PipelineSummary
    from dstfuse_stream.streaming import stream


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dstfuse_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
