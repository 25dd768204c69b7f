"""Colour handling: fuse the luma (Y) and keep the visible image's chroma (Cr, Cb).

Uses OpenCV's full-range YCrCb (BT.601); ``Y`` is the plane :func:`dstfuse_stream.imageio.to_gray`
returns, and a gray visible image round-trips exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from dstfuse_stream.errors import InputShapeError

__all__ = ["split_luma", "merge_luma", "float_to_uint8"]


def split_luma(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 BGR -> (Y uint8 ``(H, W)``, CrCb uint8 ``(H, W, 2)``)."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise InputShapeError(f"image: expected (H, W, 3) uint8 BGR, got {bgr.shape} {bgr.dtype}")
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    return ycrcb[..., 0], ycrcb[..., 1:]


def merge_luma(y: np.ndarray, crcb: np.ndarray) -> np.ndarray:
    """Fused Y (uint8 ``(H, W)``) + visible CrCb (uint8 ``(H, W, 2)``) -> BGR uint8 ``(H, W, 3)``."""
    if y.shape != crcb.shape[:2]:
        raise InputShapeError(f"fused Y {y.shape} and visible CrCb {crcb.shape[:2]}: expected the same (H, W)")
    return cv2.cvtColor(np.dstack([y, crcb]), cv2.COLOR_YCrCb2BGR)


def float_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding and clipping (a fixed mapping: no per-frame normalisation)."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
