"""ONNX Runtime vs PyTorch parity: the same inputs through both, max/mean absolute difference per case.

Cases: random pairs at several sizes (square, non-square, odd, batch 2) and real pairs at their native
size. fp32 must agree within :data:`DEFAULT_TOLERANCE` ``["fp32"]`` (1e-4); the fp16 bound is looser
(float16 has an 11-bit mantissa: a step of ~5e-4 near 1.0) and the measured value is reported.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from dstfuse_stream.errors import require_module
from dstfuse_stream.model import DSTFuse

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEFAULT_SHAPES",
    "ParityCase",
    "ParityReport",
    "random_pair",
    "check_parity",
]

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
#: (B, 1, H, W): square, odd non-square, the 240 x 320 video size, and a batch of 2 at an odd size.
DEFAULT_SHAPES = ((1, 1, 64, 64), (1, 1, 97, 131), (1, 1, 240, 320), (2, 1, 37, 53))


@dataclass(frozen=True)
class ParityCase:
    """One input through both runtimes."""

    label: str
    shape: tuple[int, ...]
    max_abs_diff: float
    mean_abs_diff: float


@dataclass
class ParityReport:
    """All cases of one ``.onnx`` file against PyTorch fp32 on CPU."""

    onnx_path: str
    precision: str
    provider: str
    tolerance: float
    cases: list[ParityCase]

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.cases)

    @property
    def worst_case(self) -> str:
        return max(self.cases, key=lambda c: c.max_abs_diff).label

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_path": self.onnx_path,
            "precision": self.precision,
            "provider": self.provider,
            "tolerance": self.tolerance,
            "max_abs_diff": self.max_abs_diff,
            "worst_case": self.worst_case,
            "passed": self.passed,
            "cases": [{**asdict(c), "shape": list(c.shape)} for c in self.cases],
        }

    def summary(self) -> str:
        """Multi-line text table (printed by the CLI)."""
        lines = [f"parity {self.onnx_path} ({self.precision}, {self.provider}, tolerance {self.tolerance:.0e}):"]
        for c in self.cases:
            lines.append(f"  {c.label:<40} {str(c.shape):<18} max {c.max_abs_diff:.3e}  mean {c.mean_abs_diff:.3e}")
        lines.append(f"  -> max {self.max_abs_diff:.3e}: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def random_pair(shape: Sequence[int], *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform [0, 1) float32 ``ir``, ``vis`` of ``shape``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    ir = rng.random(tuple(shape), dtype=np.float32)
    vis = rng.random(tuple(shape), dtype=np.float32)
    return ir, vis


def check_parity(
    model: DSTFuse,
    onnx_path: str | os.PathLike[str],
    *,
    shapes: Sequence[Sequence[int]] = DEFAULT_SHAPES,
    real_pairs: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    tolerance: float | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    references: dict[str, np.ndarray] | None = None,
) -> ParityReport:
    """Run ``onnx_path`` in ONNX Runtime and ``model`` (fp32, CPU) on the same inputs; compare.

    ``references`` is an optional cache of PyTorch outputs by case label, filled on first use, so
    that several files exported from one model (fp32 and fp16) run PyTorch once per case.
    """
    ort = require_module("onnxruntime", purpose="the ONNX parity check", install="pip install onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=list(providers))
    meta = session.get_modelmeta().custom_metadata_map
    precision = meta.get("precision", "fp32")
    tolerance = DEFAULT_TOLERANCE.get(precision, DEFAULT_TOLERANCE["fp16"]) if tolerance is None else tolerance
    reference = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device/dtype
    inputs = [(f"random {'x'.join(map(str, s))}", *random_pair(s, seed=i)) for i, s in enumerate(shapes)]
    inputs += [(label, ir[None, None], vis[None, None]) for ir, vis, label in real_pairs]
    cases = []
    for label, ir, vis in inputs:
        key = f"{label} {ir.shape}"
        if references is not None and key in references:
            expected = references[key]
        else:
            with torch.inference_mode():
                expected = reference(torch.from_numpy(ir), torch.from_numpy(vis)).numpy()
            if references is not None:
                references[key] = expected
        got = session.run(None, {"ir": ir, "vis": vis})[0]
        if got.shape != expected.shape:
            diff = np.array([np.inf])
        else:
            diff = np.abs(got.astype(np.float32) - expected)
        cases.append(ParityCase(label, tuple(ir.shape), float(diff.max()), float(diff.mean())))
    report = ParityReport(str(onnx_path), precision, session.get_providers()[0], float(tolerance), cases)
    logger.info("parity %s: max abs diff %.3g (tolerance %.0e)", onnx_path, report.max_abs_diff, report.tolerance)
    return report
