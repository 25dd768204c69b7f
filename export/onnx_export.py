"""``dstfuse-export onnx``'s extra on top of the runtime exporter: several precisions from one trace.

The exporter itself (trace, simplification, fp16 conversion, metadata, parity gate) is part of the
runtime, :mod:`dstfuse_stream.backends.onnx_export`, because ``create_backend("auto")`` exports on
first use; this package only adds the command-line conveniences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dstfuse_stream.backends.onnx_export import (
    DEFAULT_OPSET,
    PRECISIONS,
    ExportResult,
    check_precision,
    build_fp32_graph,
    export_onnx,
)
from dstfuse_stream.model import DSTFuse

__all__ = ["export_variants"]


def export_variants(
    model: DSTFuse,
    out_dir: str | os.PathLike[str],
    *,
    stem: str = "dstfuse",
    precisions: Sequence[str] = PRECISIONS,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    checkpoint_sha256: str | None = None,
    checkpoint_name: str | None = None,
    check: bool = True,
    real_pairs: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    parity_shapes: Sequence[Sequence[int]] | None = None,
) -> list[ExportResult]:
    """Export ``<out_dir>/<stem>_<precision>.onnx`` for each precision from one trace (see ``export_onnx``)."""
    for precision in precisions:
        check_precision(precision)
    graph = build_fp32_graph(model, opset=opset, simplify=simplify)
    references: dict[str, np.ndarray] = {}
    return [
        export_onnx(
            model,
            Path(out_dir) / f"{stem}_{precision}.onnx",
            precision=precision,
            checkpoint_sha256=checkpoint_sha256,
            checkpoint_name=checkpoint_name,
            check=check,
            real_pairs=real_pairs,
            parity_shapes=parity_shapes,
            graph=graph,
            references=references,
        )
        for precision in precisions
    ]
