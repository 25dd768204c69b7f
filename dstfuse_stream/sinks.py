"""Outputs of the pipeline: fused video, image folder, preview video, per-frame timing log.

Sinks take plain uint8 images: ``write(image, *, index, timestamp_s, name)`` and an idempotent
``close()``. Which image a sink gets from a fused frame is its :attr:`Sink.content`: ``"fused"`` (the
result) or ``"preview"`` (``ir | vis | fused`` panels, drawn by the pipeline's writer). The writer
thread closes every sink on every exit path, so a video holds every frame written before an error or
Ctrl-C and plays.

Video (:class:`VideoSink`): H.264 (libx264, yuv420p) in fragmented MP4 via PyAV (VP9 in WebM).
yuv420p needs even sides: a frame with an odd width or height is padded by one pixel on the
right/bottom (edge replicated; no content is cropped, detections keep their coordinates). If libx264
is missing from the local FFmpeg, the next available codec of ``fallback_codecs`` (default MPEG-4
Part 2) is used and a warning is logged; :attr:`VideoSink.codec_name` says which was used.

Every write error (full disk: ENOSPC; a removed folder; a read-only file system) is a
:class:`~dstfuse_stream.errors.SinkError` naming the output and the OS reason, and what was written
before it is kept in a playable state where the format allows (see :class:`VideoSink`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from dstfuse_stream.errors import SinkError, os_error_reason
from dstfuse_stream.imageio import check_image

__all__ = [
    "CONTENTS",
    "Sink",
    "VideoSink",
    "ImageFolderSink",
    "TimingLog",
    "TIMING_COLUMNS",
    "pad_to_even",
    "write_json",
    "MAX_FPS",
]

logger = logging.getLogger(__name__)

#: Columns of the per-frame timing log (CSV header / JSONL keys), in order. Times in milliseconds.
#:
#: * ``index``: output frame number (0-based, in write order).
#: * ``ir_index``, ``vis_index``: source frame numbers of the pair.
#: * ``ir_timestamp_s``, ``vis_timestamp_s``: source timestamps of the pair (seconds).
#: * ``lag_frames``: frames the readers had already read beyond this pair when the fusion thread
#:   took it (larger of the two streams; bounded by the queue size in ``latest`` mode).
#: * ``read_ms``: decode/capture time of the slower of the two frames (readers run in parallel);
#:   ``read_ir_ms``, ``read_vis_ms``: each one.
#: * ``pair_ms``: fusion thread, waiting for the frames plus the pairing decision.
#: * ``preprocess_ms``: colour split, IR registration/resize, resize to processing size, to float.
#: * ``fuse_ms``: the fuser's ``fuse(ir, vis)`` call (includes host<->device copies).
#: * ``postprocess_ms``: float -> uint8, merge of fused Y with visible CrCb.
#: * ``encode_ms``: writer thread, all sinks' ``write`` for this frame.
#: * ``latency_ms``: end to end, from the later of the two frames being read to the end of its write.
TIMING_COLUMNS = (
    "index",
    "ir_index",
    "vis_index",
    "ir_timestamp_s",
    "vis_timestamp_s",
    "lag_frames",
    "read_ms",
    "read_ir_ms",
    "read_vis_ms",
    "pair_ms",
    "preprocess_ms",
    "fuse_ms",
    "postprocess_ms",
    "encode_ms",
    "latency_ms",
)
#: What a sink can be given of each fused frame (see :attr:`Sink.content`).
CONTENTS = ("fused", "preview")
#: Highest frame rate a video output accepts (higher rates made files no decoder could read).
MAX_FPS = 1000.0
#: Presentation-time unit of variable-frame-rate video (the MPEG 90 kHz clock).
_VFR_TIME_BASE = Fraction(1, 90000)


class Sink:
    """Base class: ``write(image, ...)`` and an idempotent ``close()``; usable as a context manager."""

    #: which image of a fused frame the writer hands this sink: ``"fused"`` or ``"preview"``
    content: str = "fused"

    def write(self, image: np.ndarray, *, index: int = 0, timestamp_s: float | None = None, name: str | None = None) -> None:
        """Write one uint8 ``(H, W)`` gray or ``(H, W, 3)`` BGR image (``index``: output frame
        number; ``timestamp_s``: presentation time; ``name``: source file stem, when known)."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release the output. Safe to call twice."""

    def describe(self) -> dict[str, object]:
        return {"kind": type(self).__name__}

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """Pad one edge-replicated row/column at the bottom/right where a side is odd."""
    h, w = image.shape[:2]
    pad_h, pad_w = h % 2, w % 2
    if not pad_h and not pad_w:
        return image
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)


def _check_content(content: str, label: str) -> str:
    if content not in CONTENTS:
        raise SinkError(f"{label}: content {content!r}: expected one of {list(CONTENTS)}")
    return content


def _prepare_parent(path: Path, label: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"{label}: cannot create folder {str(path.parent)!r} ({os_error_reason(exc)})") from exc


def _to_i420(image: np.ndarray) -> np.ndarray:
    """An even-sided BGR or gray uint8 image as one planar I420 (yuv420p, BT.601 limited range)
    array ``(3H/2, W)``: OpenCV's SIMD conversion, much faster than PyAV's swscale and closer to the
    source after decoding (chroma averaged over each 2x2 block); gray gets neutral chroma."""
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
    h, w = image.shape
    out = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
    out[:h] = cv2.convertScaleAbs(image, alpha=219.0 / 255.0, beta=16.0)  # full -> limited range, as for colour
    return out


class VideoSink(Sink):
    """Encode frames to a video file with PyAV (default H.264 in fragmented MP4, yuv420p).

    Args:
        path: output file (``.mp4``, ``.mkv``, ``.webm``, ``.avi``...; the container follows the suffix).
        fps: nominal frame rate (the rate of frames written without a timestamp; at most :data:`MAX_FPS`).
        content: ``"fused"`` (the fused output) or ``"preview"`` (``ir | vis | fused`` panels).
        codec: encoder, or ``"auto"`` (H.264; VP9 for ``.webm``); ``fallback_codecs`` are tried in
            order when it is missing from the local FFmpeg. A codec the container cannot hold is a
            :class:`SinkError` here, before anything is written (:func:`~dstfuse_stream.videofile.choose_codec`).
        crf, preset: libx264 quality and speed settings; ``preset=None``: ``"veryfast"`` for the fused
            output, ``"ultrafast"`` for a preview (three panels, 3x the pixels: a diagnostic view that
            should not take CPU time from the fusion; larger files).
        tune: libx264 tuning; ``"zerolatency"`` (default, for live use): every frame is encoded when it
            is written (no lookahead, no B-frames), so nothing is held back inside the encoder and
            closing the file has no burst of buffered frames to encode; files are larger at the same
            ``crf``. ``None``: x264's defaults (smaller files; about 10 frames held back).
        vfr: presentation times from the frames' ``timestamp_s`` (the source clock: the video lasts as
            long as its input, also when frames were dropped or the rates differ) instead of
            ``index / fps``. Containers without per-frame timestamps (AVI) are written at ``fps``.

    Nothing is written before the first frame. A write that fails (full disk, ENOSPC) is a
    :class:`SinkError` naming the file and the reason; an MP4 is then cut to its last complete
    fragment (:mod:`dstfuse_stream.videofile`), so it plays with every frame up to about
    :data:`~dstfuse_stream.videofile.FRAGMENT_S` before the failure.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float = 30.0,
        content: str = "fused",
        codec: str = "auto",
        fallback_codecs: tuple[str, ...] = ("mpeg4",),
        crf: int = 20,
        preset: str | None = None,
        tune: str | None = "zerolatency",
        vfr: bool = False,
    ) -> None:
        import av

        from dstfuse_stream.videofile import choose_codec, container_format, supports_vfr

        self._av = av
        self.path = Path(path)
        label = f"video {str(self.path)!r}"
        self._label = label
        self.content = _check_content(content, label)
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise SinkError(f"{label}: fps must be a number in (0, {MAX_FPS:g}], got {fps}")
        self.fps = float(fps)
        self.crf, self.tune = crf, tune
        self.preset = preset if preset is not None else ("ultrafast" if self.content == "preview" else "veryfast")
        if self.path.is_dir():
            raise SinkError(f"{label}: is a folder (use a file name such as out.mp4, or an image-folder output)")
        self.format_name = container_format(self.path)
        self.vfr = vfr and supports_vfr(self.format_name)
        self.codec_name = choose_codec(label, self.format_name, codec, fallback_codecs)
        _prepare_parent(self.path, label)
        if not os.access(self.path.parent, os.W_OK):
            raise SinkError(f"{label}: folder {str(self.path.parent)!r} is not writable")
        self._container: Any = None
        self._file: Any = None
        self._stream = None
        self._size_wh: tuple[int, int] | None = None
        self._last_pts = -1
        self._t0: float | None = None
        self._closed = False
        self.frames_written = 0
        self.padded = False

    def _open(self, width: int, height: int) -> None:
        av = self._av
        from dstfuse_stream.videofile import CheckedFile, muxer_options

        try:
            self._file = CheckedFile(self.path)
            self._container = av.open(self._file, mode="w", format=self.format_name, options=muxer_options(self.format_name))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise self._fail("cannot create", exc) from exc
        stream = self._container.add_stream(self.codec_name, rate=Fraction(self.fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if self.codec_name == "libx264":
            stream.options = {"crf": str(self.crf), "preset": self.preset, **({"tune": self.tune} if self.tune else {})}
        else:
            stream.bit_rate = max(1_000_000, int(width * height * self.fps * 0.25))
        if self.vfr:
            stream.codec_context.time_base = _VFR_TIME_BASE
        self._stream = stream
        self._size_wh = (width, height)

    def _pts(self, timestamp_s: float | None) -> int:
        if not self.vfr:
            return self.frames_written
        if timestamp_s is None or not math.isfinite(timestamp_s):
            step = round(1 / (self.fps * _VFR_TIME_BASE))
            return self._last_pts + step if self._last_pts >= 0 else 0
        if self._t0 is None:
            self._t0 = timestamp_s
        return max(self._last_pts + 1, round((timestamp_s - self._t0) / _VFR_TIME_BASE))

    def write(self, image: np.ndarray, *, index: int = 0, timestamp_s: float | None = None, name: str | None = None) -> None:
        """Encode one ``(H, W, 3)`` BGR or ``(H, W)`` gray uint8 image."""
        av = self._av
        if self._closed:
            raise SinkError(f"{self._label}: already closed")
        image = check_image(image, self._label, error=SinkError)
        padded = pad_to_even(image)
        h, w = padded.shape[:2]
        if self._stream is None:
            self.padded = padded.shape != image.shape
            if self.padded:
                logger.info("%s: %dx%d padded to %dx%d (yuv420p needs even sides)",
                            self._label, image.shape[1], image.shape[0], w, h)
            self._open(w, h)
        elif (w, h) != self._size_wh:
            raise SinkError(f"{self._label}: frame size changed from {self._size_wh} to {(w, h)}")
        vf = av.VideoFrame.from_ndarray(_to_i420(padded), format="yuv420p")
        vf.pts = self._last_pts = self._pts(timestamp_s)
        if self.vfr:
            vf.time_base = _VFR_TIME_BASE
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            if self._file.error is not None:
                raise self._file.error
        except (av.error.FFmpegError, OSError) as exc:
            raise self._fail(f"cannot write frame {self.frames_written}", self._file.error or exc) from exc
        self.frames_written += 1

    def _fail(self, what: str, exc: BaseException) -> SinkError:
        """After a failed write: close without muxing again, keep what plays; the error to raise."""
        from dstfuse_stream.videofile import truncate_to_fragments

        self._closed = True
        container, self._container = self._container, None
        for closable in (container, self._file):
            try:
                if closable is not None:
                    closable.close()
            except (self._av.error.FFmpegError, OSError):
                pass
        kept = ""
        if self.format_name in ("mp4", "mov") and self.path.exists():
            size = truncate_to_fragments(self.path)
            kept = ("; the file keeps the frames up to its last complete fragment" if size > 0
                    else "; no complete fragment was written, so no frame could be kept" if size == 0 else "")
        return SinkError(f"{self._label}: {what} ({os_error_reason(exc)}){kept}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        container, self._container = self._container, None
        if container is None:
            logger.info("%s: no frame was written (no file created)", self._label)
            return
        av = self._av
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
            container.close()
            self._file.close()
            if self._file.error is not None:
                raise self._file.error
        except (av.error.FFmpegError, OSError) as exc:
            self._container, self._closed = container, False
            raise self._fail("cannot finish the file", self._file.error or exc) from exc

    def describe(self) -> dict[str, object]:
        return {
            "kind": "video",
            "path": str(self.path),
            "content": self.content,
            "codec": self.codec_name,
            "preset": self.preset if self.codec_name == "libx264" else None,
            "tune": self.tune if self.codec_name == "libx264" else None,
            "container": self.format_name,
            "fps": self.fps,
            "vfr": self.vfr,
            "size_wh": list(self._size_wh) if self._size_wh else None,
            "padded_to_even": self.padded,
            "frames_written": self.frames_written,
        }


class ImageFolderSink(Sink):
    """Write every frame as an image into ``folder``.

    Files are named after the source image (image-folder sources, e.g. ``010001.png`` for LLVIP, so
    annotations still match) or ``{index:06d}`` otherwise; a name already written falls back to the
    index so nothing is overwritten within a run.
    """

    def __init__(self, folder: str | os.PathLike[str], *, ext: str = ".png", content: str = "fused") -> None:
        self.folder = Path(folder)
        self._label = f"image folder {str(self.folder)!r}"
        if not ext.startswith("."):
            ext = "." + ext
        self.ext = ext.lower()
        self.content = _check_content(content, self._label)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{self._label}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self._label}: cannot create ({exc})") from exc
        self._used: set[str] = set()
        self.frames_written = 0

    def write(self, image: np.ndarray, *, index: int = 0, timestamp_s: float | None = None, name: str | None = None) -> None:
        """Write ``image`` as ``<name><ext>`` (or ``<index:06d><ext>``)."""
        image = check_image(image, self._label, error=SinkError)
        stem = name if name and name not in self._used else f"{index:06d}"
        self._used.add(stem)
        path = self.folder / f"{stem}{self.ext}"
        try:
            ok, data = cv2.imencode(self.ext, image)
        except cv2.error as exc:
            raise SinkError(f"{self._label}: cannot encode {path.name} ({exc})") from exc
        if not ok:
            raise SinkError(f"{self._label}: cannot encode {path.name}")
        try:
            with open(path, "wb") as fh:
                fh.write(data.tobytes())
        except OSError as exc:
            path.unlink(missing_ok=True)  # no half-written image
            raise SinkError(f"{self._label}: cannot write {path.name} ({os_error_reason(exc)}); "
                            f"{self.frames_written} images written before it") from exc
        self.frames_written += 1

    def describe(self) -> dict[str, object]:
        return {"kind": "images", "path": str(self.folder), "content": self.content, "frames_written": self.frames_written}


class TimingLog:
    """Per-frame timing rows (:data:`TIMING_COLUMNS`) as CSV, or JSON Lines for ``.jsonl``/``.json``.

    Each row is flushed when written, so the log is complete up to the last written frame even
    if the process is killed. The file is created at the first row (no row, no file), so nothing
    is overwritten before a run writes a frame; write errors (full disk) are
    :class:`~dstfuse_stream.errors.SinkError` naming the file and the OS reason.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._label = f"timing log {str(self.path)!r}"
        self.format = "jsonl" if self.path.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"
        if self.path.is_dir():
            raise SinkError(f"{self._label}: is a folder")
        _prepare_parent(self.path, self._label)
        self._fh: IO[str] | None = None
        self._csv: Any = None
        self._closed = self._failed = False
        self.rows = 0

    def _open(self) -> IO[str]:
        if self._closed:
            raise SinkError(f"{self._label}: already closed")
        if self._fh is None:
            try:
                self._fh = open(self.path, "w", newline="")
                if self.format == "csv":
                    self._csv = csv.DictWriter(self._fh, fieldnames=TIMING_COLUMNS, extrasaction="ignore")
                    self._csv.writeheader()
            except OSError as exc:
                raise SinkError(f"{self._label}: cannot create ({os_error_reason(exc)})") from exc
        return self._fh

    def write(self, row: dict[str, Any]) -> None:
        fh = self._open()
        clean = {k: _round(row.get(k)) for k in TIMING_COLUMNS}
        try:
            if self._csv is not None:
                self._csv.writerow(clean)
            else:
                fh.write(json.dumps(clean) + "\n")
            fh.flush()
        except OSError as exc:
            self._failed = True
            raise SinkError(f"{self._label}: cannot write row {self.rows} ({os_error_reason(exc)})") from exc
        self.rows += 1

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._fh is not None:
                self._fh.close()
        except OSError as exc:
            if not self._failed:  # after a failed write the error was reported already
                raise SinkError(f"{self._label}: cannot close ({os_error_reason(exc)})") from exc
        finally:
            self._closed, self._fh = True, None


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN written as ``null``), atomically: a temporary file renamed
    over ``path``, so a full disk leaves the old file or none, never half a file."""
    path = Path(path)
    _prepare_parent(path, f"summary {str(path)!r}")

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer)):
            return clean(x.item())
        if isinstance(x, Path):
            return str(x)
        return x

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(clean(data), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SinkError(f"summary {str(path)!r}: cannot write ({os_error_reason(exc)})") from exc
    return path
