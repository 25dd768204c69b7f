"""Synthetic IR/visible streams whose frames carry their own index, for exact pipeline tests.

A frame index is drawn as a binary code: ``BITS`` blocks in a row, white (255) for a 1 bit, black
(0) for a 0, each block ``BLOCK`` pixels wide. Blocks this large survive H.264 at default quality,
so :func:`decode_index` reads the index back from an encoded output. IR frames carry their code in
the left half and are black on the right; visible frames the other way round; a ``max(ir, vis)``
fuser therefore shows both codes and a test can check which IR frame was paired with which
visible frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from dstfuse_stream.sources import Frame, FrameSource

BITS = 8
BLOCK = 10
#: width x height of a coded frame: two codes side by side
SIZE_WH = (2 * BITS * BLOCK, 32)


def code_image(index: int, *, half: str, size_wh: tuple[int, int] = SIZE_WH, colour: bool = False) -> np.ndarray:
    """A uint8 frame with ``index`` coded in its ``"left"`` or ``"right"`` half (the rest black)."""
    if not 0 <= index < 2**BITS:
        raise ValueError(f"index {index} does not fit in {BITS} bits")
    w, h = size_wh
    img = np.zeros((h, w), dtype=np.uint8)
    x0 = 0 if half == "left" else w // 2
    block = (w // 2) // BITS
    for bit in range(BITS):
        if index >> bit & 1:
            img[:, x0 + bit * block : x0 + (bit + 1) * block] = 255
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if colour else img


def decode_index(img: np.ndarray, *, half: str) -> int:
    """Read the index coded by :func:`code_image` (block centres, threshold 128)."""
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    x0 = 0 if half == "left" else w // 2
    block = (w // 2) // BITS
    value = 0
    for bit in range(BITS):
        cx = x0 + bit * block + block // 2
        patch = gray[h // 4 : 3 * h // 4, cx - block // 4 : cx + block // 4 + 1]
        if patch.mean() > 128:
            value |= 1 << bit
    return value


def ir_frame(index: int, **kwargs) -> np.ndarray:
    return code_image(index, half="left", **kwargs)


def vis_frame(index: int, **kwargs) -> np.ndarray:
    return code_image(index, half="right", colour=True, **kwargs)


def write_video(
    path: Path,
    images: list[np.ndarray],
    *,
    fps: float = 30.0,
    codec: str = "ffv1",
) -> Path:
    """Encode uint8 images (gray or BGR) with PyAV; ``ffv1`` in ``.mkv`` is lossless."""
    path = Path(path)
    import av  # local: the gpu-marked tests import this module on machines without PyAV

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(10000))
        h, w = images[0].shape[:2]
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if codec in ("libx264", "mpeg4") else "bgr0"
        for i, img in enumerate(images):
            fmt = "gray" if img.ndim == 2 else "bgr24"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_pair_videos(folder: Path, n_ir: int, n_vis: int | None = None, *, fps_ir: float = 30.0, fps_vis: float | None = None) -> tuple[Path, Path]:
    """``ir.mkv`` (``n_ir`` frames) and ``vi.mkv`` (``n_vis`` frames), lossless, coded indices."""
    n_vis = n_ir if n_vis is None else n_vis
    ir = write_video(folder / "ir.mkv", [ir_frame(i) for i in range(n_ir)], fps=fps_ir)
    vis = write_video(folder / "vi.mkv", [vis_frame(i) for i in range(n_vis)], fps=fps_vis or fps_ir)
    return ir, vis


def write_pair_folders(root: Path, n: int, *, ir_dir: str = "ir", vis_dir: str = "vi", ext: str = ".png") -> Path:
    """``root/ir_dir/NNNN.png`` and ``root/vis_dir/NNNN.png`` with coded indices."""
    (root / ir_dir).mkdir(parents=True, exist_ok=True)
    (root / vis_dir).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / ir_dir / f"{i:04d}{ext}"), ir_frame(i))
        cv2.imwrite(str(root / vis_dir / f"{i:04d}{ext}"), vis_frame(i))
    return root


def read_video(path: Path) -> list[np.ndarray]:
    """All frames of a video as gray uint8 arrays (PyAV)."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


class MaxFuser:
    """Fake backend: pixelwise ``max(ir, vis)`` of the uint8 luma planes; optionally slow, raising at
    a call, or running ``on_call(n)`` during call ``n`` (0-based) to act at an exact frame."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        fail_at: int | None = None,
        exc: type[BaseException] = RuntimeError,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.exc = exc
        self.on_call = on_call
        self.calls = 0
        self.dtypes: set[np.dtype] = set()

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise self.exc(f"fuser failed on call {self.calls}")
        if self.on_call is not None:
            self.on_call(self.calls)
        self.calls += 1
        self.dtypes.update({ir.dtype, vis.dtype})
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.maximum(ir, vis)


class ListSource(FrameSource):
    """In-memory source: given images and timestamps; optionally live, failing mid-way, or holding
    back every frame after the first until ``release`` is set (to make a test's timing exact)."""

    def __init__(
        self,
        images: list[np.ndarray],
        *,
        timestamps: list[float] | None = None,
        fps: float | None = 30.0,
        live: bool = False,
        pace_s: float = 0.0,
        fail_after: int | None = None,
        release: threading.Event | None = None,
        name: str = "list",
    ) -> None:
        super().__init__(name=name, fps=fps)
        self.is_live = live
        self.images = images
        self.timestamps = timestamps
        self.pace_s = pace_s
        self.fail_after = fail_after
        self.release = release
        self.closed = False
        #: set once every frame was yielded (before the reader queues the end of stream)
        self.exhausted = threading.Event()

    @property
    def frame_count(self) -> int | None:
        return None if self.is_live else len(self.images)

    def frames(self) -> Iterator[Frame]:
        from dstfuse_stream.errors import SourceError

        for i, img in enumerate(self.images):
            if i == 1 and self.release is not None:
                self.release.wait(timeout=30)
            if self.fail_after is not None and i == self.fail_after:
                raise SourceError(f"{self.name}: truncated after {i} frames")
            if self.pace_s:
                time.sleep(self.pace_s)
            t = self.timestamps[i] if self.timestamps is not None else i / (self.fps or 30.0)
            yield Frame(i, t, img, 0.0, time.monotonic())
        self.exhausted.set()

    def close(self) -> None:
        self.closed = True
