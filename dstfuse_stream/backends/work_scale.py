"""Work scale: the resolution the networks run at, relative to the frame (1, 0.5 or 0.25).

At ``work_scale=0.5`` :meth:`dstfuse_stream.model.DSTFuse.set_work_scale` runs the three networks on
area-downscaled inputs and applies their decisions (blend maps, attention, CST correction) to the
full-resolution sources: about 4x less network work, with fine detail still taken from the
full-resolution frames. It is an inference setting (not stored in checkpoints); an ONNX export
bakes it in (file name and ``work_scale`` metadata), so each scale has its own cached export.

``"auto"`` (the default everywhere) is :data:`AUTO_WORK_SCALE` for a model that supports a reduced
scale and 1 for one that does not (``set_work_scale`` raises for it). The rule is backed by the
fidelity table of ``dstfuse-bench realtime`` (PSNR vs the full-resolution output on real frames,
gate :data:`~dstfuse_stream.backends.precision.FIDELITY_GATE_DB`, and VIF/Qabf/SSIM within 1 %); docs/realtime.md.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from dstfuse_stream.errors import ConfigError

if TYPE_CHECKING:
    from dstfuse_stream.model import DSTFuse

__all__ = ["WORK_SCALES", "AUTO_WORK_SCALE", "parse_work_scale", "resolve_work_scale", "with_work_scale", "format_work_scale"]

WORK_SCALES = (1.0, 0.5, 0.25)
#: What ``work_scale="auto"`` uses for a model that supports reduced scales.
AUTO_WORK_SCALE = 0.5


def parse_work_scale(value: Any) -> float | None:
    """``"auto"``/``None`` -> ``None``; ``1``, ``"0.5"``, ``0.25`` -> that float; anything else: ConfigError."""
    if value is None or value == "auto":
        return None
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = None
    if scale not in WORK_SCALES:
        raise ConfigError(f"work_scale {value!r}: expected 'auto' or one of {[f'{s:g}' for s in WORK_SCALES]}")
    return scale


def format_work_scale(scale: float) -> str:
    """``0.5`` -> ``"0.5"``, ``1.0`` -> ``"1"`` (file names, tables)."""
    return f"{scale:g}"


def _supports(model: DSTFuse, scale: float) -> bool:
    probe = copy.copy(model)  # shallow: set_work_scale only sets an attribute
    try:
        probe.set_work_scale(scale)
    except ConfigError:
        return False
    return True


def resolve_work_scale(work_scale: Any, model: DSTFuse) -> float:
    """The scale ``model`` will run at: ``"auto"`` -> :data:`AUTO_WORK_SCALE` if the model supports it,
    else 1; an explicit scale the model cannot run raises :class:`ConfigError` (the model says why)."""
    scale = parse_work_scale(work_scale)
    if scale is None:
        return AUTO_WORK_SCALE if _supports(model, AUTO_WORK_SCALE) else 1.0
    copy.copy(model).set_work_scale(scale)  # raises ConfigError for an unsupported scale
    return scale


def with_work_scale(model: DSTFuse, scale: float) -> DSTFuse:
    """``model`` itself when it already runs at ``scale``, else a copy that does (the caller's model
    is never changed)."""
    if float(getattr(model, "work_scale", 1.0)) == scale:
        return model
    return copy.deepcopy(model).set_work_scale(scale)
