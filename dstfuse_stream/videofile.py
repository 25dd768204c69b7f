"""Container-level helpers of :class:`dstfuse_stream.sinks.VideoSink` (PyAV, imported lazily).

* :func:`choose_codec`: the encoder for a container (``auto``: H.264, VP9 for WebM; a codec missing
  from the local FFmpeg falls back to the next one), tried once on a 16x16 frame in memory so that a
  codec the container cannot hold (``libx264`` in ``.webm``, ``libvpx`` in ``.mp4``) is one clear
  error before any file is written.
* MP4/MOV outputs are written **fragmented** (:func:`muxer_options`: the ``moov`` header with the
  first fragment, then a ``moof`` + ``mdat`` fragment at least every :data:`FRAGMENT_S` seconds;
  ``delay_moov`` lets the header's edit list start the video at its first frame's time): a file cut short (full
  disk, killed process, power loss) still plays up to its last complete fragment, and
  :func:`truncate_to_fragments` removes the incomplete tail so that every decoder reads it cleanly.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

from dstfuse_stream.errors import SinkError

__all__ = ["choose_codec", "container_format", "muxer_options", "truncate_to_fragments", "supports_vfr",
           "CheckedFile", "FRAGMENT_S", "AUTO_CODECS"]

logger = logging.getLogger(__name__)

#: longest stretch of video a fragmented MP4 can lose when it is cut short
FRAGMENT_S = 1.0
#: ``codec="auto"``: encoders tried in order, per container format name (``"*"``: every other one)
AUTO_CODECS = {"webm": ("libvpx-vp9", "libvpx"), "*": ("libx264", "mpeg4")}
_FRAGMENTED = ("mp4", "mov")
_AVFMT_VARIABLE_FPS = 0x0400


class CheckedFile:
    """The output file handed to PyAV: unbuffered, and it keeps the first write error.

    FFmpeg does not report every failed write (a fragmented MP4 on a full disk can "succeed" with
    nothing on disk), so the sink checks :attr:`error` itself after every frame and at the close.
    """

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb", buffering=0)
        #: the first ``OSError`` of a write (``None`` while all went well)
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def container_format(path: Path) -> str:
    """FFmpeg's muxer name for ``path``'s suffix (``mp4``, ``matroska``, ``webm``...); nothing is written."""
    import av

    try:
        container = av.open(str(path), mode="w")  # the file itself is created at the first frame only
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise SinkError(f"video {str(path)!r}: no container format for suffix {path.suffix!r} ({exc})") from exc
    try:
        return container.format.name
    finally:
        container.close()


def supports_vfr(format_name: str) -> bool:
    """Whether the muxer stores per-frame timestamps (MP4, Matroska yes; AVI no)."""
    import av

    return bool(av.format.ContainerFormat(format_name, "w").flags & _AVFMT_VARIABLE_FPS)


def muxer_options(format_name: str) -> dict[str, str]:
    """Options of the output container: fragmented MP4/MOV (module docstring), else none."""
    if format_name in _FRAGMENTED:
        return {"movflags": "delay_moov+default_base_moof+frag_keyframe", "frag_duration": str(int(FRAGMENT_S * 1e6))}
    return {}


def _try_codec(format_name: str, codec: str) -> str | None:
    """``None`` when ``codec`` encodes a 16x16 frame into an in-memory ``format_name`` container,
    else why not."""
    import av

    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError, KeyError) as exc:
        return f"not in this FFmpeg build ({exc})"
    container = av.open(io.BytesIO(), mode="w", format=format_name)
    try:
        stream = container.add_stream(codec, rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="bgr24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            container.close()  # never muxes again after a failure (a second header write crashes FFmpeg)
        except (av.error.FFmpegError, OSError, ValueError):
            pass
    return None


def choose_codec(label: str, format_name: str, codec: str, fallbacks: tuple[str, ...]) -> str:
    """The first of ``codec`` (``"auto"``: :data:`AUTO_CODECS`) and ``fallbacks`` that works in the
    container; a codec missing from FFmpeg is skipped with a warning, one that the container refuses
    is a :class:`SinkError`."""
    names = AUTO_CODECS.get(format_name, AUTO_CODECS["*"]) if codec == "auto" else (codec, *fallbacks)
    reasons = []
    for name in names:
        why = _try_codec(format_name, name)
        if why is None:
            if name != names[0]:
                logger.warning("%s: codec %s is not available (%s); using %s", label, names[0], reasons[0], name)
            return name
        if codec != "auto" and name == codec and not why.startswith("not in this FFmpeg"):
            raise SinkError(f"{label}: codec {codec!r} cannot be written into a {format_name!r} file ({why}); "
                            "choose another --codec or file suffix (e.g. libx264 in .mp4/.mkv, libvpx-vp9 in .webm)")
        reasons.append(why)
    raise SinkError(f"{label}: none of the codecs {list(names)} works in a {format_name!r} file: {'; '.join(reasons)}")


def truncate_to_fragments(path: Path) -> int:
    """Cut a fragmented MP4 after its last complete top-level box that does not leave a ``moof``
    without its ``mdat``; returns the new size (0: no complete fragment, and a regular file is
    removed; -1: the file could not be read or cut)."""
    try:
        size = os.path.getsize(path)
        good, pos, open_moof, fragments = 0, 0, False, 0
        with open(path, "rb") as fh:
            while pos + 8 <= size:
                fh.seek(pos)
                head = fh.read(16)
                box_size, kind = struct.unpack(">I4s", head[:8])
                if box_size == 1 and len(head) == 16:
                    box_size = struct.unpack(">Q", head[8:16])[0]
                if box_size < 8 or pos + box_size > size:
                    break
                pos += box_size
                if kind == b"moof":
                    open_moof = True
                    continue
                if kind == b"mdat" and open_moof:
                    open_moof, fragments = False, fragments + 1
                if not open_moof:
                    good = pos
        if fragments == 0:
            if os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)  # a header without frames plays nowhere
            return 0
        os.truncate(path, good)
        return good
    except OSError as exc:
        logger.warning("could not cut %s to its complete fragments (%s)", path, exc)
        return -1
