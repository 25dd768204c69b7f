"""Synthetic IR/visible MP4 pairs (written with PyAV) for pipeline benchmarks and tests.

The two clips have the same size, frame count and rate; frame ``i`` of one matches frame ``i`` of
the other (a bright blob moves over a dark background in IR; a textured gradient with the same
blob, dimmed, in visible). Content is deterministic for a given ``seed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dstfuse_stream.errors import ConfigError

__all__ = ["ClipPair", "synthetic_frame_pair", "write_synthetic_pair"]


@dataclass(frozen=True)
class ClipPair:
    """Paths and geometry of a written IR/visible clip pair."""

    ir_path: Path
    vis_path: Path
    frames: int
    resolution_wh: tuple[int, int]
    fps: int


def synthetic_frame_pair(index: int, *, resolution_wh: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of the synthetic pair: ``(ir, vis)`` uint8 BGR ``(H, W, 3)``."""
    width, height = resolution_wh
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = (0.2 + 0.6 * ((index * 0.037) % 1.0)) * width
    cy = 0.5 * height + 0.25 * height * np.sin(index * 0.2)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * (0.08 * min(width, height) + 1.0) ** 2))
    rng = np.random.default_rng(seed)
    texture = rng.random((height, width), dtype=np.float32)
    ir = 0.15 + 0.8 * blob + 0.05 * texture
    gradient = (xx / max(width - 1, 1) + yy / max(height - 1, 1)) / 2.0
    vis_gray = 0.3 + 0.4 * gradient + 0.2 * np.roll(texture, index, axis=1) + 0.1 * blob
    ir_u8 = np.clip(ir * 255.0, 0, 255).astype(np.uint8)
    vis_u8 = np.clip(vis_gray * 255.0, 0, 255).astype(np.uint8)
    ir_bgr = np.dstack([ir_u8] * 3)
    vis_bgr = np.dstack([vis_u8, np.clip(vis_u8.astype(np.int16) + 20, 0, 255).astype(np.uint8), vis_u8])
    return ir_bgr, vis_bgr


def _write_clip(path: Path, frames: list[np.ndarray], *, fps: int, codec: str) -> None:
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps, 1))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_synthetic_pair(
    folder: str | os.PathLike[str],
    *,
    frames: int = 30,
    resolution_wh: tuple[int, int] = (320, 256),
    fps: int = 30,
    codec: str = "mpeg4",
    seed: int = 0,
) -> ClipPair:
    """Write ``folder/ir.mp4`` and ``folder/vi.mp4`` (``frames`` synchronized frames each).

    Width and height must be even (4:2:0 chroma). ``codec`` is any PyAV encoder name
    (``"mpeg4"``, the codec of the M3SVD clips, is the default).
    """
    width, height = resolution_wh
    if frames < 1:
        raise ConfigError(f"frames: expected >= 1, got {frames}")
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ConfigError(f"resolution_wh: expected even width and height >= 2, got {resolution_wh}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [synthetic_frame_pair(i, resolution_wh=resolution_wh, seed=seed) for i in range(frames)]
    clip = ClipPair(folder / "ir.mp4", folder / "vi.mp4", frames, (width, height), fps)
    _write_clip(clip.ir_path, [p[0] for p in pairs], fps=fps, codec=codec)
    _write_clip(clip.vis_path, [p[1] for p in pairs], fps=fps, codec=codec)
    return clip
