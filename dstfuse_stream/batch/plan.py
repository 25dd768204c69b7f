"""What a batch job fuses: inputs -> sequences -> work items with their final output paths.

An INPUT folder is read as (first match wins):

* a **pairs folder**: ``ir/`` + ``vi/`` (or ``infrared/`` + ``visible/``, LLVIP's ``{train,test}``
  splits included) holding images, matched by file name (:func:`dstfuse_stream.imageio.list_pairs`):
  one image sequence;
* a **pairs root of videos**: the same two sub-folders holding videos, matched by file stem
  (M3SVD's ``infrared/0111_1716.mp4`` + ``visible/0111_1716.mp4``): one video sequence per stem;
* a **video pair**: ``ir.<ext>`` + ``vi.<ext>`` (or ``infrared``/``visible``) side by side;
* otherwise a **dataset folder**: each sub-folder that is one of the above.

``--ir-glob``/``--vis-glob`` replace this detection: two glob patterns, relative to each INPUT; the
files whose wildcards (``*``, ``?``, ``**``) capture the same text are one video pair, and the
captured text names the sequence (``*/ir.mp4`` + ``*/vi.mp4`` pairs ``seq1/ir.mp4`` with
``seq1/vi.mp4`` as ``seq1``).

A long image sequence (more pairs than ``chunk_size``) is split into chunks of consecutive pairs, one
work item each. Output paths (``OUT`` = the job's output folder; ``dstfuse-stream``'s naming)::

    format mp4:     OUT/<seq>.mp4          + OUT/<seq>.summary.json
                    OUT/<seq>/part-0003.mp4 + OUT/<seq>/part-0003.summary.json      (chunks)
    format frames:  OUT/<seq>/             with OUT/<seq>/summary.json inside
                    OUT/<seq>/part-0003/   with .../part-0003/summary.json inside    (chunks)

The summary JSON is the last file of an item to reach its final name, so an item is finished
exactly when its summary is there (:func:`finished_frames`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dstfuse_stream.errors import ConfigError, SourceError
from dstfuse_stream.imageio import _IR_DIRS, _VIS_DIRS, _first_dir, list_pairs

__all__ = ["VIDEO_SUFFIXES", "FORMATS", "Sequence", "WorkItem", "find_sequences", "plan_items", "finished_frames"]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts"})
FORMATS = ("mp4", "frames")


@dataclass(frozen=True)
class Sequence:
    """One IR/visible recording: a video pair (``ir``, ``vis`` files) or image ``pairs``."""

    name: str
    source: Path
    ir: Path | None = None
    vis: Path | None = None
    pairs: tuple[tuple[Path, Path], ...] = ()

    @property
    def kind(self) -> str:
        return "images" if self.pairs else "video"


@dataclass(frozen=True)
class WorkItem:
    """One unit of work for a worker: a whole sequence, or ``part`` of ``parts`` chunks of one."""

    key: str
    sequence: Sequence
    pairs: tuple[tuple[Path, Path], ...]
    part: int | None
    parts: int
    output: Path
    summary: Path
    frames_expected: int | None

    @property
    def is_folder(self) -> bool:
        return self.output.suffix == ""


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a relative glob whose groups capture what each wildcard matched."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:(.*)/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _glob_keyed(root: Path, pattern: str) -> dict[tuple[str, ...], Path]:
    regex = _glob_regex(pattern)
    found: dict[tuple[str, ...], Path] = {}
    for path in sorted(root.glob(pattern)):
        match = regex.fullmatch(path.relative_to(root).as_posix())
        if path.is_file() and match is not None:
            found[tuple(g or "" for g in match.groups())] = path
    return found


def glob_pairs(root: Path, ir_glob: str, vis_glob: str) -> list[Sequence]:
    """Video pairs under ``root``: IR and visible files whose wildcards captured the same text."""
    ir, vis = _glob_keyed(root, ir_glob), _glob_keyed(root, vis_glob)
    lone = len(ir.keys() ^ vis.keys())
    if lone:
        logger.warning("%s: %d file(s) matched only one of %r / %r; ignored", root, lone, ir_glob, vis_glob)
    sequences = []
    for key in sorted(ir.keys() & vis.keys()):
        name = "_".join(part.replace("/", "_") for part in key if part) or root.name
        sequences.append(Sequence(name=name, source=root, ir=ir[key], vis=vis[key]))
    return sequences


def _videos_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES}


def _detect(folder: Path, *, split: str | None) -> list[Sequence]:
    """The sequences ``folder`` itself is (see the module docstring), or ``[]``."""
    ir_dir, vis_dir = _first_dir(folder, _IR_DIRS), _first_dir(folder, _VIS_DIRS)
    if ir_dir is not None and vis_dir is not None:
        try:
            return [Sequence(name=folder.name, source=folder, pairs=tuple(list_pairs(folder, split=split)))]
        except SourceError:
            ir_videos, vis_videos = _videos_by_stem(ir_dir), _videos_by_stem(vis_dir)
            if ir_videos.keys() & vis_videos.keys():
                return [Sequence(name=stem, source=folder, ir=ir_videos[stem], vis=vis_videos[stem])
                        for stem in sorted(ir_videos.keys() & vis_videos.keys())]
            raise
    for ir_name in _IR_DIRS:
        for vis_name in _VIS_DIRS:
            ir = [p for p in folder.glob(f"{ir_name}.*") if p.suffix.lower() in VIDEO_SUFFIXES]
            vis = [p for p in folder.glob(f"{vis_name}.*") if p.suffix.lower() in VIDEO_SUFFIXES]
            if ir and vis:
                return [Sequence(name=folder.name, source=folder, ir=sorted(ir)[0], vis=sorted(vis)[0])]
    return []


def _detect_children(root: Path, *, split: str | None) -> list[Sequence]:
    """Sequences of a dataset folder's sub-folders; a broken one is skipped with a warning."""
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            found.extend(_detect(child, split=split))
        except SourceError as exc:
            logger.warning("skipped %s: %s", child, exc)
    return found


def find_sequences(
    inputs: list[str | os.PathLike[str]],
    *,
    ir_glob: str | None = None,
    vis_glob: str | None = None,
    split: str | None = None,
) -> list[Sequence]:
    """Every sequence of ``inputs`` (see the module docstring), in input order.

    Raises :class:`SourceError` for an input that is not a folder or holds no sequence, and
    :class:`ConfigError` when two sequences would get the same name (and so the same output).
    """
    if (ir_glob is None) != (vis_glob is None):
        raise ConfigError("give both --ir-glob and --vis-glob, or neither")
    sequences: list[Sequence] = []
    for spec in inputs:
        root = Path(spec).absolute()  # workers on other nodes see the same absolute paths, not our cwd
        if not root.is_dir():
            raise SourceError(f"input {str(root)!r}: not a folder")
        if ir_glob is not None and vis_glob is not None:
            found = glob_pairs(root, ir_glob, vis_glob)
            what = f"no file pair matches --ir-glob {ir_glob!r} and --vis-glob {vis_glob!r}"
        else:
            found = _detect(root, split=split) or _detect_children(root, split=split)
            what = ("no pairs folder (ir/ + vi/, LLVIP infrared/ + visible/), no ir.mp4 + vi.mp4 video pair, "
                    "and no sub-folder holding one")
        if not found:
            raise SourceError(f"input {str(root)!r}: {what}")
        sequences.extend(found)
    seen: dict[str, Path] = {}
    for seq in sequences:
        if seq.name in seen:
            raise ConfigError(
                f"two sequences are named {seq.name!r} ({str(seen[seq.name])!r} and {str(seq.source)!r}) and would "
                "write the same output; run them into different --out folders"
            )
        seen[seq.name] = seq.source
    return sequences


def _video_frames(seq: Sequence) -> int | None:
    from dstfuse_stream.sources import VideoFileSource

    counts = []
    for path in (seq.ir, seq.vis):
        try:
            with VideoFileSource(path) as src:  # header only; nothing is decoded
                counts.append(src.frame_count)
        except SourceError:
            return None  # the worker reports it
    return None if None in counts else min(counts)


def plan_items(sequences: list[Sequence], out_dir: str | os.PathLike[str], *, fmt: str = "mp4", chunk_size: int = 1000) -> list[WorkItem]:
    """Work items of ``sequences`` with their final outputs under ``out_dir`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: expected one of {list(FORMATS)}")
    if chunk_size < 1:
        raise ConfigError(f"chunk size: expected >= 1, got {chunk_size}")
    out = Path(out_dir).absolute()
    items: list[WorkItem] = []
    for seq in sequences:
        if seq.kind == "video":
            chunks: list[tuple[tuple[Path, Path], ...]] = [()]
        else:
            chunks = [seq.pairs[i : i + chunk_size] for i in range(0, len(seq.pairs), chunk_size)]
        for part, pairs in enumerate(chunks):
            chunked = len(chunks) > 1
            stem = out / seq.name / f"part-{part:04d}" if chunked else out / seq.name
            if fmt == "mp4":
                output, summary = stem.with_name(stem.name + ".mp4"), stem.with_name(stem.name + ".summary.json")
            else:
                output, summary = stem, stem / "summary.json"
            items.append(WorkItem(
                key=f"{seq.name}/part-{part:04d}" if chunked else seq.name, sequence=seq, pairs=pairs,
                part=part if chunked else None, parts=len(chunks), output=output, summary=summary,
                frames_expected=len(pairs) if pairs else _video_frames(seq),
            ))
    return items


def finished_frames(item: WorkItem) -> int | None:
    """Frames written by a finished earlier run of ``item``, or ``None`` when it has to run."""
    if not item.output.exists():
        return None
    try:
        data = json.loads(item.summary.read_text())
        return int(data["summary"]["frames_written"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
