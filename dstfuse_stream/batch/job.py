"""One work item, run where the worker is: :func:`run_item` streams it through a given
:class:`~dstfuse_stream.fuser.Fuser` with :func:`dstfuse_stream.stream` into temporary outputs and
renames them to their final names when complete.

Temporary names sit beside the final ones, hidden: ``.tmp-<token>.<final name>``. The summary JSON is
renamed last, so a finished item is one whose summary exists. Whatever stops an item (a bad input,
a bug, Ctrl-C, the worker being killed) leaves nothing under a final name; the temporaries of a run
that was killed are removed when the item runs again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstfuse_stream.batch.plan import FORMATS, WorkItem
from dstfuse_stream.errors import ConfigError, DSTFuseError

__all__ = ["BatchSettings", "FuserSpec", "ItemResult", "run_item", "temp_paths", "remove_temps"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FuserSpec:
    """How each worker builds its one :class:`~dstfuse_stream.fuser.Fuser` (see its arguments)."""

    weights: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    output: str = "bgr"
    threads: int | None = None

    def build(self) -> Any:
        from dstfuse_stream.fuser import Fuser

        return Fuser(self.weights, self.backend, self.device, self.precision, output=self.output, threads=self.threads)


@dataclass(frozen=True)
class BatchSettings:
    """Per-item output and pipeline settings shared by every work item of a job.

    Attributes:
        fmt: ``"mp4"`` (one fused video per item) or ``"frames"`` (one PNG folder per item).
        fps: frame rate of image sequences (default :data:`~dstfuse_stream.sources.DEFAULT_FOLDER_FPS`).
        out_fps: output frame rate (default: the visible source's).
        codec, crf: video encoder settings (as ``dstfuse-stream``).
        max_size, resize_wh, queue_size: :class:`~dstfuse_stream.pipeline.PipelineConfig` fields.
    """

    fmt: str = "mp4"
    fps: float | None = None
    out_fps: float | None = None
    codec: str = "libx264"
    crf: int = 20
    max_size: int | None = None
    resize_wh: tuple[int, int] | None = None
    queue_size: int = 4

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"format {self.fmt!r}: expected one of {list(FORMATS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ItemResult:
    """What became of one work item: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    key: str
    sequence: str
    status: str
    output: str
    frames: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    warning: str | None = None
    worker: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fps": self.fps}


def temp_paths(item: WorkItem, token: str) -> tuple[Path, Path]:
    """``(output, summary)`` temporary paths of ``item`` for the run ``token`` (hex)."""
    output = item.output.with_name(f".tmp-{token}.{item.output.name}")
    summary = output / item.summary.name if item.is_folder else item.summary.with_name(f".tmp-{token}.{item.summary.name}")
    return output, summary


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temps(item: WorkItem, token: str | None = None) -> list[Path]:
    """Remove ``item``'s temporaries of the run ``token`` (``None``: of any run); returns them."""
    folder = item.output.parent
    if not folder.is_dir():
        return []
    tok = re.escape(token) if token else "[0-9a-f]+"
    names = "|".join(re.escape(p.name) for p in (item.output, item.summary))
    pattern = re.compile(rf"\.tmp-{tok}\.(?:old\.)?(?:{names})")
    removed = [p for p in folder.iterdir() if pattern.fullmatch(p.name)]
    for path in removed:
        _remove(path)
    return removed


def _open_sources(item: WorkItem, fps: float | None) -> tuple[Any, Any]:
    from dstfuse_stream.sources import DEFAULT_FOLDER_FPS, ImageListSource, open_source_pair

    seq = item.sequence
    if item.pairs:
        rate = fps or DEFAULT_FOLDER_FPS
        ir = ImageListSource([p[0] for p in item.pairs], fps=rate, name=f"{item.key} (ir)", gray=True)
        vis = ImageListSource([p[1] for p in item.pairs], fps=rate, name=f"{item.key} (vis)")
        return ir, vis
    return open_source_pair(str(seq.ir), str(seq.vis), fps=fps)


def _make_sink(path: Path, settings: BatchSettings, fps: float) -> Any:
    from dstfuse_stream.sinks import ImageFolderSink, VideoSink

    if settings.fmt == "frames":
        return ImageFolderSink(path)
    return VideoSink(path, fps=fps, codec=settings.codec, crf=settings.crf)


def _commit(item: WorkItem, tmp_output: Path, tmp_summary: Path, token: str) -> None:
    """Move the finished temporaries to their final names, the summary last."""
    item.summary.unlink(missing_ok=True)  # an older summary must not vouch for a half-replaced output
    if item.is_folder:
        old = item.output.with_name(f".tmp-{token}.old.{item.output.name}")
        if item.output.exists():
            os.replace(item.output, old)
        os.replace(tmp_output, item.output)  # summary.json inside: both appear at once
        _remove(old)
    else:
        os.replace(tmp_output, item.output)
        os.replace(tmp_summary, item.summary)


def run_item(
    item: WorkItem,
    fuser: Any,
    settings: BatchSettings,
    *,
    token: str,
    on_frames: Callable[[int], None] | None = None,
    report_every_s: float = 0.5,
    extra: dict[str, Any] | None = None,
) -> ItemResult:
    """Fuse ``item`` with ``fuser`` (kept open) into its final outputs, atomically.

    ``on_frames(n)`` is called with the frames written since its last call (every
    ``report_every_s`` and at the end). An ``Exception`` is reported in the result (status
    ``"failed"``), never raised; ``KeyboardInterrupt``/``SystemExit`` are re-raised after the
    temporaries are removed. ``extra`` is added to the summary JSON's ``batch`` section.
    """
    from dstfuse_stream.cli import run_config
    from dstfuse_stream.sinks import write_json
    from dstfuse_stream.streaming import stream

    result = ItemResult(key=item.key, sequence=item.sequence.name, status="failed", output=str(item.output))
    stale = remove_temps(item)
    if stale:
        logger.info("%s: removed %d temporary output(s) of an interrupted run", item.key, len(stale))
    tmp_output, tmp_summary = temp_paths(item, token)
    t0, reported = time.perf_counter(), 0
    try:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        ir_src, vis_src = _open_sources(item, settings.fps)
        try:
            sink = _make_sink(tmp_output, settings, settings.out_fps or vis_src.fps or ir_src.fps or 30.0)
        except BaseException:
            ir_src.close()
            vis_src.close()
            raise
        pipeline = stream(ir_src, vis_src, fuser=fuser, sinks=[sink], sync="lossless", max_size=settings.max_size,
                          resize_wh=settings.resize_wh, queue_size=settings.queue_size)
        last = time.monotonic()
        with pipeline:
            for frame in pipeline:
                if on_frames is not None and time.monotonic() - last >= report_every_s:
                    on_frames(frame.index + 1 - reported)
                    reported, last = frame.index + 1, time.monotonic()
        summary = pipeline.summary
        config = run_config(pipeline, [sink])
        for described in config["outputs"]:
            described["path"] = str(item.output)
        batch = {"item": item.key, "sequence": item.sequence.name, "part": item.part, "parts": item.parts,
                 "input": str(item.sequence.source), "settings": settings.to_dict(), **(extra or {})}
        write_json(tmp_summary, {"summary": summary.to_dict(), "config": config, "batch": batch})
        _commit(item, tmp_output, tmp_summary, token)
        result.status, result.frames = "done", summary.frames_written
        if summary.length_mismatch:
            result.warning = f"the {summary.length_mismatch} stream is longer; stopped at the shorter"
    except Exception as exc:  # noqa: BLE001 - one failing item is reported, the job goes on
        result.error = str(exc) if isinstance(exc, DSTFuseError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, DSTFuseError):
            logger.exception("%s failed", item.key)
    finally:
        result.elapsed_s = time.perf_counter() - t0
        if result.status != "done":
            remove_temps(item, token)
        if on_frames is not None and result.frames > reported:
            on_frames(result.frames - reported)
    return result
