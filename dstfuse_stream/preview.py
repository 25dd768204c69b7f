"""Side-by-side preview ``IR | visible | fused`` of a few still pairs, stacked into one PNG.

    python -m dstfuse_stream.preview --pairs ../shared/data/llvip --out outputs/llvip_preview.png \\
        --names 010001 010005 --max-width 640

Each pair goes through :meth:`dstfuse_stream.fuser.Fuser.process` (torch backend) at full resolution:
the luma (Y) is fused, the visible chroma (Cr, Cb) kept, IR brought to the visible size. Each row is
:func:`dstfuse_stream.visualize.side_by_side` of one pair, every panel downscaled to one common width
(at most ``--max-width`` pixels) so the file stays small.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dstfuse_stream.cliutil import run_command
from dstfuse_stream.errors import ConfigError, SinkError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.geometry import resize_to
from dstfuse_stream.imageio import list_pairs, read_bgr
from dstfuse_stream.visualize import side_by_side

__all__ = ["select_pairs", "build_preview", "main"]

logger = logging.getLogger(__name__)


def select_pairs(
    pairs: Sequence[tuple[Path, Path]], *, names: Sequence[str] | None = None, limit: int | None = None
) -> list[tuple[Path, Path]]:
    """Pairs whose IR file stem (or name) is in ``names`` (in that order), else the first ones; at most ``limit``."""
    if names:
        by_name = {}
        for ir_path, vis_path in pairs:
            by_name[ir_path.stem] = by_name[ir_path.name] = (ir_path, vis_path)
        missing = [n for n in names if n not in by_name]
        if missing:
            example = f" (expected file stems such as {pairs[0][0].stem!r})" if pairs else ""
            raise ConfigError(f"--names: {missing} not found among {len(pairs)} pairs{example}")
        chosen = [by_name[n] for n in names]
    else:
        chosen = list(pairs)
    return chosen[:limit] if limit is not None else chosen


def _resize_width(img: np.ndarray, width: int) -> np.ndarray:
    return resize_to(img, (width, max(1, round(img.shape[0] * width / img.shape[1]))))


def build_preview(fuser: Fuser, pairs: Sequence[tuple[Path, Path]], *, max_width: int = 640) -> np.ndarray:
    """Stack one ``side_by_side(ir, vis, fused)`` row per pair into a BGR uint8 image."""
    if max_width < 16:
        raise ConfigError(f"max_width: expected >= 16 pixels, got {max_width}")
    if not pairs:
        raise ConfigError("preview: expected at least one pair, got none")
    loaded = [(read_bgr(ir_path), read_bgr(vis_path)) for ir_path, vis_path in pairs]
    width = min(max_width, *(vis.shape[1] for _, vis in loaded))
    rows = []
    for (ir_path, _), (ir_bgr, vis_bgr) in zip(pairs, loaded):
        frame = fuser.process(ir_bgr, vis_bgr)
        rows.append(side_by_side(*(_resize_width(x, width) for x in (frame.ir, frame.vis, frame.fused))))
        logger.info("fused %s (%dx%d)", ir_path.name, frame.ir.shape[1], frame.ir.shape[0])
    return np.vstack(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dstfuse_stream.preview", description="Write an IR | visible | fused preview PNG.")
    p.add_argument("--pairs", required=True, help="pair folder (ir/ + vi/, or the LLVIP layout)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--weights", default=None, help="checkpoint (default: the shipped lite weights)")
    p.add_argument("--limit", type=int, default=4, help="at most this many pairs (default 4)")
    p.add_argument("--names", nargs="+", default=None, help="IR file stems to show, in order (e.g. 010001)")
    p.add_argument("--max-width", type=int, default=640, help="width of each panel in pixels, at most (default 640)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def run(args: argparse.Namespace) -> Path:
    if args.limit < 1:
        raise ConfigError(f"--limit: expected >= 1, got {args.limit}")
    pairs = select_pairs(list_pairs(args.pairs), names=args.names, limit=args.limit)
    with Fuser(args.weights, backend="torch", device=args.device) as fuser:
        image = build_preview(fuser, pairs, max_width=args.max_width)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise SinkError(f"--out {str(out)!r}: expected a .png path")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(out), image):
        raise SinkError(f"--out {str(out)!r}: could not write the PNG")
    return out


def _write_preview(args: argparse.Namespace) -> int:
    out = run(args)
    image = cv2.imread(os.fspath(out))
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {out.stat().st_size / 1024:.0f} KiB)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command("preview", _write_preview, args)


if __name__ == "__main__":
    sys.exit(main())
