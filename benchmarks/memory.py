"""Peak memory of a block of code: CPU peak RSS (Linux high-water mark) or CUDA allocator peak.

CPU: on Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the process's RSS high-water mark
(``VmHWM``) to its current RSS, so ``VmHWM`` read afterwards is the peak *inside* the block and
``peak - RSS at entry`` is the extra memory the block needed. Where that file is not writable the
fallback is ``resource.getrusage(...).ru_maxrss`` (the lifetime peak: it under-reports a block that
peaks lower than an earlier one); the method used is recorded next to the number.

CUDA: ``torch.cuda.reset_peak_memory_stats`` then ``torch.cuda.max_memory_allocated`` (memory
held by the torch caching allocator only; ONNX Runtime/TensorRT allocations are not seen).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["PeakMemory", "current_rss_bytes", "release_free_memory", "reset_peak_rss"]

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MIB = 1024.0 * 1024.0


def _status_kib(field: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes, Linux: KiB


def release_free_memory() -> None:
    """``gc.collect()`` then glibc ``malloc_trim(0)``: hand freed heap pages back to the OS.

    Without it, memory freed by an earlier measurement stays resident and hides the next block's
    own peak (its RSS at entry would already include it). A no-op where glibc is absent.
    """
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(libc_name).malloc_trim(0)
    except (OSError, AttributeError):
        logger.debug("malloc_trim unavailable")


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``VmRSS``), or ``None`` where unknown."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS; ``False`` where the OS does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Context manager measuring peak memory inside its block.

    After the block: ``peak_mib`` (absolute peak), ``delta_mib`` (peak minus usage at entry) and
    ``method`` (``"vmhwm"``, ``"ru_maxrss"`` or ``"cuda_max_allocated"``).

    Args:
        device: ``"cpu"`` or a CUDA device name (``"cuda"``, ``"cuda:0"``).
    """

    def __init__(self, *, device: str = "cpu") -> None:
        self.device = device
        self.method = ""
        self.peak_mib: float | None = None
        self.delta_mib: float | None = None
        self._base = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_allocated"
        else:
            release_free_memory()
            rss = current_rss_bytes()
            if rss is not None and reset_peak_rss():
                self.method = "vmhwm"
                self._base = rss
            else:
                self.method = "ru_maxrss"
                self._base = rss if rss is not None else _ru_maxrss_bytes()
                logger.debug("peak RSS reset unavailable; falling back to ru_maxrss (lifetime peak)")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.method == "cuda_max_allocated":
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "vmhwm":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _ru_maxrss_bytes()
        self.peak_mib = peak / _MIB
        self.delta_mib = max(0, peak - self._base) / _MIB
