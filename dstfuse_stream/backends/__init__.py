"""Inference backends behind one interface (:class:`FusionBackend`) and a factory."""

from __future__ import annotations

import logging
from typing import Any

from dstfuse_stream.backends.base import FusionBackend, as_batch
from dstfuse_stream.errors import BackendError

__all__ = ["FusionBackend", "as_batch", "create_backend", "BACKEND_NAMES"]

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch")


def create_backend(name: str = "auto", **kwargs: Any) -> FusionBackend:
    """Create a backend by name (``auto``, ``torch``); ``kwargs`` go to its constructor.

    ``auto`` picks the fastest backend available on this machine and logs which.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"backend {name!r}: expected one of {list(BACKEND_NAMES)}")
    from dstfuse_stream.backends.torch_backend import TorchBackend

    backend = TorchBackend(**kwargs)
    if name == "auto":
        logger.info("backend auto -> %s", backend.describe())
    return backend
