"""Soak benchmark: many frames through the whole pipeline at a small size; memory and frame accounting.

::

    python -m benchmarks.soak --frames 10000 --size 128x32 --out outputs/soak

Two synthetic *recorded* sources (``lossless`` sync, index pairing) make their frames one at a time
(nothing is held in memory), each with its frame index drawn as a 16-bit block code; they go through
:func:`dstfuse_stream.stream` (readers, pairing, the Fuser with the chosen backend, the writer
thread) into an H.264 MP4 and a timing log. Reported:

* RSS (``VmRSS``) after the first frame, at the middle and after the last one, the lowest and
  highest of the samples taken every ``--sample-every`` frames, and the process peak (``VmHWM``);
* frames in = frames out: frames made per source, read, paired, fused, written (summary), rows in the
  timing log, frames decoded back from the MP4, and how many decoded frames carry the expected index
  (the code survives H.264 and fusion of two identical codes; ``--fake`` fuses with ``max`` and must
  match exactly).

Writes ``soak.json`` into ``--out`` and prints a Markdown table. This is a benchmark, not a test: it
takes minutes (the real model, 10,000 frames) and its RSS numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from dstfuse_stream.cliutil import run_command
from dstfuse_stream.geometry import parse_size_wh
from dstfuse_stream.sinks import TimingLog, VideoSink, write_json
from dstfuse_stream.sources import Frame, FrameSource
from dstfuse_stream.streaming import stream

from .machine import load_average
from .memory import current_rss_bytes

__all__ = ["CodedSource", "run_soak", "main"]

BITS = 16
_MIB = 1024.0 * 1024.0


def code_frame(index: int, size_wh: tuple[int, int], *, colour: bool) -> np.ndarray:
    """``index`` as ``BITS`` white/black blocks across the frame (gray, or BGR for ``colour``)."""
    w, h = size_wh
    block = w // BITS
    img = np.zeros((h, w), np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            img[:, bit * block : (bit + 1) * block] = 255
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if colour else img


def read_code(img: np.ndarray) -> int:
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    block = w // BITS
    return sum(1 << bit for bit in range(BITS) if gray[h // 4 : 3 * h // 4, bit * block + block // 4 : (bit + 1) * block - block // 4].mean() > 128)


class CodedSource(FrameSource):
    """A recorded source of ``count`` coded frames made on the fly (``fps`` timestamps)."""

    def __init__(self, count: int, size_wh: tuple[int, int], *, colour: bool, name: str, fps: float = 30.0) -> None:
        super().__init__(name=name, fps=fps, gray=not colour)
        self.count, self.size_wh, self.colour = count, size_wh, colour
        self.made = 0

    @property
    def frame_count(self) -> int | None:
        return self.count

    def frames(self) -> Iterator[Frame]:
        for i in range(self.count):
            self.made += 1
            yield Frame(i, i / self.fps, code_frame(i, self.size_wh, colour=self.colour), 0.0, time.monotonic())


class MaxBackend:
    """``--fake``: pixelwise ``max(ir, vis)`` instead of the network (a pipeline-only soak)."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return np.maximum(ir, vis)


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / _MIB, 1)


def _peak_rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_soak(frames: int, size_wh: tuple[int, int], out: Path, *, backend: str, fake: bool, sample_every: int) -> dict:
    """Run the soak; returns the result dict (also written to ``out/soak.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    ir = CodedSource(frames, size_wh, colour=False, name="coded ir")
    vis = CodedSource(frames, size_wh, colour=True, name="coded vis")
    video, log = out / "soak.mp4", out / "soak_timing.csv"
    options = {"fuser": _fake_fuser()} if fake else {"backend": backend}
    t0 = time.perf_counter()
    pipe = stream(ir, vis, sinks=[VideoSink(video, fps=30.0, vfr=True)], timing_log=TimingLog(log), **options)
    samples: list[tuple[int, float | None]] = []
    marks = {0: "start", frames // 2: "middle"}
    rss: dict[str, float | None] = {}
    for frame in pipe:
        if frame.index in marks:
            rss[marks[frame.index]] = _mib(current_rss_bytes())
        if frame.index % sample_every == 0:
            samples.append((frame.index, _mib(current_rss_bytes())))
    rss["end"] = _mib(current_rss_bytes())
    wall_s = time.perf_counter() - t0
    summary = pipe.summary
    decoded = matched = 0
    with av.open(str(video)) as container:
        for i, f in enumerate(container.decode(video=0)):
            decoded += 1
            matched += read_code(f.to_ndarray(format="gray")) == i
    values = [v for _, v in samples if v is not None]
    result = {
        "command": [sys.executable, "-m", "benchmarks.soak", *sys.argv[1:]],
        "frames": frames,
        "size_wh": list(size_wh),
        "backend": "fake (max)" if fake else pipe.fuser.describe(),
        "wall_s": round(wall_s, 1),
        "fps": round(summary.fps, 2),
        "load_average": load_average(),
        "rss_mib": {**rss, "min_sampled": min(values, default=None), "max_sampled": max(values, default=None),
                    "peak_vmhwm": _mib(_peak_rss())},
        "rss_samples_mib": samples,
        "frames_in_out": {
            "made": {"ir": ir.made, "vis": vis.made},
            "read": summary.frames_read,
            "paired": summary.frames_paired,
            "fused": summary.frames_fused,
            "written": summary.frames_written,
            "timing_log_rows": len(log.read_text().splitlines()) - 1,
            "decoded_from_mp4": decoded,
            "decoded_with_expected_index": matched,
            "unmatched": summary.unmatched,
            "unused": summary.unused,
        },
        "stopped_by": summary.stopped_by,
    }
    result["frames_in_equal_frames_out"] = (ir.made == vis.made == summary.frames_written == decoded == frames)
    write_json(out / "soak.json", result)
    return result


def _fake_fuser():
    from dstfuse_stream.fuser import Fuser

    return Fuser(backend=MaxBackend())


def format_table(r: dict) -> str:
    io, rss = r["frames_in_out"], r["rss_mib"]
    rows = [
        ("frames made (ir / vis)", f"{io['made']['ir']} / {io['made']['vis']}"),
        ("read (ir / vis), paired, fused, written", f"{io['read']['ir']} / {io['read']['vis']}, {io['paired']}, "
                                                    f"{io['fused']}, {io['written']}"),
        ("timing-log rows, frames decoded from the MP4", f"{io['timing_log_rows']}, {io['decoded_from_mp4']}"),
        ("decoded frames carrying their own index", f"{io['decoded_with_expected_index']}"),
        ("RSS MiB start / middle / end", f"{rss['start']} / {rss['middle']} / {rss['end']}"),
        ("RSS MiB sampled min / max; peak (VmHWM)", f"{rss['min_sampled']} / {rss['max_sampled']}; {rss['peak_vmhwm']}"),
        ("throughput, wall", f"{r['fps']} fps, {r['wall_s']} s"),
    ]
    head = f"| {r['frames']} frames at {r['size_wh'][0]}x{r['size_wh'][1]}, {r['backend']} | |\n|---|---|\n"
    return head + "\n".join(f"| {a} | {b} |" for a, b in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10_000, help="frames per source (default %(default)s)")
    p.add_argument("--size", type=parse_size_wh, default=(128, 32), metavar="WxH", help="frame size (default 128x32)")
    p.add_argument("--backend", default="auto", help="Fuser backend (default %(default)s: the shipped weights)")
    p.add_argument("--fake", action="store_true", help="fuse with max(ir, vis) instead of the network")
    p.add_argument("--sample-every", type=int, default=500, help="RSS sample interval in frames (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("outputs/soak"), help="output folder (default %(default)s)")
    return p


def _main(args: argparse.Namespace) -> int:
    result = run_soak(args.frames, args.size, args.out, backend=args.backend, fake=args.fake, sample_every=args.sample_every)
    print(format_table(result))
    print(f"frames in = frames out: {result['frames_in_equal_frames_out']}; results: {args.out / 'soak.json'}")
    return 0 if result["frames_in_equal_frames_out"] else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="soak: %(levelname)s: %(message)s")
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    return run_command("soak", _main, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
