"""Output-path safety: the one check that no output is an input or another output.

:func:`check_outputs` runs before anything is opened for writing (the command calls it with every
path it was given, the pipeline again with its sinks), and raises
:class:`~dstfuse_stream.errors.SinkError` when

* an output file is a file an input reads (a video, or an image of an image folder), compared by
  resolved path and by inode and device (symbolic and hard links);
* an output folder is a folder an input reads images from (the frames would overwrite them);
* two outputs are the same file or folder (``--out`` = ``--preview``, ``--timing-log`` = ``--out``...);
* an output is ``-``: writing to stdout is not supported.

What is not refused (the overwrite policy): an existing output file is replaced; an existing output
folder is reused, files of the same name are replaced and other files are left as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dstfuse_stream.errors import SinkError
from dstfuse_stream.imageio import IMAGE_SUFFIXES

__all__ = ["OutputPath", "check_outputs", "sink_outputs"]


@dataclass(frozen=True)
class OutputPath:
    """One place a run writes: ``label`` names it in errors (``"--out"``, ``"video"``...)."""

    label: str
    path: Path
    folder: bool = False


def _identity(path: Path) -> tuple[object, ...]:
    """``(dev, inode)`` of what ``path`` resolves to when it exists, else the resolved absolute path."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return ("path", real)
    return ("inode", st.st_dev, st.st_ino)


def sink_outputs(sinks: Iterable[object], timing_log: object | None = None) -> list[OutputPath]:
    """The :class:`OutputPath` of each sink (``path`` of a file, ``folder`` of an image folder) and
    of the timing log; sinks without either attribute (in-memory) are skipped."""
    outputs = []
    for sink in [*sinks, timing_log]:
        folder, path = getattr(sink, "folder", None), getattr(sink, "path", None)
        label = f"{type(sink).__name__}"
        if folder is not None:
            outputs.append(OutputPath(label, Path(folder), folder=True))
        elif path is not None:
            outputs.append(OutputPath(label, Path(path)))
    return outputs


def check_outputs(outputs: Sequence[OutputPath], inputs: Iterable[object]) -> None:
    """Raise :class:`SinkError` for an output that is an input or another output (module docstring).

    ``inputs`` are :class:`~dstfuse_stream.sources.FrameSource` objects (their ``input_paths()``).
    """
    files: dict[tuple[object, ...], str] = {}
    folders: dict[tuple[object, ...], str] = {}
    for source in inputs:
        paths = source.input_paths()  # type: ignore[attr-defined]
        name = getattr(source, "name", "input")
        for path in paths:
            files.setdefault(_identity(path), f"the input {name}")
        for parent in {p.parent for p in paths if p.suffix.lower() in IMAGE_SUFFIXES}:
            folders.setdefault(_identity(parent), f"the folder {name} reads its images from")
    seen: dict[tuple[object, ...], OutputPath] = {}
    for out in outputs:
        text = os.fspath(out.path)
        if text.strip() == "-":
            raise SinkError(f"{out.label} '-': writing to stdout is not supported; give a file or folder path")
        key = _identity(out.path)
        clash = (folders if out.folder else files).get(key) or (files.get(key) if out.folder else None)
        if clash:
            raise SinkError(f"{out.label} {text!r} is {clash}: refusing to overwrite an input (choose another path)")
        if key in seen:
            raise SinkError(f"{out.label} {text!r} is the same as {seen[key].label} {os.fspath(seen[key].path)!r}: "
                            "every output needs its own path")
        seen[key] = out
