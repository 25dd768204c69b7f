"""Colour handling: fuse the luma (Y) and keep the visible image's chroma (Cr, Cb).

Uses OpenCV's full-range YCrCb (BT.601); ``Y`` is the plane :func:`dstfuse_stream.imageio.to_gray`
returns, and a gray visible image round-trips exactly. A colour visible frame costs one split
(:func:`split_luma`, one ``cvtColor``) and one merge (:func:`merge_luma`) per frame.

IR frames become uint8 luma with :func:`ir_to_luma`, the one place that maps IR values to [0, 255].
8-bit IR is used as is. Deeper IR (uint16: radiometric thermal frames, 16-bit PNG/TIFF folders,
``gray16le`` video) goes through an :class:`IrGain`, set by ``ir_range`` (``--ir-range``):

* ``"auto"`` (default): automatic gain control, a *running* percentile stretch. Each frame's 1st and
  99th percentiles (:data:`IR_UINT16_PERCENTILES`) are measured, and the range mapped to 0..255
  follows them with an exponential moving average (:data:`IR_AGC_SMOOTHING`: the newest frame
  weighs 0.1) whose step per frame is at most :data:`IR_AGC_MAX_STEP` (2 %) of the current range
  width, so the grey of a static scene changes by at most ~10 levels from one frame to the next:
  a per-frame stretch pumps on video (a hot object entering darkens everything else at once, by
  200+ levels in ``tests/test_reliability.py``); this one ramps. A small change settles within
  ~30 frames (1 s at 30 fps); a range that grows 2x takes ~35 frames. The first frame uses its own
  percentiles.
* ``"frame"``: each frame's own percentiles (unrelated still images; what :func:`dstfuse_stream.fuse` uses).
* ``(lo, hi)`` / ``"LO,HI"``: a fixed linear map of raw values ``lo -> 0`` and ``hi -> 255``, clipped
  (a calibrated camera: the same temperature is always the same grey).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError, InputShapeError
from dstfuse_stream.imageio import check_image, to_gray

__all__ = [
    "split_luma",
    "merge_luma",
    "float_to_uint8",
    "ir_to_luma",
    "IrGain",
    "parse_ir_range",
    "IR_RANGE_MODES",
    "IR_UINT16_PERCENTILES",
    "IR_AGC_SMOOTHING",
    "IR_AGC_MAX_STEP",
]

#: Percentiles of a uint16 IR frame mapped to 0 and 255 by the automatic gain (``"auto"``, ``"frame"``).
IR_UINT16_PERCENTILES = (1.0, 99.0)
#: Weight of the newest frame's percentiles in the running range of ``ir_range="auto"``.
IR_AGC_SMOOTHING = 0.1
#: Largest move of each end of the running range per frame, as a fraction of the range width.
IR_AGC_MAX_STEP = 0.02
#: ``ir_range`` names; a ``(lo, hi)`` pair of numbers is the third form.
IR_RANGE_MODES = ("auto", "frame")


def parse_ir_range(value: str | Sequence[float]) -> str | tuple[float, float]:
    """``"auto"``, ``"frame"``, ``"LO,HI"`` or ``(lo, hi)`` -> the mode name or ``(lo, hi)`` floats.

    Raises :class:`ConfigError` unless ``lo < hi`` are finite numbers.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in IR_RANGE_MODES:
            return text
        parts = text.split(",")
    else:
        parts = list(value)
    expected = f"expected one of {list(IR_RANGE_MODES)} or LO,HI with LO < HI (raw IR values, e.g. 7000,9000)"
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"ir_range {value!r}: {expected}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"ir_range {value!r}: {expected}")
    return lo, hi


class IrGain:
    """Maps deeper-than-8-bit IR frames ``(H, W)`` to uint8: fixed range, per-frame or running stretch.

    Args:
        ir_range: ``"auto"``, ``"frame"`` or ``(lo, hi)`` (see the module docstring).
        smoothing: weight of the newest frame in the running range (``"auto"`` only), in (0, 1].
        max_step: largest move of ``lo`` or ``hi`` per frame, as a fraction of the range width (``"auto"``).

    One instance follows one camera: the running range is state, updated by every call in order
    (:meth:`reset` forgets it).
    """

    def __init__(self, ir_range: str | Sequence[float] = "auto", *, smoothing: float = IR_AGC_SMOOTHING,
                 max_step: float = IR_AGC_MAX_STEP) -> None:
        self.ir_range = parse_ir_range(ir_range)
        for name, value in (("smoothing", smoothing), ("max_step", max_step)):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name}: expected a number in (0, 1], got {value}")
        self.smoothing, self.max_step = float(smoothing), float(max_step)
        self._range: tuple[float, float] | None = None

    @property
    def range(self) -> tuple[float, float] | None:
        """The raw ``(lo, hi)`` the last frame was mapped with (``None`` before the first frame)."""
        return self.ir_range if isinstance(self.ir_range, tuple) else self._range

    def reset(self) -> None:
        """Forget the running range: the next frame starts it again from its own percentiles."""
        self._range = None

    def __call__(self, ir: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint16 -> uint8 (the current range updated first for ``"auto"``/``"frame"``)."""
        if isinstance(self.ir_range, tuple):
            lo, hi = self.ir_range
        else:
            p_lo, p_hi = (float(v) for v in np.percentile(ir, IR_UINT16_PERCENTILES))
            if self.ir_range == "auto" and self._range is not None:
                a, (lo, hi) = self.smoothing, self._range
                step = self.max_step * max(hi - lo, 1.0)
                p_lo = lo + min(max(a * (p_lo - lo), -step), step)
                p_hi = hi + min(max(a * (p_hi - hi), -step), step)
            lo, hi = self._range = (p_lo, p_hi)
        scale = 255.0 / max(hi - lo, 1.0)
        return np.clip((ir.astype(np.float32) - np.float32(lo)) * np.float32(scale) + 0.5, 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return f"IrGain({self.ir_range!r})"


def ir_to_luma(ir: np.ndarray, gain: IrGain | None = None) -> np.ndarray:
    """IR frame -> uint8 luma ``(H, W)``: the one rule for IR values.

    * uint8 gray: as is; uint8 BGR: its Y plane (:func:`~dstfuse_stream.imageio.to_gray`).
    * uint16 (raw radiometric sensors; gray, or BGR reduced to gray first): through ``gain``
      (:class:`IrGain`); without one, a stretch of this frame's own 1st..99th percentiles
      (``ir_range="frame"``).
    """
    ir = check_image(ir, "ir", dtypes=(np.uint8, np.uint16))
    if ir.dtype == np.uint8:
        return to_gray(ir)
    if ir.ndim == 3:
        ir = cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
    return (gain or IrGain("frame"))(ir)


def split_luma(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 BGR -> (Y uint8 ``(H, W)``, CrCb uint8 ``(H, W, 2)``): one ``cvtColor``."""
    bgr = check_image(bgr, "visible image", channels=(3,))
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    return ycrcb[..., 0], ycrcb[..., 1:]


def _ycrcb_of(crcb: np.ndarray, y_shape: tuple[int, ...]) -> np.ndarray | None:
    """The contiguous ``(H, W, 3)`` YCrCb array whose channels 1-2 ``crcb`` is a view of (what
    :func:`split_luma` returns), else ``None``."""
    base = crcb.base
    if not (isinstance(base, np.ndarray) and base.shape == (*y_shape, 3) and base.dtype == np.uint8
            and base.flags.c_contiguous and crcb.strides == base.strides):
        return None
    return base if crcb.ctypes.data == base.ctypes.data + base.strides[2] else None


def merge_luma(y: np.ndarray, crcb: np.ndarray) -> np.ndarray:
    """Fused Y (uint8 ``(H, W)``) + visible CrCb (uint8 ``(H, W, 2)``) -> BGR uint8 ``(H, W, 3)``.

    When ``crcb`` is the view :func:`split_luma` returned, its whole YCrCb array is copied and the Y
    plane replaced: 0.2 ms at 640x480 here, where gathering the strided two-channel view (``cv2.merge``)
    took 1.5-2.6 ms on the fusion thread (same result, bit for bit)."""
    if y.shape != crcb.shape[:2]:
        raise InputShapeError(f"fused Y {y.shape} and visible CrCb {crcb.shape[:2]}: expected the same (H, W)")
    base = _ycrcb_of(crcb, y.shape)
    if base is None:
        ycrcb = cv2.merge([y, crcb])
    else:
        ycrcb = base.copy()
        ycrcb[..., 0] = y
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR, dst=ycrcb)  # in place: a per-pixel conversion


def float_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding and clipping (a fixed mapping: no per-frame normalisation)."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
