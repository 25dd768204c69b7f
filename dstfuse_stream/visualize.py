"""Side-by-side panels ``ir | vis | fused`` for previews and reports."""

from __future__ import annotations

import cv2
import numpy as np

from dstfuse_stream.colour import float_to_uint8

__all__ = ["side_by_side"]


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = float_to_uint8(img)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()


def side_by_side(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, labels: bool = True) -> np.ndarray:
    """Concatenate three images (gray or BGR, uint8 or [0, 1] float) of one size into one BGR panel."""
    panels = [_as_bgr(x) for x in (ir, vis, fused)]
    if labels:
        for panel, text in zip(panels, ("IR", "visible", "fused")):
            scale = max(0.4, panel.shape[0] / 600)
            thick = max(1, round(scale * 2))
            org = (8, int(24 * scale) + 4)
            cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return np.hstack(panels)
