"""TensorRT settings as plain data: shape profiles, cache folders, ONNX Runtime provider options.

Nothing here imports TensorRT; these are pure functions, tested on machines without a GPU.

A TensorRT engine with dynamic shapes is built for one optimisation profile: every input must lie
between ``min_shape`` and ``max_shape`` (element-wise) and the kernels are tuned for ``opt_shape``.
:meth:`ShapeProfile.check` rejects other shapes with a clear error before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dstfuse_stream.errors import ConfigError, InputShapeError
from dstfuse_stream.geometry import parse_size_wh

__all__ = [
    "INPUT_NAMES",
    "ShapeProfile",
    "DEFAULT_PROFILE",
    "parse_shape",
    "default_cache_dir",
    "format_profile_shapes",
    "tensorrt_provider_options",
    "cuda_provider_options",
]

INPUT_NAMES = ("ir", "vis")
Shape = tuple[int, int, int, int]


def parse_shape(text: str) -> Shape:
    """``"BxCxHxW"`` (a tensor shape, in tensor order) or ``"WxH"`` (a frame size, width first as on
    every command line; batch 1, one channel) -> ``(B, C, H, W)``: ``"1x1x480x640"`` == ``"640x480"``."""
    parts = text.strip().lower().split("x")
    if len(parts) == 2:
        width, height = parse_size_wh(text)
        return (1, 1, height, width)
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"shape {text!r}: expected 'WxH' or 'BxCxHxW' with integers") from None
    if len(dims) != 4:
        raise ConfigError(f"shape {text!r}: expected 'WxH' or 'BxCxHxW', got {len(dims)} numbers")
    return dims  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeProfile:
    """Min/opt/max ``(B, 1, H, W)`` shapes of one TensorRT optimisation profile (same for ``ir`` and ``vis``)."""

    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape

    def __post_init__(self) -> None:
        shapes = {}
        for label in ("min_shape", "opt_shape", "max_shape"):
            shape = tuple(int(d) for d in getattr(self, label))
            if len(shape) != 4 or shape[1] != 1 or min(shape) < 1:
                raise ConfigError(f"{label}: expected positive (B, 1, H, W), got {getattr(self, label)!r}")
            object.__setattr__(self, label, shape)
            shapes[label] = shape
        lo, opt, hi = shapes["min_shape"], shapes["opt_shape"], shapes["max_shape"]
        if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
            raise ConfigError(f"profile: expected min <= opt <= max in every dimension, got min {lo}, opt {opt}, max {hi}")

    @classmethod
    def from_hw(
        cls,
        min_hw: tuple[int, int],
        opt_hw: tuple[int, int],
        max_hw: tuple[int, int],
        *,
        batch: tuple[int, int, int] = (1, 1, 1),
    ) -> "ShapeProfile":
        """Profile from ``(H, W)`` sizes and ``(min, opt, max)`` batch sizes."""
        return cls(
            (batch[0], 1, *min_hw),  # type: ignore[arg-type]
            (batch[1], 1, *opt_hw),  # type: ignore[arg-type]
            (batch[2], 1, *max_hw),  # type: ignore[arg-type]
        )

    @classmethod
    def parse(cls, min_shape: str, opt_shape: str, max_shape: str) -> "ShapeProfile":
        """From CLI strings such as ``"1x1x64x64"`` or ``"640x480"`` (WxH)."""
        return cls(parse_shape(min_shape), parse_shape(opt_shape), parse_shape(max_shape))

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether ``shape`` lies between ``min_shape`` and ``max_shape`` in every dimension."""
        return len(shape) == 4 and all(lo <= d <= hi for lo, d, hi in zip(self.min_shape, shape, self.max_shape))

    def check(self, shape: Sequence[int], name: str) -> None:
        """Raise :class:`InputShapeError` naming ``name`` unless :meth:`contains` ``shape``."""
        if not self.contains(shape):
            raise InputShapeError(
                f"{name}: shape {tuple(shape)} is outside the TensorRT profile (min {self.min_shape}, "
                f"max {self.max_shape}); rebuild the engine with a profile that covers it"
            )

    def to_dict(self) -> dict[str, list[int]]:
        return {"min_shape": list(self.min_shape), "opt_shape": list(self.opt_shape), "max_shape": list(self.max_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShapeProfile":
        try:
            return cls(tuple(data["min_shape"]), tuple(data["opt_shape"]), tuple(data["max_shape"]))  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"profile: expected keys min_shape, opt_shape, max_shape, got {data!r}") from exc


#: Default profile: 32 x 32 up to 1080 x 1920 (full HD), tuned for 480 x 640 (the M3SVD videos), batch 1.
DEFAULT_PROFILE = ShapeProfile.from_hw((32, 32), (480, 640), (1080, 1920))


def default_cache_dir() -> Path:
    """``$DSTFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dstfuse-stream``, else ``~/.cache/dstfuse-stream``."""
    if os.environ.get("DSTFUSE_CACHE_DIR"):
        return Path(os.environ["DSTFUSE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dstfuse-stream"


def format_profile_shapes(shape: Sequence[int], names: Sequence[str] = INPUT_NAMES) -> str:
    """ORT's profile string: ``"ir:1x1x64x64,vis:1x1x64x64"``."""
    dims = "x".join(str(int(d)) for d in shape)
    return ",".join(f"{name}:{dims}" for name in names)


def tensorrt_provider_options(
    profile: ShapeProfile,
    *,
    cache_dir: str | os.PathLike[str],
    fp16: bool = True,
    device_id: int = 0,
    workspace_bytes: int | None = None,
) -> dict[str, Any]:
    """Options for ONNX Runtime's ``TensorrtExecutionProvider``: explicit profile, fp16, engine + timing cache."""
    cache = str(Path(cache_dir))
    options: dict[str, Any] = {
        "device_id": int(device_id),
        "trt_fp16_enable": bool(fp16),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": format_profile_shapes(profile.min_shape),
        "trt_profile_opt_shapes": format_profile_shapes(profile.opt_shape),
        "trt_profile_max_shapes": format_profile_shapes(profile.max_shape),
    }
    if workspace_bytes is not None:
        options["trt_max_workspace_size"] = int(workspace_bytes)
    return options


def cuda_provider_options(*, device_id: int = 0) -> dict[str, Any]:
    """Options for ONNX Runtime's ``CUDAExecutionProvider``."""
    return {"device_id": int(device_id)}
