"""Reading what the evaluations score: 8-bit luma pairs, frame folders, video pairs, sub-sampling.

Everything is the luma (Y, BT.601) of the files, read with :func:`dstfuse_stream.imageio.read_gray`
and optionally shrunk (``INTER_AREA``) so the longest side is at most ``max_size``; images are
returned as uint8, the scale the usual MATLAB fusion toolboxes score on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.errors import ConfigError, SourceError, StreamMismatchError
from dstfuse_stream.imageio import IMAGE_SUFFIXES, read_gray, resize_max_side, to_gray

__all__ = [
    "select_evenly",
    "select_stride",
    "load_luma_u8",
    "load_pair",
    "find_image",
    "dataset_names",
    "blurred_frame_path",
    "read_video_pair",
]

#: sub-folder of a frame folder holding the real blurred visible frames (M3SVD ``visible_Blur``)
BLUR_DIR = "vi_blur"


def select_evenly(items: Sequence, limit: int | None) -> list:
    """``limit`` items evenly spaced over ``items`` (first and last included); all if ``None``."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ConfigError(f"limit: expected >= 1, got {limit}")
    if limit == 1:
        return [items[0]]
    idx = np.unique(np.rint(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[i] for i in idx]


def select_stride(items: Sequence, *, stride: int = 1, limit: int | None = None) -> list:
    """Every ``stride``-th item from the first, then the first ``limit`` of those (consecutive frames)."""
    if stride < 1:
        raise ConfigError(f"stride: expected >= 1, got {stride}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit: expected >= 1, got {limit}")
    picked = list(items)[::stride]
    return picked if limit is None else picked[:limit]


def load_luma_u8(
    path: str | os.PathLike[str], *, max_size: int | None = None, size_wh: tuple[int, int] | None = None
) -> np.ndarray:
    """Luma of an image file as uint8: resized to ``size_wh`` (``INTER_AREA``) or shrunk to ``max_size``."""
    img = read_gray(path)
    if size_wh is not None and (img.shape[1], img.shape[0]) != tuple(size_wh):
        img = cv2.resize(img, tuple(size_wh), interpolation=cv2.INTER_AREA)
    else:
        img = resize_max_side(img, max_size)
    return float_to_uint8(img)


def load_pair(ir_path: Path, vis_path: Path, max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A registered pair as two uint8 luma images of one size (shrunk to ``max_size``)."""
    ir, vis = read_gray(ir_path), read_gray(vis_path)
    if ir.shape != vis.shape:
        raise StreamMismatchError(
            f"pair {ir_path.name!r}: ir {ir.shape[::-1]} and vis {vis.shape[::-1]} (w, h) differ; "
            "expected registered images of one size"
        )
    return float_to_uint8(resize_max_side(ir, max_size)), float_to_uint8(resize_max_side(vis, max_size))


def find_image(folder: Path, name: str) -> Path | None:
    """``folder/name``, else the file in ``folder`` with the same stem and an image suffix (any case)."""
    exact = folder / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def dataset_names(dirs: Sequence[Path]) -> list[str]:
    """The folder name of each dataset root, made unique with ``_2``, ``_3``... suffixes."""
    names: list[str] = []
    for d in dirs:
        base = Path(d).resolve().name or "data"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def blurred_frame_path(root: Path, vis_path: Path) -> Path | None:
    """The real blurred counterpart ``root/vi_blur/<same stem>`` of a visible frame, if present."""
    blur_dir = Path(root) / BLUR_DIR
    return find_image(blur_dir, vis_path.name) if blur_dir.is_dir() else None


def read_video_pair(
    ir_path: str | os.PathLike[str],
    vis_path: str | os.PathLike[str],
    *,
    stride: int = 1,
    limit: int | None = None,
    max_size: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index, ir_u8, vis_u8)`` for frame ``i`` of both videos, every ``stride``-th, at most ``limit``.

    IR is resized to the visible frame's size (``INTER_AREA``) when they differ; both are then shrunk to
    ``max_size``. Stops at the end of the shorter video.
    """
    from dstfuse_stream.sources import VideoFileSource  # local: PyAV is only needed for videos

    if stride < 1:
        raise ConfigError(f"stride: expected >= 1, got {stride}")
    taken = 0
    with VideoFileSource(ir_path) as ir_src, VideoFileSource(vis_path) as vis_src:
        for ir_frame, vis_frame in zip(ir_src.frames(), vis_src.frames()):
            if ir_frame.index % stride:
                continue
            if limit is not None and taken >= limit:
                return
            vis = resize_max_side(to_gray(vis_frame.image), max_size)
            ir = to_gray(ir_frame.image)
            if ir.shape != vis.shape:
                ir = cv2.resize(ir, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_AREA)
            taken += 1
            yield ir_frame.index, ir, vis
    if taken == 0:
        raise SourceError(f"videos {str(ir_path)!r} / {str(vis_path)!r}: no frame pair read")
