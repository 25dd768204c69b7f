"""Frame sources: cameras, video files, image folders and network streams.

Every source yields :class:`Frame` objects (``index``, ``timestamp_s``, ``image``) from
:meth:`FrameSource.frames` and says whether it is live (:attr:`FrameSource.is_live`)::

    with open_source("ir.mp4", role="ir") as source:
        for frame in source.frames():
            ...

Spec strings understood by :func:`open_source`:

* ``cam0``, ``cam:0``, ``0``, ``/dev/video0``: a camera (OpenCV ``VideoCapture``). Live. Timestamps
  are ``time.monotonic()`` at capture, so two cameras of one machine share a clock.
* ``rtsp://``, ``rtsp(s)://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://``: a
  network stream decoded with PyAV (open/read timeouts, RTSP over TCP). Live; monotonic timestamps
  as for cameras (the two streams' pts do not share a clock).
* a file: any video FFmpeg can read, decoded with PyAV; ``timestamp_s`` is ``pts * time_base``
  relative to the stream's first frame (``index / fps`` when a frame has no pts). A file that ends
  before the frame count its header declares raises ``decoding failed at frame N of M``.
* a folder: an image sequence in name order, ``timestamp_s = index / fps``. The folder may hold the
  images directly, or be a pairs root (``ir/`` + ``vi/``, or LLVIP's ``infrared/{train,test}`` +
  ``visible/{train,test}``): then the ``role`` picks the side.

:func:`open_pairs` opens a pairs root as two image-list sources matched by file name
(:func:`dstfuse_stream.imageio.list_pairs`): the recorded-sequence mode. :func:`open_source_pair`
opens either kind of pair from what the CLI and :func:`dstfuse_stream.stream` accept.

IR sources decode straight to gray (``gray=True``, the default for ``role="ir"``): only the IR luma
is fused, so no BGR image is made for it (video: the decoder's gray output; image files:
``IMREAD_GRAYSCALE``; cameras deliver BGR and are converted once). Gray sources keep a deeper bit
depth: 16-bit PNG/TIFF images and video with more than 8 bits per sample (``gray16le`` thermal
streams) give uint16 frames, mapped to 8 bits later by the IR gain
(:class:`dstfuse_stream.colour.IrGain`).

Live sources (cameras, network streams) have no natural end: one that stops delivering after it
opened raises :class:`~dstfuse_stream.errors.SourceLostError` (a network stream that reached the
duration its container declares ended normally), and :meth:`FrameSource.reopen` connects again
(the pipeline's reader does so ``reconnect`` times, with backoff).
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError, SourceError, SourceLostError
from dstfuse_stream.imageio import IMAGE_SUFFIXES, check_image, list_images, list_pairs, read_bgr, read_luma, to_gray

__all__ = [
    "Frame",
    "FrameSource",
    "CameraSource",
    "VideoFileSource",
    "StreamSource",
    "ImageListSource",
    "open_source",
    "open_pairs",
    "open_source_pair",
    "parse_camera_spec",
    "is_url",
    "DEFAULT_FOLDER_FPS",
]

logger = logging.getLogger(__name__)

#: Frame rate given to image folders when none is set (``--fps``).
DEFAULT_FOLDER_FPS = 30.0
_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
_CAMERA_RE = re.compile(r"^(?:cam:?)?(\d+)$")
_ROLE_DIRS = {"ir": ("ir", "infrared", "IR", "Inf"), "vis": ("vi", "vis", "visible", "VI", "Vis")}


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in its stream (frames dropped later keep their index).
        timestamp_s: presentation time in seconds (see the module docstring per source kind).
        image: ``(H, W, 3)`` uint8 BGR, or ``(H, W)`` gray: uint8, or uint16 from a deeper gray source.
        read_ms: time spent reading/decoding this frame.
        captured_s: ``time.monotonic()`` when the frame was available (start of its end-to-end latency).
        name: file stem for image-folder sources (used to name output images), else ``None``.
        lag_frames: filled in by the pipeline: frames its reader had already read beyond this one
            when the fusion thread took it.
    """

    index: int
    timestamp_s: float
    image: np.ndarray
    read_ms: float = 0.0
    captured_s: float = 0.0
    name: str | None = None
    lag_frames: int = 0

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


#: dtypes a source may deliver: uint16 only as ``(H, W)`` gray (16-bit thermal frames)
_SOURCE_DTYPES = (np.uint8, np.uint16)
#: a file may decode this many frames fewer than its header declares (edit lists, a dropped last frame)
_FRAME_COUNT_SLACK = 2
_MOOV_HINT = (": an MP4 whose index (moov) is at the end of the file needs a server that lets FFmpeg seek "
              "(HTTP range requests); serve it remuxed with 'ffmpeg -i IN -c copy -movflags +faststart OUT', "
              "or from a server that supports range requests")


def _check_image(image: np.ndarray | None, where: str, *, gray: bool = False) -> np.ndarray:
    image = check_image(image, where, dtypes=_SOURCE_DTYPES, error=SourceError)
    if image.ndim == 3 and image.dtype != np.uint8:
        raise SourceError(f"{where}: expected 8-bit colour or 8/16-bit gray frames, got {image.dtype} with 3 channels")
    return to_gray(image) if gray else image


class FrameSource(ABC):
    """A stream of :class:`Frame`. Use as a context manager or call :meth:`close`."""

    #: True for cameras and network streams (frames keep coming; keep only the latest).
    is_live: bool = False

    def __init__(self, *, name: str, fps: float | None, gray: bool = False) -> None:
        self.name = name
        self.fps = fps
        #: frames are delivered as ``(H, W)`` luma (IR) instead of BGR
        self.gray = gray

    @property
    def frame_count(self) -> int | None:
        """Number of frames when known in advance (files, folders), else ``None``."""
        return None

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames in order until the stream ends. Raises :class:`SourceError` on read errors."""

    def input_paths(self) -> list[Path]:
        """Local files this source reads (checked against the outputs, so no run overwrites its input)."""
        return []

    def set_decoder_threads(self, threads: int | None) -> None:
        """How many threads the source's own decoder may use (``None``: the decoder's default). The
        pipeline asks for 1 when it reads a recorded source in the background, beside a CPU fusion that
        keeps every core busy; sources without decoder threads of their own ignore it."""

    def reopen(self) -> None:
        """Connect again after :class:`~dstfuse_stream.errors.SourceLostError` (live sources); the
        next :meth:`frames` call starts from the new connection. Raises :class:`SourceError`."""
        raise SourceError(f"{self.name}: cannot be reopened")

    def describe(self) -> dict[str, object]:
        """JSON-able description (written into the run summary)."""
        return {
            "kind": type(self).__name__,
            "name": self.name,
            "live": self.is_live,
            "fps": self.fps,
            "frame_count": self.frame_count,
            "gray": self.gray,
        }

    def close(self) -> None:
        """Release the device/file. Safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------------------------------------
# cameras (OpenCV)


def parse_camera_spec(spec: str) -> int | str | None:
    """``cam0``/``cam:0``/``0`` -> ``0``; ``/dev/videoN`` -> the path; anything else -> ``None``."""
    match = _CAMERA_RE.match(spec.strip())
    if match:
        return int(match.group(1))
    if spec.startswith("/dev/video"):
        return spec
    return None


class CameraSource(FrameSource):
    """A local camera through OpenCV ``VideoCapture`` (live; monotonic timestamps).

    Args:
        device: camera index or ``/dev/videoN`` path.
        resolution_wh: requested capture size (the driver may pick another).
        fps: requested frame rate (the driver may ignore it).
        read_timeout_s: passed to backends that support ``CAP_PROP_READ_TIMEOUT_MSEC``.
        gray: deliver ``(H, W)`` luma frames.
    """

    is_live = True

    def __init__(
        self,
        device: int | str,
        *,
        resolution_wh: tuple[int, int] | None = None,
        fps: float | None = None,
        read_timeout_s: float = 5.0,
        gray: bool = False,
    ) -> None:
        self._device, self._settings = device, (resolution_wh, fps, read_timeout_s)
        label = f"camera {device}" if isinstance(device, int) else f"camera {device!r}"
        super().__init__(name=label, fps=fps, gray=gray)
        self._cap: cv2.VideoCapture | None = None
        self._open()
        reported = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0
        self.fps = float(reported) if reported and reported > 0 else fps

    def _open(self) -> None:
        device, label = self._device, self.name
        resolution_wh, fps, read_timeout_s = self._settings
        api = cv2.CAP_V4L2 if isinstance(device, str) and device.startswith("/dev/video") else cv2.CAP_ANY
        if isinstance(device, str) and not os.path.exists(device):
            raise SourceError(f"{label}: device not found")
        cap = cv2.VideoCapture(device, api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{label}: cannot open (missing, busy, or no permission)")
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_s * 1000.0)
        if resolution_wh is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution_wh[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution_wh[1])
        if fps is not None:
            cap.set(cv2.CAP_PROP_FPS, fps)
        # A busy camera often opens but delivers nothing: read one frame now to fail early.
        t0 = time.perf_counter()
        ok, image = cap.read()
        if not ok or image is None or image.size == 0:
            cap.release()
            raise SourceError(f"{label}: opened but delivered no frame (busy or not a capture device?)")
        self._cap = cap
        self._first = (image, (time.perf_counter() - t0) * 1000.0, time.monotonic())

    def input_paths(self) -> list[Path]:
        return [Path(self._device)] if isinstance(self._device, str) else []

    def reopen(self) -> None:
        self.close()
        self._open()

    def frames(self) -> Iterator[Frame]:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name}: source is closed")
        index = 0
        if self._first is not None:
            image, read_ms, captured = self._first
            self._first = None
            yield Frame(index, captured, _check_image(image, self.name, gray=self.gray), read_ms, captured)
            index += 1
        while True:
            t0 = time.perf_counter()
            ok, image = cap.read()
            if not ok:
                raise SourceLostError(f"{self.name}: lost after {index} frames (stopped delivering: unplugged or busy?)")
            captured = time.monotonic()
            image = _check_image(image, self.name, gray=self.gray)
            yield Frame(index, captured, image, (time.perf_counter() - t0) * 1000.0, captured)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# ---------------------------------------------------------------------------------------------
# files and network streams (PyAV)


def is_url(spec: str) -> bool:
    """True for ``scheme://...`` specs with a network scheme (rtsp, http, ...)."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in _URL_SCHEMES


def _set_threads(stream: object, threads: int | None) -> None:
    if threads is None:
        stream.thread_type = "AUTO"  # type: ignore[attr-defined]
    else:
        stream.thread_type = "SLICE"  # type: ignore[attr-defined]
        stream.codec_context.thread_count = int(threads)  # type: ignore[attr-defined]


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV (any format FFmpeg reads). Timestamps from ``pts * time_base``.

    ``gray=True`` decodes to luma directly (FFmpeg's ``gray`` output: the Y plane, range-expanded).
    """

    is_live = False

    def __init__(self, path: str | os.PathLike[str], *, gray: bool = False, **av_open_kwargs: object) -> None:
        import av  # local: only file/stream sources need it

        self._av = av
        self._spec = str(path)
        self._av_open_kwargs = av_open_kwargs
        label = self._label()
        if not is_url(self._spec):
            p = Path(path)
            if not p.exists():
                raise SourceError(f"{label}: file not found")
            if not p.is_file():
                raise SourceError(f"{label}: not a regular file")
            if p.stat().st_size == 0:
                raise SourceError(f"{label}: empty file")
        self._container = None
        self._decoder_threads: int | None = None
        self._open(label)
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        super().__init__(name=label, fps=float(rate) if rate else None, gray=gray)
        self._frame_count = self._declared_frames = int(stream.frames) if stream.frames else None
        #: the video's length as its container declares it, in seconds (``None``: unknown, e.g. live)
        self.duration_s = self._declared_duration_s()

    def _open(self, label: str) -> None:
        av = self._av
        try:
            container = av.open(self._spec, mode="r", **self._av_open_kwargs)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{label}: cannot open ({_av_message(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{label}: no video stream")
        stream = container.streams.video[0]
        _set_threads(stream, self._decoder_threads)
        self._mp4_over_network = is_url(self._spec) and "mp4" in container.format.name
        if not stream.codec_context.width or not stream.codec_context.height:
            container.close()
            if self._mp4_over_network:
                raise SourceError(f"{label}: cannot read the frame size{_MOOV_HINT}")
            raise SourceError(f"{label}: video stream has zero frame size")
        self._container, self._stream = container, stream

    def set_decoder_threads(self, threads: int | None) -> None:
        """FFmpeg's decoding threads (``None``: frame and slice threads, one per core); applies from the
        next frame decoded by a new decoder, i.e. before the first frame or after a reopen."""
        self._decoder_threads = threads
        if self._container is not None and not self._stream.codec_context.is_open:
            _set_threads(self._stream, threads)

    def _declared_duration_s(self) -> float | None:
        stream, container = self._stream, self._container
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration and container.duration > 0 and len(container.streams) == 1:
            return container.duration / 1_000_000  # other streams (audio) may outlast the video
        return None

    def _short_of_declared(self, frames: int, last_s: float | None) -> str | None | bool:
        """``False`` when the stream reached the length its container declares, ``None`` when none is
        declared, else how far it got (``"frame 21 of 560"``)."""
        if self._declared_frames is not None:
            return False if frames >= self._declared_frames - _FRAME_COUNT_SLACK else f"frame {frames} of {self._declared_frames}"
        if self.duration_s is None or last_s is None:
            return None
        interval = 1.0 / self.fps if self.fps else 0.1
        return False if last_s + 1.5 * interval >= self.duration_s else f"frame {frames}, {last_s:.2f} s of {self.duration_s:.2f} s"

    def _decode_format(self) -> str:
        """``gray16le`` for a gray source with more than 8 bits per sample (thermal Y16), else 8-bit."""
        if not self.gray:
            return "bgr24"
        fmt = self._stream.codec_context.format
        deep = fmt is not None and any(c.bits > 8 for c in fmt.components)
        return "gray16le" if deep else "gray"

    def input_paths(self) -> list[Path]:
        return [] if is_url(self._spec) else [Path(self._spec)]

    def _label(self) -> str:
        return f"video {self._spec!r}"

    @property
    def frame_count(self) -> int | None:
        return self._frame_count

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self._stream.codec_context.width), int(self._stream.codec_context.height)

    def _timestamp(self, frame: object, index: int, start: list[float | None]) -> float:
        pts, time_base = frame.pts, frame.time_base  # type: ignore[attr-defined]
        if pts is None or time_base is None:
            return index / self.fps if self.fps else float(index)
        t = float(pts * time_base)
        if start[0] is None:
            start[0] = t
        return t - start[0]

    def frames(self) -> Iterator[Frame]:
        av = self._av
        container = self._container
        if container is None:
            raise SourceError(f"{self.name}: source is closed")
        start: list[float | None] = [None]
        index, fmt = 0, self._decode_format()
        decoder = container.decode(self._stream)
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                self._failed(index, _av_message(exc), exc)
            if not frame.width or not frame.height:
                raise SourceError(f"{self.name}: frame {index} has zero size")
            image = frame.to_ndarray(format=fmt)
            captured = time.monotonic()
            media_s = self._timestamp(frame, index, start)
            timestamp = captured if self.is_live else media_s
            yield Frame(index, timestamp, _check_image(image, self.name), (time.perf_counter() - t0) * 1000.0, captured)
            index += 1
        self._ended(index, media_s if index else None)

    def _failed(self, index: int, reason: str, exc: BaseException) -> None:
        """A decode error at frame ``index``: the file is damaged there."""
        raise SourceError(f"{self.name}: decoding failed at frame {index} ({reason})") from exc

    def _ended(self, frames: int, last_s: float | None) -> None:
        """The demuxer found no more frames: fine, unless the file declares more (frames or duration)."""
        if frames == 0:
            raise SourceError(f"{self.name}: no decodable frame (truncated or corrupt file?)")
        short = self._short_of_declared(frames, last_s)
        if short:
            raise SourceError(f"{self.name}: decoding failed at {short} (the file ends early: truncated or corrupt?)")

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "size_wh": list(self.size_wh)}

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class StreamSource(VideoFileSource):
    """A network stream (RTSP/RTMP/HTTP/UDP...) decoded with PyAV; live, monotonic timestamps.

    Args:
        url: stream address.
        open_timeout_s: give up connecting after this long.
        read_timeout_s: give up when no data arrives for this long (the source then raises).
    """

    is_live = True

    def __init__(self, url: str, *, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0, gray: bool = False) -> None:
        options = {"rtsp_transport": "tcp"} if url.lower().startswith("rtsp") else {}
        super().__init__(url, gray=gray, timeout=(open_timeout_s, read_timeout_s), options=options)
        self._frame_count = None  # live: no length known in advance

    def _label(self) -> str:
        return f"stream {self._spec!r}"

    def reopen(self) -> None:
        self.close()
        self._open(self.name)

    def _failed(self, index: int, reason: str, exc: BaseException) -> None:
        if index == 0 and self._mp4_over_network:
            raise SourceError(f"{self.name}: cannot read the first frame ({reason}){_MOOV_HINT}") from exc
        raise SourceLostError(f"{self.name}: lost after {index} frames ({reason})") from exc

    def _ended(self, frames: int, last_s: float | None) -> None:
        """A live stream that ends is lost, unless it reached the length its container declares
        (a recording served over HTTP)."""
        if self._short_of_declared(frames, last_s) is not False:
            raise SourceLostError(f"{self.name}: lost after {frames} frames (the stream ended)")


def _av_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# image folders


class ImageListSource(FrameSource):
    """Images read one by one from a list of paths; ``timestamp_s = index / fps``.

    Unreadable files raise :class:`SourceError` naming the file. ``gray=True`` reads luma directly.
    """

    is_live = False

    def __init__(self, paths: Sequence[Path], *, fps: float = DEFAULT_FOLDER_FPS, name: str, gray: bool = False) -> None:
        if fps <= 0:
            raise ConfigError(f"fps: expected > 0, got {fps}")
        if not paths:
            raise SourceError(f"{name}: no images (expected files ending in {sorted(IMAGE_SUFFIXES)})")
        super().__init__(name=name, fps=float(fps), gray=gray)
        self.paths = list(paths)

    @property
    def frame_count(self) -> int | None:
        return len(self.paths)

    def input_paths(self) -> list[Path]:
        return list(self.paths)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            t0 = time.perf_counter()
            image = _check_image(read_luma(path, any_depth=True) if self.gray else read_bgr(path), f"image {str(path)!r}")
            read_ms = (time.perf_counter() - t0) * 1000.0
            yield Frame(index, index / self.fps, image, read_ms, time.monotonic(), name=path.stem)


def _folder_images(folder: Path, role: str) -> list[Path]:
    """Images of ``folder`` itself, or of the ``role`` side when it is a pairs root / has splits."""
    images = list_images(folder)
    if images:
        return images
    for sub in _ROLE_DIRS[role]:
        side = folder / sub
        if side.is_dir():
            return _folder_images(side, role)
    splits = [folder / s for s in ("train", "test") if (folder / s).is_dir()]
    if splits:
        return [p for split in splits for p in list_images(split)]
    others = [p.name for p in folder.iterdir() if p.is_file()][:3]
    hint = f"; found other files such as {others}" if others else " (empty folder)"
    raise SourceError(
        f"folder {str(folder)!r}: no images (expected files ending in {sorted(IMAGE_SUFFIXES)}, "
        f"or an {role} sub-folder){hint}"
    )


# ---------------------------------------------------------------------------------------------
# factories


def open_source(
    spec: str | os.PathLike[str],
    *,
    role: str = "ir",
    fps: float | None = None,
    resolution_wh: tuple[int, int] | None = None,
    timeout_s: float = 10.0,
    gray: bool | None = None,
) -> FrameSource:
    """Open a camera, URL, video file or image folder from its spec (see the module docstring).

    Args:
        spec: what to open.
        role: ``"ir"`` or ``"vis"``: which side of a pairs-root folder to read.
        gray: deliver luma frames; default: ``True`` for ``role="ir"``.
        fps: frame rate of image folders (default :data:`DEFAULT_FOLDER_FPS`); requested rate for cameras.
        resolution_wh: requested camera capture size.
        timeout_s: open/read timeout of network streams and cameras.
    """
    if role not in _ROLE_DIRS:
        raise ConfigError(f"role {role!r}: expected 'ir' or 'vis'")
    gray = role == "ir" if gray is None else gray
    text = os.fspath(spec)
    if not text.strip():
        raise SourceError(f"{role} source: empty spec")
    camera = parse_camera_spec(text)
    if isinstance(camera, str) or (camera is not None and not Path(text).exists()):
        return CameraSource(camera, resolution_wh=resolution_wh, fps=fps, read_timeout_s=timeout_s, gray=gray)
    if is_url(text):
        return StreamSource(text, open_timeout_s=timeout_s, read_timeout_s=timeout_s, gray=gray)
    path = Path(text)
    if path.is_dir():
        images = _folder_images(path, role)
        return ImageListSource(images, fps=fps or DEFAULT_FOLDER_FPS, name=f"folder {text!r}", gray=gray)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageListSource([path], fps=fps or DEFAULT_FOLDER_FPS, name=f"image {text!r}", gray=gray)
    return VideoFileSource(path, gray=gray)


def open_pairs(
    root: str | os.PathLike[str],
    *,
    split: str | None = None,
    fps: float | None = None,
) -> tuple[ImageListSource, ImageListSource]:
    """Open a pairs root (``ir/`` + ``vi/`` or LLVIP layout) as ``(ir_source, vis_source)``.

    Only names present on both sides are used, in sorted order, so frame ``i`` of one source is
    the partner of frame ``i`` of the other. IR is read as gray.
    """
    pairs = list_pairs(root, split=split)
    rate = fps or DEFAULT_FOLDER_FPS
    ir = ImageListSource([p[0] for p in pairs], fps=rate, name=f"pairs {os.fspath(root)!r} (ir)", gray=True)
    vis = ImageListSource([p[1] for p in pairs], fps=rate, name=f"pairs {os.fspath(root)!r} (vis)")
    logger.info("pairs %s: %d pairs", os.fspath(root), len(pairs))
    return ir, vis


def open_source_pair(
    ir: str | os.PathLike[str] | FrameSource | None = None,
    vis: str | os.PathLike[str] | FrameSource | None = None,
    *,
    pairs: str | os.PathLike[str] | None = None,
    split: str | None = None,
    fps: float | None = None,
    timeout_s: float = 10.0,
) -> tuple[FrameSource, FrameSource]:
    """``(ir_source, vis_source)`` from two specs (or ready sources), or from a pairs root.

    Exactly one of ``pairs`` or both ``ir`` and ``vis`` must be given (:class:`ConfigError`). If the
    visible source fails to open, the IR source is closed again.
    """
    if pairs is not None:
        if ir is not None or vis is not None:
            raise ConfigError("give either pairs or ir and vis, not both")
        return open_pairs(pairs, split=split, fps=fps)
    if ir is None or vis is None:
        raise ConfigError("give both ir and vis sources, or pairs=ROOT")
    ir_src = ir if isinstance(ir, FrameSource) else open_source(ir, role="ir", fps=fps, timeout_s=timeout_s)
    try:
        vis_src = vis if isinstance(vis, FrameSource) else open_source(vis, role="vis", fps=fps, timeout_s=timeout_s)
    except BaseException:
        ir_src.close()
        raise
    return ir_src, vis_src
