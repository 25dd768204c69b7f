"""Fusion-quality metrics.

Conventions are documented per function. Images are numpy arrays ``(H, W)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TemporalStability"]


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


class TemporalStability:
    """Streaming temporal-stability metric for fused video.

    For consecutive frames ``t-1, t`` it accumulates ``MAD(F)`` = mean |F_t - F_{t-1}| and the
    sources' ``MAD(S)`` = (mean |I_t - I_{t-1}| + mean |V_t - V_{t-1}|) / 2. :meth:`result` reports
    both means over time and ``ratio = mean MAD(F) / mean MAD(S)``: 1 means the fused video changes
    as much as its inputs, > 1 means added flicker. All three inputs must be on the same scale
    (all uint8 or all [0, 1] float); the MADs are reported on that scale.
    """

    def __init__(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fused_sum = 0.0
        self._source_sum = 0.0
        self._steps = 0

    def update(self, ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> None:
        """Add one frame (three same-shape arrays)."""
        if self._prev is not None and self._prev[0].shape == ir.shape:
            p_ir, p_vis, p_fused = self._prev
            self._fused_sum += _mean_abs_diff(fused, p_fused)
            self._source_sum += 0.5 * (_mean_abs_diff(ir, p_ir) + _mean_abs_diff(vis, p_vis))
            self._steps += 1
        self._prev = (ir.copy(), vis.copy(), fused.copy())

    def result(self) -> dict[str, float]:
        """``{"steps", "fused_mad", "source_mad", "ratio"}`` (NaN where undefined)."""
        if self._steps == 0:
            return {"steps": 0, "fused_mad": float("nan"), "source_mad": float("nan"), "ratio": float("nan")}
        fused_mad = self._fused_sum / self._steps
        source_mad = self._source_sum / self._steps
        ratio = fused_mad / source_mad if source_mad > 0 else float("nan")
        return {"steps": self._steps, "fused_mad": fused_mad, "source_mad": source_mad, "ratio": ratio}
