"""Summary statistics of latency samples: median, p90, p99 (``numpy.percentile``, linear), throughput."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["summarize_latencies"]


def summarize_latencies(latencies_s: Sequence[float], *, frames_per_call: int = 1) -> dict[str, float | int]:
    """Median/p90/p99/mean/min/max in milliseconds and throughput of sequential calls.

    Args:
        latencies_s: wall time of each call, in seconds.
        frames_per_call: frames processed by one call (the batch size).

    Returns:
        ``{"n", "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "fps"}`` where
        percentiles are ``numpy.percentile``'s default (linear between closest ranks) and
        ``fps = frames_per_call * n / sum(latencies_s)`` (sustained throughput of back-to-back calls).
    """
    if len(latencies_s) == 0:
        raise ValueError("summarize_latencies: expected at least one latency, got none")
    if frames_per_call < 1:
        raise ValueError(f"summarize_latencies: expected frames_per_call >= 1, got {frames_per_call}")
    values = np.asarray(latencies_s, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("summarize_latencies: expected finite non-negative latencies")
    total_s = math.fsum(values.tolist())
    median, p90, p99 = np.percentile(values, [50, 90, 99]) * 1e3
    return {
        "n": int(values.size),
        "median_ms": float(median),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": total_s / values.size * 1e3,
        "min_ms": float(values.min()) * 1e3,
        "max_ms": float(values.max()) * 1e3,
        "fps": frames_per_call * values.size / total_s if total_s > 0 else math.inf,
    }
