"""``python3 -m benchmarks.gpu_run``: the one prepared GPU run, under a hard time budget.

One command (see ``docs/gpu.md`` for the exact device command line) runs six stages in order, each
in its own child process with its own deadline (:mod:`.gpu_stages`):

=========  ======  ===========================================================================
stage      share   what
=========  ======  ===========================================================================
probe       3 %    machine, versions, GPU, nvidia-smi, copy bandwidth and bf16 matmul rate
tests       5 %    the ``gpu``-marked tests
train      50 %    the paper preset, bf16 autocast, degradation-aware recipe -> fp16 shards + card
stream      7 %    ``stream(...)`` on the carried clip vs the model alone: fps, p50/p99, stages
models     14 %    model only: presets x sizes x batches x fp32/fp16/bf16 x NCHW/channels_last
compile    21 %    model only under ``torch.compile`` (max-autotune with and without CUDA graphs...)
=========  ======  ===========================================================================

A stage's share is of the time left when it starts (what an earlier stage leaves unused goes to the
later ones). At its deadline a stage is sent SIGTERM (training saves and exports what it has), then
SIGKILL after a grace period; whatever it recorded is kept, and the next stage runs. A child process per
stage makes the budget hard (a compile or a hung kernel can be killed) and keeps a CUDA fault in one
stage out of the next. After every stage ``gpu.json`` is rewritten in ``--out``, so a run cut short
still returns its figures. ``--out`` also gets the paper weights as fp16 shards (<= 15 MiB each), their
training card, the loss plot and ``run.log``; the files are kept within the device tool's limits (8
files, 16 MiB each).

``--rehearse`` runs the same stages on the CPU with tiny sizes and budgets (fp16 and CUDA graphs skipped
with their reason, ``torch.compile`` with its ``eager`` backend), so the device run cannot fail on a
typo. From a bare source checkout (the device machine: nothing installed) the tool folders are found
through :mod:`.source_tree`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .source_tree import REPO_ROOT, alias_tool_packages

__all__ = ["STAGES", "DEVICE", "REHEARSE", "allowance_s", "headline", "fit_out_limits", "resolve_settings", "main"]

logger = logging.getLogger(__name__)

#: Stages in run order with their share of the time left when they start.
STAGES: tuple[tuple[str, float], ...] = (
    ("probe", 0.03), ("tests", 0.05), ("train", 0.50), ("stream", 0.07), ("models", 0.14), ("compile", 0.21),
)
#: Seconds kept back from the budget for writing the report at the end.
RESERVE_S = 5.0
#: Files in ``--out`` in the order they are kept when the device tool's limits force a choice.
OUT_PRIORITY = ("gpu.json", "dstfuse_*-*-of-*.pt", "dstfuse_*.json", "run.log", "losses.png")
OUT_LIMITS = {"max_files": 8, "max_file_bytes": 16 * 2**20, "max_total_bytes": 64 * 2**20}

_ALL_EAGER = [f"{p}/{layout}/eager" for p in ("fp16", "bf16", "fp32") for layout in ("cl", "nchw")]
_CL_EAGER = ["fp16/cl/eager", "bf16/cl/eager", "fp32/cl/eager"]
_MODELS = ["paper", "stream", "stream@0.5", "lite"]

#: Settings of the device run (``--set KEY=JSON`` overrides any of them).
DEVICE: dict[str, Any] = {
    "device": "cuda", "compile_backend": "inductor", "seed": 0, "carry": str(REPO_ROOT / ".carry"),
    "child_margin_s": 5.0, "grace_s": 20.0, "min_stage_s": 15.0,
    "probe_copy_mib": 2048, "probe_matmul_n": 8192,
    "probe_hang_s": 0.0,  # fault injection for tests: the probe sleeps this long (a stage that overruns its deadline)
    "model_blocks": [  # in order of importance: what the time does not reach is reported as skipped
        {"sizes": ["640x512"], "batches": [1], "models": _MODELS, "variants": _ALL_EAGER},
        {"sizes": ["1280x1024"], "batches": [1], "models": _MODELS, "variants": _CL_EAGER},
        {"sizes": ["640x512"], "batches": [8], "models": _MODELS, "variants": [*_CL_EAGER, "fp16/nchw/eager"]},
        {"sizes": ["1280x1024"], "batches": [8], "models": _MODELS, "variants": _CL_EAGER[:2]},
        {"sizes": ["640x512"], "batches": [8], "models": _MODELS, "variants": ["bf16/nchw/eager", "fp32/nchw/eager"]},
    ],
    "compile_cases": [
        ["paper", "640x512", 1, "fp16/cl/max-autotune-no-cudagraphs"],
        ["paper", "640x512", 1, "fp16/cl/max-autotune"],
        ["paper", "640x512", 1, "bf16/cl/max-autotune-no-cudagraphs"],
        ["paper", "640x512", 1, "bf16/cl/max-autotune"],
        ["paper", "640x512", 1, "fp16/cl/reduce-overhead"],
        ["paper", "640x512", 8, "fp16/cl/max-autotune-no-cudagraphs"],
        ["stream@0.5", "640x512", 1, "fp16/cl/reduce-overhead"],
        ["lite", "640x512", 1, "fp16/cl/reduce-overhead"],
    ],
    "warmup": 3, "min_iters": 5, "max_iters": 300, "case_target_s": 0.25, "sync_iters": 5, "min_case_s": 2.0,
    "headline_model": "paper", "headline_size": "640x512", "headline_batches": [1, 8],
    "stream_model": "paper", "stream_variants": ["runtime", "fp16/cl/eager", "bf16/cl/eager"], "stream_reader": "auto",
    "stream_max_frames": None, "stream_max_size": None, "stream_model_iters": 30, "stream_warmup": 5, "stream_min_variant_s": 8.0,
    "stream_encode": True,
    "train_roots": None, "train_preset": "paper", "train_autocast": "bf16", "train_crop": 256, "train_batch": 16, "train_lr": 5e-4,
    "train_lr_schedule": "cosine", "train_grad_clip": 1.0, "train_epochs": 15, "train_recon_epochs": 3, "train_fusion_epochs": 3,
    "train_cst_epochs": 10, "train_blur_prob": 0.5, "train_max_side": 640, "train_channels_last": True, "train_threads": 4,
    "train_frame_step": 3, "train_calib_steps": 3, "train_reserve_s": 15.0, "train_max_crops": None, "shard_mib": 15,
    "train_note": None,
}
#: The rehearsal: the same stages on the CPU, tiny.
REHEARSE: dict[str, Any] = {
    **DEVICE,
    "device": "cpu", "compile_backend": "eager", "child_margin_s": 1.0, "grace_s": 5.0, "min_stage_s": 10.0,
    "probe_copy_mib": 16, "probe_matmul_n": 256,
    "model_blocks": [
        {"sizes": ["22x14"], "batches": [1], "models": ["paper", "lite"],
         "variants": ["fp32/nchw/eager", "fp16/cl/eager", "bf16/cl/eager"]},
        {"sizes": ["22x14"], "batches": [2], "models": ["lite", "stream@0.5"], "variants": ["fp32/cl/eager"]},
    ],
    "compile_cases": [["lite", "22x14", 1, "fp32/cl/max-autotune-no-cudagraphs"], ["lite", "22x14", 1, "fp32/cl/max-autotune"]],
    "warmup": 1, "min_iters": 2, "max_iters": 3, "case_target_s": 0.02, "sync_iters": 1, "min_case_s": 0.5,
    "headline_size": "22x14", "headline_batches": [1, 2],
    "stream_model": "lite", "stream_variants": ["runtime", "bf16/cl/eager"], "stream_max_frames": 4, "stream_max_size": 64,
    "stream_model_iters": 2, "stream_warmup": 1, "stream_min_variant_s": 1.0,
    # lite, not paper: bf16 training steps of the paper preset take seconds on a CPU; small shards force several
    "train_roots": ["msrs", "m3fd"], "train_preset": "lite", "shard_mib": 0.4, "train_crop": 32, "train_batch": 2, "train_threads": 2,
    "train_frame_step": 1000, "train_calib_steps": 1, "train_reserve_s": 3.0, "train_max_crops": 1,
    "train_epochs": 3, "train_recon_epochs": 1, "train_fusion_epochs": 1, "train_cst_epochs": 2,
}


def allowance_s(weights_left: Sequence[float], remaining_s: float, *, floor_s: float = 0.0) -> float:
    """Seconds for the next stage: its weight's share of ``remaining_s`` among the stages still to run,
    at least ``floor_s`` (a process must start and import torch) and at most ``remaining_s``."""
    remaining_s = max(0.0, remaining_s)
    return min(remaining_s, max(floor_s, remaining_s * weights_left[0] / sum(weights_left)))


def resolve_settings(*, rehearse: bool, overrides: Sequence[str], carry: str | None) -> dict[str, Any]:
    """:data:`DEVICE` or :data:`REHEARSE` with ``KEY=JSON`` overrides (a value that is not JSON is a string)."""
    from dstfuse_stream.errors import ConfigError

    settings = dict(REHEARSE if rehearse else DEVICE)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in settings:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(settings)}")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    if carry is not None:
        settings["carry"] = str(Path(carry).resolve())
    return settings


# ---------------------------------------------------------------------------------------------- children


def _pump(stream: IO[str], name: str, log: IO[str]) -> None:
    for line in stream:
        text = f"[{name}] {line}"
        sys.stdout.write(text)
        sys.stdout.flush()
        log.write(text)
        log.flush()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_stage_process(name: str, *, allowance: float, work: Path, out: Path, grace_s: float, log: IO[str]) -> dict[str, Any]:
    """Run stage ``name`` in a child process with ``allowance`` seconds; return its result and how it ended."""
    deadline = time.time() + allowance
    flags = ["-S"] if sys.flags.no_site else []  # a child sees the same packages as this process
    cmd = [sys.executable, *flags, "-m", __spec__.name, "--child", name, "--work", str(work), "--out", str(out),
           "--deadline-unix", repr(deadline)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    pump = threading.Thread(target=_pump, args=(proc.stdout, name, log), daemon=True)
    pump.start()
    ended = "exited"
    try:
        proc.wait(timeout=allowance + 1.0)
    except subprocess.TimeoutExpired:
        ended = "terminated at its deadline"
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            ended = "killed after the grace period"
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
    wall_s = time.monotonic() - t0
    _kill_group(proc, signal.SIGKILL)  # leftovers of the stage (compile workers...)
    pump.join(timeout=5.0)
    path = work / f"stage_{name}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    status = result.get("status", "failed")
    if ended != "exited":
        status = "timeout"
    elif proc.returncode != 0 and status == "ok":
        status = "failed"
    return {**result, "status": status, "ended": ended, "exit_code": proc.returncode, "allowance_s": allowance, "wall_s": wall_s}


def child_main(args: argparse.Namespace) -> int:
    from .gpu_stages import StageContext, run_stage

    settings = json.loads((Path(args.work) / "settings.json").read_text())
    ctx = StageContext(args.child, settings, Path(args.work), Path(args.out), float(args.deadline_unix))
    return run_stage(ctx)


# ---------------------------------------------------------------------------------------------- report


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(rows, key=lambda r: r["fps"]) if rows else None


def headline(stages: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, from the stage results.

    ``paper_fps_<W>x<H>``: the highest batch-1 fps of the headline model at the headline size over all
    model-only rows (eager and compiled) whose output passed its parity gate, with the row's variant;
    ``..._batch8``: the same at batch 8 (the other ``headline_batches``). ``pipeline_*``: the stream variant with the highest pipeline fps.
    """
    model, size = settings["headline_model"], settings["headline_size"]
    width, height = (int(v) for v in size.split("x"))
    rows = [r for name in ("models", "compile") for r in stages.get(name, {}).get("rows", [])]
    ok = [r for r in rows if r.get("status") == "ok" and r.get("parity_ok") and r["model"] == model
          and (r["width"], r["height"]) == (width, height)]
    out: dict[str, Any] = {}
    for batch in settings["headline_batches"]:
        suffix = "" if batch == 1 else f"_batch{batch}"
        best = _best([r for r in ok if r["batch"] == batch])
        out[f"{model}_fps_{size}{suffix}"] = None if best is None else best["fps"]
        out[f"{model}_fps_{size}{suffix}_config"] = None if best is None else {
            k: best[k] for k in ("variant", "batch", "median_ms", "sync_median_ms", "rel_err", "peak_mem_mib", "tflops")}
    runs = [r for r in stages.get("stream", {}).get("rows", []) if r.get("status") == "ok" and not r.get("encode")]
    best_run = max(runs, key=lambda r: r["pipeline"]["fps"]) if runs else None
    out["pipeline_variant"] = None if best_run is None else best_run["variant"]
    out["pipeline_fps"] = None if best_run is None else best_run["pipeline"]["fps"]
    out["pipeline_over_model"] = None if best_run is None else best_run["pipeline_over_model"]
    out["pipeline_p50_ms"] = None if best_run is None else best_run["pipeline"]["latency_ms"].get("p50")
    out["pipeline_p99_ms"] = None if best_run is None else best_run["pipeline"]["latency_ms"].get("p99")
    fps = out[f"{model}_fps_{size}"]
    out["targets"] = {
        f"{model}_fps_{size} >= 120": None if fps is None else fps >= 120,
        "pipeline_over_model >= 0.9": None if out["pipeline_over_model"] is None else out["pipeline_over_model"] >= 0.9,
        "pipeline_p99_ms < 25": None if out["pipeline_p99_ms"] is None else out["pipeline_p99_ms"] < 25,
    }
    return out


def _priority(path: Path) -> int:
    for rank, pattern in enumerate(OUT_PRIORITY):
        if path.match(pattern):
            return rank
    return len(OUT_PRIORITY)


def fit_out_limits(out: Path, *, max_files: int, max_file_bytes: int, max_total_bytes: int) -> list[str]:
    """Make ``out`` fit the device tool's limits: truncate ``*.log`` files to their tail, then drop files
    (lowest :data:`OUT_PRIORITY` first) while there are too many, one is too large, or all are; return notes."""
    notes = []
    files = sorted((p for p in out.rglob("*") if p.is_file()), key=lambda p: (_priority(p), p.name))
    for path in files:
        size = path.stat().st_size
        if path.suffix == ".log" and size > max_file_bytes:
            with open(path, "rb") as fh:
                fh.seek(size - max_file_bytes // 2)
                tail = fh.read()
            path.write_bytes(b"[... truncated ...]\n" + tail)
            notes.append(f"{path.name}: truncated to its last {len(tail)} bytes")
    kept: list[Path] = []
    total = 0
    for path in files:
        size = path.stat().st_size
        if len(kept) >= max_files or size > max_file_bytes or total + size > max_total_bytes:
            path.unlink()
            notes.append(f"{path.name}: removed ({size} bytes) to stay within {max_files} files / {max_file_bytes} bytes each / "
                         f"{max_total_bytes} in all")
            continue
        kept.append(path)
        total += size
    return notes


def _write_report(path: Path, report: dict[str, Any]) -> None:
    from dstfuse_stream.sinks import write_json  # imported by _run before the clock starts

    tmp = path.with_name(path.name + ".tmp")
    write_json(tmp, report)
    os.replace(tmp, path)


def _print_summary(report: dict[str, Any]) -> None:
    print("\n=== gpu_run summary ===")
    for name, stage in report["stages"].items():
        extra = stage.get("error") or stage.get("reason") or ""
        print(f"  {name:8s} {stage['status']:8s} {stage.get('wall_s', 0):6.1f} s of {stage.get('allowance_s', 0):6.1f} s  {extra}"[:200])
    for key, value in report["headline"].items():
        if not key.endswith("_config"):
            print(f"  {key}: {value}")
    print(f"  report: {report['out']}/gpu.json", flush=True)


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_run", description="The one prepared GPU run (see docs/gpu.md).")
    p.add_argument("--out", required=True, help="folder for gpu.json, weights shards, card, loss plot, run.log ($OUT on the device)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="hard time budget of the whole run (default 540; rehearsal 600: a cap, its stages end when done)")
    p.add_argument("--rehearse", action="store_true", help="the same stages on the CPU, tiny (a minute)")
    p.add_argument("--stages", default=",".join(n for n, _ in STAGES), help="comma list of stages to run (default: all, in order)")
    p.add_argument("--carry", default=None, help="carried inputs: clip/, train/ (default: .carry in the repository)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON", help="override one setting (repeatable)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--deadline-unix", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    aliased = alias_tool_packages()
    if args.child:
        return child_main(args)
    from dstfuse_stream.cliutil import run_command

    return run_command("gpu_run", _run, args, argv, aliased)


def _run(args: argparse.Namespace, argv: list[str], aliased: list[str]) -> int:
    import dstfuse_stream.sinks  # noqa: F401 - the report writer; its imports (numpy, OpenCV) stay out of the stages' time
    from dstfuse_stream.errors import ConfigError

    selected = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in selected if s not in dict(STAGES)]
    if unknown:
        raise ConfigError(f"--stages: unknown {unknown}; expected some of {[n for n, _ in STAGES]}")
    settings = resolve_settings(rehearse=args.rehearse, overrides=args.overrides, carry=args.carry)
    budget_s = args.budget_s if args.budget_s is not None else (600.0 if args.rehearse else 540.0)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="dstfuse-gpu-run-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    started = time.time()
    deadline = started + budget_s
    report: dict[str, Any] = {
        "schema": 1, "rehearse": args.rehearse, "command": f"python3 -m {__spec__.name} {shlex.join(argv)}",
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": budget_s,
        "source_tree_aliases": aliased, "out": str(out), "work": str(work), "settings": settings, "stages": {}, "headline": {},
    }
    names = [n for n, _ in STAGES if n in selected]
    with open(out / "run.log", "a") as log:
        for i, name in enumerate(names):
            weights_left = [w for n, w in STAGES if n in names[i:]]
            allowance = allowance_s(weights_left, deadline - time.time() - RESERVE_S, floor_s=settings["min_stage_s"])
            logger.info("stage %s: %.0f s", name, allowance)
            if allowance < 1.0:
                report["stages"][name] = {"status": "skipped", "reason": "no time left in the budget", "allowance_s": allowance}
            else:
                report["stages"][name] = run_stage_process(name, allowance=allowance, work=work, out=out,
                                                           grace_s=settings["grace_s"], log=log)
            probe = report["stages"].get("probe", {})
            report["device"] = (probe.get("facts", {}).get("gpu") or {}).get("name") or settings["device"]
            report["versions"] = probe.get("facts")
            report["headline"] = headline(report["stages"], settings)
            report.update({k: v for k, v in report["headline"].items() if k != "targets"})
            report["wall_s"] = time.time() - started
            _write_report(out / "gpu.json", report)
    report["out_limits"] = fit_out_limits(out, **OUT_LIMITS)
    report["out_files"] = sorted(p.name for p in out.rglob("*") if p.is_file())
    _write_report(out / "gpu.json", report)
    _print_summary(report)
    return 0 if all(s["status"] == "ok" for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
