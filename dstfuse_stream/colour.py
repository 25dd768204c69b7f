"""Colour handling: fuse the luma (Y) and keep the visible image's chroma (Cr, Cb).

Uses OpenCV's full-range YCrCb (BT.601); ``Y`` is the plane :func:`dstfuse_stream.imageio.to_gray`
returns, and a gray visible image round-trips exactly. A colour visible frame costs one split
(:func:`split_luma`, one ``cvtColor``) and one merge (:func:`merge_luma`) per frame.

IR frames become uint8 luma with :func:`ir_to_luma`, the one place that maps IR values to [0, 255].
"""

from __future__ import annotations

import cv2
import numpy as np

from dstfuse_stream.errors import InputShapeError
from dstfuse_stream.imageio import check_image, to_gray

__all__ = ["split_luma", "merge_luma", "float_to_uint8", "ir_to_luma", "IR_UINT16_PERCENTILES"]

#: Percentiles of a uint16 IR frame mapped to 0 and 255 by :func:`ir_to_luma`.
IR_UINT16_PERCENTILES = (1.0, 99.0)


def ir_to_luma(ir: np.ndarray) -> np.ndarray:
    """IR frame -> uint8 luma ``(H, W)``: the one rule for IR values.

    * uint8 gray: as is; uint8 BGR: its Y plane (:func:`~dstfuse_stream.imageio.to_gray`).
    * uint16 (raw radiometric sensors; gray, or BGR reduced to gray first): a linear stretch of the
      frame's own 1st..99th percentiles (:data:`IR_UINT16_PERCENTILES`) to 0..255, clipped. This is
      per frame, so a video's brightness can pump when hot objects enter or leave; a fixed range is
      the better choice for video and will be a setting of its own.
    """
    ir = check_image(ir, "ir", dtypes=(np.uint8, np.uint16))
    if ir.dtype == np.uint8:
        return to_gray(ir)
    if ir.ndim == 3:
        ir = cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
    lo, hi = np.percentile(ir, IR_UINT16_PERCENTILES)
    scale = 255.0 / max(float(hi) - float(lo), 1.0)
    return np.clip((ir.astype(np.float32) - np.float32(lo)) * np.float32(scale) + 0.5, 0, 255).astype(np.uint8)


def split_luma(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 BGR -> (Y uint8 ``(H, W)``, CrCb uint8 ``(H, W, 2)``): one ``cvtColor``."""
    bgr = check_image(bgr, "visible image", channels=(3,))
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    return ycrcb[..., 0], ycrcb[..., 1:]


def merge_luma(y: np.ndarray, crcb: np.ndarray) -> np.ndarray:
    """Fused Y (uint8 ``(H, W)``) + visible CrCb (uint8 ``(H, W, 2)``) -> BGR uint8 ``(H, W, 3)``."""
    if y.shape != crcb.shape[:2]:
        raise InputShapeError(f"fused Y {y.shape} and visible CrCb {crcb.shape[:2]}: expected the same (H, W)")
    return cv2.cvtColor(cv2.merge([y, crcb]), cv2.COLOR_YCrCb2BGR)


def float_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding and clipping (a fixed mapping: no per-frame normalisation)."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
