"""Time ONNX Runtime CPU against torch CPU on one model and size (the measurement behind ``auto`` on CPU).

Both runtimes get the same inputs and the same number of threads; rounds are interleaved
(torch, ORT, torch, ORT...) so that load from other processes affects both alike. Reports the
median and the minimum per-frame latency in milliseconds.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dstfuse_stream.backends.onnx_backend import OnnxBackend
from dstfuse_stream.backends.onnx_export import export_onnx
from dstfuse_stream.backends.onnx_parity import random_pair
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.model import DSTFuse

__all__ = ["compare_cpu_backends"]

logger = logging.getLogger(__name__)


def _time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare_cpu_backends(
    model: DSTFuse,
    *,
    size_wh: tuple[int, int] = (320, 256),
    rounds: int = 5,
    per_round: int = 5,
    warmup: int = 3,
    threads: int | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Median/min ms per frame of torch CPU fp32 and ORT CPU (fp32 and fp16 files) at ``size_wh`` (width, height).

    ``onnx_path``: an fp32 export of ``model`` to use; otherwise fp32 and fp16 are exported to a
    temporary folder (export time is reported too).
    """
    threads = threads or torch.get_num_threads()
    width, height = size_wh
    ir, vis = random_pair((1, 1, height, width), seed=0)
    backends: dict[str, Any] = {}
    export_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"onnx_fp32": Path(onnx_path)} if onnx_path is not None else {}
        if onnx_path is None:
            for precision in ("fp32", "fp16"):
                t0 = time.perf_counter()
                paths[f"onnx_{precision}"] = export_onnx(
                    model, Path(tmp) / f"m_{precision}.onnx", precision=precision, check=False
                ).path
                export_s[precision] = time.perf_counter() - t0
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            backends["torch_fp32"] = TorchBackend(model, device="cpu")
            for label, path in paths.items():
                backends[label] = OnnxBackend(path, device="cpu", threads=threads)
            times: dict[str, list[float]] = {label: [] for label in backends}
            for backend in backends.values():
                for _ in range(warmup):
                    backend.fuse_batch(ir, vis)
            for _ in range(rounds):
                for label, backend in backends.items():
                    times[label].extend(_time_once(lambda: backend.fuse_batch(ir, vis)) for _ in range(per_round))
        finally:
            torch.set_num_threads(previous_threads)
            for backend in backends.values():
                backend.close()
    result = {
        "size_wh": list(size_wh),
        "threads": threads,
        "frames_per_backend": rounds * per_round,
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "export_s": export_s,
        "ms": {
            label: {"median": 1e3 * statistics.median(t), "min": 1e3 * min(t)} for label, t in times.items()
        },
    }
    fastest = min(result["ms"], key=lambda k: result["ms"][k]["median"])
    result["fastest"] = fastest
    logger.info("CPU comparison at %dx%d: %s", width, height, {k: round(v["median"], 1) for k, v in result["ms"].items()})
    return result
