"""Summary statistics of latency samples: percentiles, median, throughput.

Pure python (no numpy) so the numbers are easy to check by hand; :func:`percentile` uses the same
linear interpolation between closest ranks as ``numpy.percentile``'s default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summarize_latencies"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between closest ranks.

    ``percentile([1, 2, 3, 4], 50) == 2.5``; ``percentile([5], 99) == 5``.
    """
    if not values:
        raise ValueError("percentile: expected at least one value, got an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: expected q in [0, 100], got {q}")
    ordered = sorted(float(v) for v in values)
    rank = q / 100.0 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summarize_latencies(latencies_s: Sequence[float], *, frames_per_call: int = 1) -> dict[str, float | int]:
    """Median/p90/p99/mean/min/max in milliseconds and throughput of sequential calls.

    Args:
        latencies_s: wall time of each call, in seconds.
        frames_per_call: frames processed by one call (the batch size).

    Returns:
        ``{"n", "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "fps"}`` where
        ``fps = frames_per_call * n / sum(latencies_s)`` (sustained throughput of back-to-back calls).
    """
    if not latencies_s:
        raise ValueError("summarize_latencies: expected at least one latency, got none")
    if frames_per_call < 1:
        raise ValueError(f"summarize_latencies: expected frames_per_call >= 1, got {frames_per_call}")
    if any(not math.isfinite(t) or t < 0 for t in latencies_s):
        raise ValueError("summarize_latencies: expected finite non-negative latencies")
    total_s = math.fsum(latencies_s)
    n = len(latencies_s)
    return {
        "n": n,
        "median_ms": percentile(latencies_s, 50) * 1e3,
        "p90_ms": percentile(latencies_s, 90) * 1e3,
        "p99_ms": percentile(latencies_s, 99) * 1e3,
        "mean_ms": total_s / n * 1e3,
        "min_ms": min(latencies_s) * 1e3,
        "max_ms": max(latencies_s) * 1e3,
        "fps": frames_per_call * n / total_s if total_s > 0 else math.inf,
    }
