"""Sizes and pixel grids: the one ``WxH`` parser, max-side fitting, resizing, IR -> visible alignment.

Sizes are ``(width, height)`` tuples named ``*_wh`` everywhere, and written ``WxH`` (``640x480``) on
every command line. The visible frame defines the output grid: the IR frame is warped onto it with a
homography (:func:`dstfuse_stream.registration.warp_to`), or resized to it when sizes differ (no
cropping; the aspect ratio follows the visible frame).
"""

from __future__ import annotations

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError

__all__ = ["parse_size_wh", "fit_max_side_wh", "processing_size_wh", "resize_to", "align_ir", "MAX_SIDE_PX"]

#: Largest side (pixels) a pair is fused at (8K UHD is 7680 wide); larger sizes only exhaust memory.
MAX_SIDE_PX = 8192


def parse_size_wh(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``: width first, as everywhere in this project.

    Raises :class:`ConfigError` for anything but two positive integers joined by ``x``.
    """
    parts = str(text).strip().lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"size {text!r}: expected WIDTHxHEIGHT such as 640x480") from None
    if width < 1 or height < 1:
        raise ConfigError(f"size {text!r}: expected a positive width and height")
    return width, height


def fit_max_side_wh(size_wh: tuple[int, int], max_side: int | None, *, multiple: int = 1) -> tuple[int, int]:
    """``size_wh`` shrunk (aspect kept) so its longer side is at most ``max_side``; never enlarged.

    Each side is rounded to a multiple of ``multiple`` (2 gives even sides, as yuv420p video needs)
    and is at least ``multiple``. ``max_side=None`` returns ``size_wh`` unchanged.
    """
    w, h = int(size_wh[0]), int(size_wh[1])
    if max_side is None or max(w, h) <= max_side:
        return w, h
    if max_side < multiple:
        raise ConfigError(f"max_size: expected >= {multiple}, got {max_side}")
    scale = max_side / max(w, h)
    return max(multiple, multiple * round(w * scale / multiple)), max(multiple, multiple * round(h * scale / multiple))


def processing_size_wh(
    size_wh: tuple[int, int],
    *,
    resize_wh: tuple[int, int] | None = None,
    max_size: int | None = None,
) -> tuple[int, int]:
    """The size a pair is fused at: ``resize_wh`` if given; else ``size_wh`` shrunk so the longer
    side is at most ``max_size`` (aspect kept, even sides); else ``size_wh``."""
    if resize_wh is not None:
        w, h = resize_wh
        if w < 1 or h < 1:
            raise ConfigError(f"resize: expected a positive WxH, got {w}x{h}")
        return int(w), int(h)
    return fit_max_side_wh(size_wh, max_size, multiple=2)


def resize_to(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize to ``size_wh`` (area interpolation when shrinking, bilinear when enlarging); no copy if equal."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size_wh):
        return image
    shrink = size_wh[0] * size_wh[1] < w * h
    return cv2.resize(image, tuple(size_wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _scale_matrix(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """Pixel-centre-exact map from a ``src_wh`` grid to a ``dst_wh`` grid (as ``cv2.resize`` samples)."""
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def align_ir(
    ir: np.ndarray,
    vis_size_wh: tuple[int, int],
    *,
    size_wh: tuple[int, int] | None = None,
    homography: np.ndarray | None = None,
) -> np.ndarray:
    """Bring ``ir`` onto the visible frame's grid, sampled at ``size_wh`` (default: the visible size).

    With ``homography`` (IR -> visible pixels) the IR frame is warped; otherwise it is resized. The
    resize to the processing size is folded into the same single interpolation.
    """
    vis_size_wh = (int(vis_size_wh[0]), int(vis_size_wh[1]))
    size_wh = vis_size_wh if size_wh is None else (int(size_wh[0]), int(size_wh[1]))
    if homography is None:
        return resize_to(ir, size_wh)
    from dstfuse_stream.registration import warp_to

    h = np.asarray(homography, dtype=np.float64)
    if size_wh != vis_size_wh:
        h = _scale_matrix(vis_size_wh, size_wh) @ h
    return warp_to(ir, h, size_wh)
