"""Scaling of ``dstfuse-batch`` with the number of Ray workers on one machine.

::

    python -m dstfuse_bench.batch_scaling INPUT... --configs 1x1 2x1 1x2 --max-size 320 --out outputs/batch_scaling

Each configuration ``WxT`` (W workers, T CPU threads and Ray CPUs each) runs the same
``dstfuse-batch`` command in its own process and local Ray runtime, into its own output folder with
``--force``, after one warm-up that makes the ONNX export the workers then find cached. Reported per
configuration: wall time of the whole command (Ray start, model loads and fusion), frames,
frames / wall, the workers' own fps (frames / time inside their items) and the speed-up over the
first configuration; plus the machine and its load averages before and after each run (on a shared
machine, treat the ratios as indicative). Writes ``results.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from dstfuse_stream.sinks import write_json

from .machine import load_average, machine_info

__all__ = ["main", "run_config"]


def _config(text: str) -> tuple[int, int]:
    workers, _, threads = text.lower().partition("x")
    try:
        parsed = int(workers), int(threads or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WORKERSxTHREADS such as 2x1, got {text!r}") from None
    if min(parsed) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return parsed


def run_config(inputs: Sequence[str], out: Path, *, workers: int, threads: int, extra: Sequence[str]) -> dict[str, Any]:
    """One ``dstfuse-batch`` run with ``workers`` x ``threads``; its timings and summary totals."""
    command = [sys.executable, "-m", "dstfuse_stream.batch.cli", *inputs, "--out", str(out), "--force", "--no-progress",
               "--workers", str(workers), "--cpus-per-worker", str(threads), "--threads", str(threads), *extra]
    env = {**os.environ, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "10000")}
    load_before = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"batch_scaling: {shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / "batch_summary.json").read_text())
    frames = summary["totals"]["frames"]
    return {
        "workers": workers, "threads_per_worker": threads, "command": shlex.join(command), "wall_s": wall_s,
        "frames": frames, "fps_wall": frames / wall_s,
        "worker_fps": [round(w["fps"], 3) for w in summary["workers"]],
        "worker_frames": [w["frames"] for w in summary["workers"]],
        "load_before": load_before, "load_after": load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_bench.batch_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="dstfuse-batch INPUTs")
    p.add_argument("--configs", nargs="+", type=_config, default=[(1, 1), (2, 1)], metavar="WxT",
                   help="workers x threads per worker (default: 1x1 2x1)")
    p.add_argument("--out", type=Path, default=Path("outputs/batch_scaling"))
    p.add_argument("--max-size", type=int, default=320, help="dstfuse-batch --max-size (default 320)")
    p.add_argument("--backend", default="auto")
    args = p.parse_args(argv)
    extra = ["--max-size", str(args.max_size), "--backend", args.backend]

    from dstfuse_stream.batch.job import FuserSpec

    FuserSpec(backend=args.backend).build().close()  # warm-up: the one-off ONNX export, cached for the workers
    runs = []
    for workers, threads in args.configs:
        runs.append(run_config(args.inputs, args.out / f"{workers}x{threads}", workers=workers, threads=threads, extra=extra))
        print(f"{workers}x{threads}: {runs[-1]['frames']} frames in {runs[-1]['wall_s']:.1f} s", file=sys.stderr)
    base = runs[0]["fps_wall"]
    for run in runs:
        run["speedup"] = run["fps_wall"] / base
    result = {"command": [p.prog, *(argv if argv is not None else sys.argv[1:])], "machine": machine_info(), "runs": runs}
    write_json(args.out / "results.json", result)
    print("| workers x threads | frames | wall s | frames / wall s | speed-up | per-worker fps | load avg before -> after |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['workers']} x {r['threads_per_worker']} | {r['frames']} | {r['wall_s']:.1f} | {r['fps_wall']:.2f} | "
              f"{r['speedup']:.2f}x | {', '.join(f'{f:.2f}' for f in r['worker_fps'])} | "
              f"{r['load_before'][0] if r['load_before'] else '?'} -> {r['load_after'][0] if r['load_after'] else '?'} |")
    print(f"results: {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
