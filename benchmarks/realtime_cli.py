"""``dstfuse-bench realtime``: the command behind the README's real-time table (see :mod:`.realtime`).

Writes ``results.json`` (everything, with the machine and the exact command) and ``results.md``
(the tables) into ``--out`` (default ``outputs/bench_realtime``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from dstfuse_stream.checkpoint import default_weights_path, save_checkpoint
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.geometry import parse_size_wh
from dstfuse_stream.sinks import write_json

from .machine import load_average, machine_info
from .realtime import REFERENCE, VARIANTS, build_variants, fidelity, load_frames, machine_facts, run_stream_check, time_variants
from .report import realtime_report

__all__ = ["build_parser", "run_realtime", "DEFAULT_VARIANTS", "DATA_ROOT"]

logger = logging.getLogger(__name__)

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Validation clips whose frames measure speed and fidelity (never used for training or calibration).
DEFAULT_CLIPS = ("sequences/m3svd_frames_0111_1753", "sequences/m3svd_frames_0111_1803", "sequences/m3svd_frames_0115_1834")
#: The README's sample clip (the ``dstfuse-stream`` quick-start command).
README_CLIP = "sequences/m3svd_frames_0111_1753"
DEFAULT_VARIANTS = "fp32-ref,fp32,int8,bf16,int8-ws1,bf16-ws1,default,default-x2"


def cli_fuser(clip: Path, weights: str | os.PathLike[str]) -> Fuser:
    """The Fuser ``dstfuse-stream --pairs CLIP`` builds on this machine (its ``--concurrent-frames auto``)."""
    from dstfuse_stream.sources import open_source_pair
    from dstfuse_stream.streaming import auto_concurrent_frames

    ir, vis = open_source_pair(pairs=clip)
    try:
        concurrent = auto_concurrent_frames(ir, vis)
    finally:
        ir.close(), vis.close()
    return Fuser(weights, concurrent_frames=concurrent)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dstfuse-bench realtime",
        description="Speed (model only, end to end, speed-up over fp32 ONNX Runtime in the same run) and fidelity "
        "(PSNR, VIF/Qabf/SSIM vs fp32 at full resolution) per precision, work scale and resolution; and the "
        "streaming pipeline on the README sample clip vs model-only fps.",
    )
    p.add_argument("--out", default="outputs/bench_realtime", help="output folder (default: outputs/bench_realtime)")
    p.add_argument("--weights", help="checkpoint (default: the shipped weights)")
    p.add_argument("--random-weights", metavar="PRESET", help="random-init weights of this preset instead (speed only)")
    p.add_argument("--resolutions", default="640x512,320x256", help="comma list of WxH (default 640x512,320x256)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {list(VARIANTS)} (default {DEFAULT_VARIANTS})")
    p.add_argument("--rounds", type=int, default=12, help="timed rounds per resolution (each times every variant once)")
    p.add_argument("--frames-per-clip", type=int, default=4, help="frames taken from each clip (default 4)")
    p.add_argument("--clips", nargs="+", default=[str(DATA_ROOT / c) for c in DEFAULT_CLIPS], help="paired folders of real frames")
    p.add_argument("--stream-clip", default=str(DATA_ROOT / README_CLIP), help="pairs folder of the stream check (default: README sample)")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming-pipeline check")
    p.add_argument("--no-fidelity", action="store_true", help="skip fidelity (speed only)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _weights(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    if args.random_weights:
        import torch

        from dstfuse_stream.config import get_config
        from dstfuse_stream.model import DSTFuse

        torch.manual_seed(0)
        path = save_checkpoint(tmp / f"{args.random_weights}_random.pt", DSTFuse(get_config(args.random_weights)), epoch=0)
        return path, f"random {args.random_weights} (seed 0)"
    path = Path(args.weights) if args.weights else default_weights_path()
    return path, str(path) if args.weights else f"shipped ({path.name})"


def run_realtime(args: argparse.Namespace, command: str) -> dict[str, Any]:
    labels = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in labels if v not in VARIANTS]
    if unknown or REFERENCE not in labels:
        raise ConfigError(f"--variants: expected {REFERENCE} and names from {list(VARIANTS)}, got unknown {unknown}")
    if args.rounds < 1 or args.frames_per_clip < 1:
        raise ConfigError("expected --rounds >= 1 and --frames-per-clip >= 1")
    resolutions = [parse_size_wh(r) for r in args.resolutions.split(",") if r.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "schema": "dstfuse-bench-realtime/1", "command": command, "complete": False,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), **machine_facts(), "load_average": {"start": load_average()},
        "variants": {label: vars(VARIANTS[label]) for label in labels}, "resolutions": {}, "stream": None,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dstfuse-realtime-") as tmp:
        weights, origin = _weights(args, Path(tmp))
        result["weights"] = origin
        fusers, result["skipped"] = build_variants(labels, weights)
        try:
            for size_wh in resolutions:
                key = f"{size_wh[0]}x{size_wh[1]}"
                frames = load_frames(args.clips, per_root=args.frames_per_clip, size_wh=size_wh)
                print(f"{key}: {len(frames)} frames, {len(fusers)} variants, {args.rounds} rounds", flush=True)
                entry = {"frames": len(frames), "speed": time_variants(fusers, frames, rounds=args.rounds), "load_average": load_average()}
                if not args.no_fidelity:
                    entry["fidelity"] = fidelity(fusers, frames)
                result["resolutions"][key] = entry
                write_json(out / "results.json", result)
            if not args.no_stream and "default" in fusers:
                print("stream check (default Fuser, README sample clip)", flush=True)
                piped = cli_fuser(Path(args.stream_clip), weights)
                fusers["stream-pipeline"] = piped
                result["stream"] = run_stream_check(fusers["default"], Path(args.stream_clip), workdir=Path(tmp) / "stream",
                                                    pipeline_fuser=piped)
        finally:
            for fuser in fusers.values():
                fuser.close()
    result["load_average"]["end"] = load_average()
    result["wall_s"] = time.perf_counter() - started
    result["complete"] = True
    write_json(out / "results.json", result)
    (out / "results.md").write_text(realtime_report(result) + "\n")
    return result


def main(argv: Sequence[str], command: str) -> int:
    args = build_parser().parse_args(list(argv))
    if args.verbose:
        logging.getLogger("dstfuse_stream").setLevel(logging.INFO)
    result = run_realtime(args, command)
    print(realtime_report(result))
    print(f"wrote {Path(args.out) / 'results.json'} and results.md in {result['wall_s']:.0f} s")
    return 0
