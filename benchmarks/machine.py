"""Facts about the machine a benchmark ran on: CPU, cores, threads, GPU, library versions, load."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["cpu_model", "load_average", "machine_info", "package_versions"]

_PACKAGES = ("torch", "onnxruntime", "av", "numpy", "opencv-python-headless", "onnx", "kornia", "tensorrt")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    from dstfuse_stream.backends.precision import cpu_features

    return cpu_features().model


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (as ``uptime`` prints them), or ``None`` where unsupported."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return gpus


def machine_info() -> dict[str, Any]:
    """Everything needed to judge a number: hardware, threads, library versions and current load."""
    import torch

    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cores = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpus": _gpus(),
        "gpu": ", ".join(g["name"] for g in _gpus()) or "none",
        "cuda_version": torch.version.cuda,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "versions": package_versions(),
        "load_average": load_average(),
    }
