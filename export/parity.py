"""Real pairs for ``dstfuse-export onnx --parity-data``: the parity check itself is in the runtime,
:mod:`dstfuse_stream.backends.onnx_parity`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dstfuse_stream.imageio import list_pairs, read_gray

__all__ = ["load_real_pairs"]

logger = logging.getLogger(__name__)


def load_real_pairs(root: str | os.PathLike[str], *, limit: int = 1) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The first ``limit`` pairs under ``root`` (``ir/`` + ``vi/``) as float32 ``(H, W)`` luma at native size."""
    pairs = []
    for ir_path, vis_path in list_pairs(root)[: max(limit, 0)]:
        ir, vis = read_gray(ir_path), read_gray(vis_path)
        if ir.shape != vis.shape:
            logger.warning("skipping %s: ir %s and vis %s differ in size", ir_path.name, ir.shape, vis.shape)
            continue
        pairs.append((ir, vis, f"{Path(root).name}/{ir_path.name}"))
    return pairs
