"""``dstfuse-batch``: fuse whole datasets on Ray, one output per sequence (or chunk), resumable.

Examples::

    dstfuse-batch ../shared/data/sequences --out outputs/batch                 # local Ray, all cores
    dstfuse-batch /data/LLVIP --format frames --chunk-size 500 --out /data/llvip_fused
    dstfuse-batch /data/M3SVD/Video/test --ray-address auto --num-gpus-per-worker 0.5 --out /shared/fused
    dstfuse-batch /data/site --ir-glob '*/ir.mp4' --vis-glob '*/vis.mp4' --out fused

Each work item is streamed with :func:`dstfuse_stream.stream` (the ``dstfuse-stream`` pipeline) into
a temporary name and renamed when complete (see :mod:`dstfuse_stream.batch.job`); a re-run skips
finished outputs and says so. Exit codes: 0 every item done or skipped; 2 a user error, or some items
failed (each listed on stderr, the others finished); 130 interrupted (finished outputs kept,
unfinished ones removed: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dstfuse_stream.backends.precision import PRECISIONS
from dstfuse_stream.cliutil import EXIT_USER_ERROR, arg_type, run_command
from dstfuse_stream.geometry import parse_size_wh

__all__ = ["main", "build_parser"]

PROG = "dstfuse-batch"
SUMMARY_NAME = "batch_summary.json"
logger = logging.getLogger(__name__)


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse many IR/visible sequences on a Ray cluster (or a local Ray runtime): one fused video "
        "or frame folder + summary JSON per sequence, as dstfuse-stream writes; re-runs skip finished outputs.",
    )
    src = p.add_argument_group("inputs")
    src.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="pairs folder (ir/ + vi/, LLVIP layout), pairs root of videos, folder with ir.mp4 + vi.mp4, "
                     "or a folder of such sequences")
    src.add_argument("--ir-glob", help="IR videos under each INPUT, e.g. '*/ir.mp4' (pairs files whose wildcards match)")
    src.add_argument("--vis-glob", help="visible videos under each INPUT, e.g. '*/vi.mp4'")
    src.add_argument("--split", choices=("train", "test"), help="LLVIP split (default: both)")
    src.add_argument("--fps", type=_positive(float), help="frame rate of image sequences (default 30)")
    src.add_argument("--chunk-size", type=_positive(int), default=1000,
                     help="image sequences longer than this are split into chunks of this many pairs (default 1000)")
    out = p.add_argument_group("outputs")
    out.add_argument("--out", required=True, help="output folder")
    out.add_argument("--format", choices=("mp4", "frames"), default="mp4", help="fused video (default) or PNG frames")
    out.add_argument("--force", action="store_true", help="redo finished outputs instead of skipping them")
    out.add_argument("--dry-run", action="store_true", help="list the work items and what would be skipped; run nothing")
    out.add_argument("--out-fps", type=_positive(float), help="output frame rate (default: the visible source's)")
    out.add_argument("--codec", default="libx264", help="video encoder (falls back to mpeg4 when missing)")
    out.add_argument("--crf", type=int, default=20, help="libx264 quality (lower is better)")
    out.add_argument("--gray", action="store_true", help="write the fused luma only")
    out.add_argument("--summary-json", help=f"dataset summary (default OUT/{SUMMARY_NAME})")
    model = p.add_argument_group("model (one per worker)")
    model.add_argument("--backend", default="auto", help="auto | torch | onnx | tensorrt (default auto)")
    model.add_argument("--weights", help="checkpoint/engine path (default: the shipped weights)")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    model.add_argument("--precision", choices=PRECISIONS, default="auto")
    model.add_argument("--threads", type=_positive(int), help="CPU threads of each worker's backend (default: its CPUs)")
    model.add_argument("--max-size", type=_positive(int), help="fuse at most this many pixels on the longer side")
    model.add_argument("--resize", type=arg_type(parse_size_wh), metavar="WxH", help="fuse at exactly this size")
    model.add_argument("--queue-size", type=_positive(int), default=4, help="pipeline queue capacity")
    ray = p.add_argument_group("ray")
    ray.add_argument("--ray-address", help="'auto' (the cluster of 'ray start') or ray://HOST:PORT; "
                     "default: a local Ray runtime with this machine's cores")
    ray.add_argument("--workers", type=_positive(int), help="number of workers (default: what the cluster fits)")
    ray.add_argument("--cpus-per-worker", type=_positive(float), default=1.0, help="CPUs reserved per worker (default 1)")
    ray.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="GPUs per worker, e.g. 1 or 0.5 (default 0)")
    misc = p.add_argument_group("misc")
    misc.add_argument("--no-progress", action="store_true", help="no progress bar")
    misc.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def _say(text: str, *, err: bool = False) -> None:
    print(f"{PROG}: {text}", file=sys.stderr if err else sys.stdout, flush=True)


def _report_skipped(skipped: list[Any], limit: int = 20) -> None:
    for result in skipped[:limit]:
        _say(f"skipped {result.key}: finished output {result.output} ({result.frames} frames)")
    if len(skipped) > limit:
        _say(f"... and {len(skipped) - limit} more finished outputs skipped")
    if skipped:
        _say("finished outputs are skipped; --force redoes them")


def _write_summary(path: Path, data: dict[str, Any]) -> None:
    from dstfuse_stream.sinks import write_json

    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.{path.name}")
    write_json(tmp, data)
    os.replace(tmp, path)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from dstfuse_stream.batch.job import BatchSettings, FuserSpec, ItemResult
    from dstfuse_stream.batch.plan import find_sequences, finished_frames, plan_items

    t0 = time.perf_counter()
    sequences = find_sequences(args.inputs, ir_glob=args.ir_glob, vis_glob=args.vis_glob, split=args.split)
    items = plan_items(sequences, args.out, fmt=args.format, chunk_size=args.chunk_size)
    skipped, todo = [], []
    for item in items:
        frames = None if args.force else finished_frames(item)
        if frames is None:
            todo.append(item)
        else:
            skipped.append(ItemResult(key=item.key, sequence=item.sequence.name, status="skipped", output=str(item.output), frames=frames))
    _say(f"{len(sequences)} sequence(s), {len(items)} work item(s): {len(todo)} to run, {len(skipped)} finished earlier")
    _report_skipped(skipped)
    if args.dry_run:
        for item in todo:
            _say(f"would run {item.key} ({item.frames_expected or '?'} frames) -> {item.output}")
        return 0

    settings = BatchSettings(fmt=args.format, fps=args.fps, out_fps=args.out_fps, codec=args.codec, crf=args.crf,
                             max_size=args.max_size, resize_wh=args.resize, queue_size=args.queue_size)
    threads = args.threads or max(1, int(args.cpus_per_worker))
    spec = FuserSpec(weights=args.weights, backend=args.backend, device=args.device, precision=args.precision,
                     output="gray" if args.gray else "bgr", threads=threads)
    workers: list[dict[str, Any]] = []
    cluster: dict[str, Any] = {}
    ran: list[ItemResult] = []
    if todo:
        from dstfuse_stream.batch.ray_runner import RayOptions, run_on_ray

        options = RayOptions(address=args.ray_address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                             gpus_per_worker=args.num_gpus_per_worker)

        def on_result(result: ItemResult) -> None:
            if result.status == "failed":
                _say(f"failed {result.key}: {result.error}", err=True)

        run = run_on_ray(todo, spec=spec, settings=settings, token=uuid.uuid4().hex, options=options,
                         progress=not args.no_progress and sys.stderr.isatty(), on_result=on_result)
        ran, workers, cluster = run.results, run.workers, run.cluster
    wall_s = time.perf_counter() - t0
    by_key = {r.key: r for r in [*skipped, *ran]}
    results = [by_key[item.key] for item in items if item.key in by_key]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    frames = sum(r.frames for r in ran)
    summary = {
        "command": [PROG, *argv],
        "totals": {"sequences": len(sequences), "work_items": len(items), **counts, "frames": frames,
                   "frames_skipped": sum(r.frames for r in skipped), "wall_s": wall_s,
                   "fps": frames / wall_s if wall_s > 0 else 0.0},
        "workers": workers,
        "cluster": cluster,
        "settings": settings.to_dict(),
        "fuser": asdict(spec),
        "items": [r.to_dict() for r in results],
    }
    summary_path = Path(args.summary_json) if args.summary_json else Path(args.out) / SUMMARY_NAME
    _write_summary(summary_path, summary)
    _say(f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']} of {len(items)} work item(s); "
         f"{frames} frames fused in {wall_s:.1f} s")
    for w in workers:
        _say(f"worker {w['worker']} ({w['host']} pid {w['pid']}, {w['backend']}): {w['items']} item(s), "
             f"{w['frames']} frames, {w['fps']:.2f} fps, model loaded {w['fuser_loads']}x")
    for r in results:
        if r.warning:
            _say(f"warning {r.key}: {r.warning}", err=True)
    _say(f"summary: {summary_path}")
    if counts["failed"]:
        _say(f"error: {counts['failed']} of {len(items)} work item(s) failed (listed above); the others finished. "
             "Run the same command again to retry them.", err=True)
        return EXIT_USER_ERROR
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``dstfuse-batch``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    package_logger = logging.getLogger("dstfuse_stream")
    level = package_logger.level
    package_logger.setLevel(getattr(logging, args.log_level))  # this project's loggers, not every library's
    try:
        return run_command(PROG, _run, args, argv)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (ray_runner.Terminated)
        _say("interrupted: finished outputs kept, unfinished ones removed; run the same command again to resume", err=True)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        package_logger.setLevel(level)  # main() may be called in-process (tests, embedding)


if __name__ == "__main__":
    sys.exit(main())
