"""``dstfuse-bench``: model-only latency per backend/preset/resolution and end-to-end pipeline timings.

``dstfuse-bench realtime ...`` is the real-time table instead (precisions, work scales, fidelity,
the README clip through the pipeline): :mod:`dstfuse_bench.realtime_cli`.

Writes into ``--out`` (default ``outputs/bench``):

* ``results.json``: machine info (CPU, cores, threads, GPU, versions, load averages), settings, the
  exact command, params/MACs per preset, every model-only case, every clip benchmark;
* ``latency_vs_pixels.png``: median latency vs pixels per backend and preset (log-log);
* ``results.md``: the same numbers as Markdown tables;
* ``timing/<clip>_timing.jsonl``: the pipeline's own per-frame timing logs.

``--quick`` runs a small, fast configuration (lite only, tiny sizes, few iterations, a short
synthetic clip, no real clip); any option given explicitly overrides it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from dstfuse_stream.checkpoint import default_weights_path, load_model
from dstfuse_stream.cliutil import run_command
from dstfuse_stream.config import PRESETS, get_config
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.geometry import parse_size_wh
from dstfuse_stream.model import DSTFuse
from dstfuse_stream.model_stats import count_macs, count_params
from dstfuse_stream.sinks import write_json

from .clips import write_synthetic_pair
from .machine import load_average, machine_info
from .model_bench import (
    BACKEND_SPECS,
    CaseSettings,
    backend_unavailable_reason,
    build_backend,
    onnx_exporter,
    run_model_benchmarks,
)
from .pipeline_bench import run_clip_benchmark
from .plot import plot_latency_vs_pixels
from .report import markdown_report

__all__ = ["main", "build_parser", "resolve_settings", "DEFAULT_REAL_CLIP", "QUICK", "FULL"]

logger = logging.getLogger(__name__)

#: The real synchronized pair used by default (151 frames, 640 x 480), beside the repository.
DEFAULT_REAL_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sequences" / "m3svd_0111_1716"

FULL: dict[str, Any] = {
    "presets": "stream,lite,paper",
    "backends": "torch,torch-compile,onnx-t1,onnx-t2,torch-cuda,onnx-cuda,tensorrt",
    "resolutions": "320x256,640x512,1280x1024",
    "warmup": 2,
    "iters": 20,
    "min_iters": 3,
    "max_case_s": 20.0,
    "synthetic_frames": 30,
    "synthetic_size": "320x256",
    "real_frames": 20,
    "model_iters": 5,
}
QUICK: dict[str, Any] = {
    "presets": "lite",
    "backends": "torch,onnx-t2",
    "resolutions": "64x48,128x96",
    "warmup": 1,
    "iters": 3,
    "min_iters": 2,
    "max_case_s": 2.0,
    "synthetic_frames": 4,
    "synthetic_size": "64x48",
    "real_frames": 0,
    "model_iters": 2,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dstfuse-bench",
        description="Latency/throughput of DSTFuse per backend, preset and resolution, and of the streaming pipeline.",
    )
    p.add_argument("--quick", action="store_true", help="small fast run (lite, tiny sizes, few iterations)")
    p.add_argument("--out", default="outputs/bench", help="output folder (default: outputs/bench)")
    p.add_argument("--presets", help=f"comma list of model presets (full: {FULL['presets']})")
    p.add_argument("--backends", help=f"comma list of {list(BACKEND_SPECS)} (full: all; unavailable ones are skipped)")
    p.add_argument(
        "--backends-for", action="append", default=[], metavar="PRESET=LIST",
        help="backends for one preset, e.g. paper=torch,onnx-t2 (repeatable; overrides --backends for it)",
    )
    p.add_argument("--resolutions", help=f"comma list of WxH (full: {FULL['resolutions']})")
    p.add_argument("--warmup", type=int, help="untimed calls per case (full: 2)")
    p.add_argument("--iters", type=int, help="maximum timed calls per case (full: 20)")
    p.add_argument("--min-iters", type=int, help="minimum timed calls per case (full: 3)")
    p.add_argument("--max-case-s", type=float, help="stop timing a case after this many seconds once --min-iters are done (full: 20)")
    p.add_argument("--skip-over-s", type=float, default=None,
                   help="skip a case predicted (from the previous size) to need more seconds than this")
    p.add_argument("--weights", help="checkpoint to time for its preset (default: the shipped weights, for their preset)")
    p.add_argument("--random-weights", action="store_true", help="random-init weights for every preset")
    p.add_argument("--no-model", action="store_true", help="skip the model-only section")
    p.add_argument("--no-pipeline", action="store_true", help="skip the end-to-end section")
    p.add_argument("--synthetic-frames", type=int, help="frames of the generated clip (0: skip; full: 30)")
    p.add_argument("--synthetic-size", help="WxH of the generated clip (full: 320x256)")
    p.add_argument("--real-clip", default=str(DEFAULT_REAL_CLIP), help="folder with ir.mp4 and vi.mp4")
    p.add_argument("--real-frames", type=int, help="frames of the real clip to fuse (0: skip; full: 20)")
    p.add_argument("--pipeline-backend", default="auto", choices=list(BACKEND_SPECS),
                   help="backend of the end-to-end runs (default auto: what dstfuse-stream uses by default)")
    p.add_argument("--pipeline-preset", default="stream", choices=sorted(PRESETS), help="preset of the end-to-end runs")
    p.add_argument("--model-iters", type=int, help="timed model-only calls before and after the end-to-end runs (full: 5)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for the whole run (default: torch's default, one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Fill options left unset from :data:`QUICK` or :data:`FULL` and validate them."""
    base = QUICK if args.quick else FULL
    s = {key: getattr(args, key) if getattr(args, key) is not None else default for key, default in base.items()}
    presets = _csv(s["presets"])
    for name in presets:
        get_config(name)  # raises ConfigError for an unknown preset
    backends = _csv(s["backends"])
    per_preset = {name: list(backends) for name in presets}
    for item in args.backends_for:
        name, sep, labels = item.partition("=")
        if not sep or name not in per_preset:
            raise ConfigError(f"--backends-for {item!r}: expected PRESET=LIST with PRESET one of {presets}")
        per_preset[name] = _csv(labels)
    for labels in per_preset.values():
        unknown = [b for b in labels if b not in BACKEND_SPECS]
        if unknown:
            raise ConfigError(f"backends {unknown}: expected some of {list(BACKEND_SPECS)}")
    if s["warmup"] < 0 or s["iters"] < 1 or not 1 <= s["min_iters"] <= s["iters"]:
        raise ConfigError("expected --warmup >= 0, --iters >= 1 and 1 <= --min-iters <= --iters")
    return {
        **s,
        "presets": presets,
        "backends": per_preset,
        "resolutions": [parse_size_wh(r) for r in _csv(s["resolutions"])],
        "synthetic_size": parse_size_wh(s["synthetic_size"]),
        "skip_over_s": args.skip_over_s,
        "real_clip": args.real_clip,
        "pipeline_backend": args.pipeline_backend,
        "pipeline_preset": args.pipeline_preset,
        "weights_path": args.weights,
        "random_weights": args.random_weights,
        "seed": args.seed,
        "quick": args.quick,
    }


def _load_models(presets: list[str], *, weights_path: str | None, random_weights: bool, seed: int) -> tuple[dict[str, DSTFuse], dict[str, str]]:
    models: dict[str, DSTFuse] = {}
    origin: dict[str, str] = {}
    if not random_weights:
        path = Path(weights_path) if weights_path else default_weights_path()
        if weights_path or path.is_file():
            model = load_model(path)
            if model.config.name in presets:
                models[model.config.name] = model.eval()
                origin[model.config.name] = str(path) if weights_path else f"shipped ({path.name})"
            else:
                logger.warning("weights %s are preset %r, not one of %s: not used", path, model.config.name, presets)
    for name in presets:
        if name not in models:
            torch.manual_seed(seed)
            models[name] = DSTFuse(get_config(name)).eval()
            origin[name] = f"random (seed {seed})"
    return {name: models[name] for name in presets}, origin


def _model_info(model: DSTFuse, weights: str) -> dict[str, Any]:
    side = 64  # MACs scale exactly with pixels for sizes that are multiples of 4
    macs = count_macs(model, (1, 1, side, side), (1, 1, side, side))
    return {"params": count_params(model), "weights": weights, "macs_per_pixel": macs / side**2, "config": model.config.to_dict()}


def _print_row(row: dict[str, Any]) -> None:
    size = f"{row['width']}x{row['height']}"
    if row["status"] == "ok":
        print(
            f"  {row['preset']:5s} {row['backend']:13s} {size:>9s}  median {row['median_ms']:9.1f} ms  "
            f"p90 {row['p90_ms']:9.1f}  fps {row['fps']:8.2f}  n={row['n']}  peak +{row['peak_mem_delta_mib']:.0f} MiB",
            flush=True,
        )
    else:
        print(f"  {row['preset']:5s} {row['backend']:13s} {size:>9s}  {row['status']}: {row['reason']}", flush=True)


def _run_clips(
    settings: dict[str, Any], model: DSTFuse, *, workdir: Path, timing_dir: Path, exports: dict[str, Path]
) -> list[dict[str, Any]]:
    spec = BACKEND_SPECS[settings["pipeline_backend"]]
    clips: list[tuple[str, Path | None, int, str | None]] = []
    if settings["synthetic_frames"] > 0:
        clip = write_synthetic_pair(
            workdir / "synthetic", frames=settings["synthetic_frames"], resolution_wh=settings["synthetic_size"], seed=settings["seed"]
        )
        clips.append(("synthetic", clip.ir_path.parent, settings["synthetic_frames"], None))
    if settings["real_frames"] > 0:
        folder = Path(settings["real_clip"])
        missing = None if (folder / "ir.mp4").is_file() and (folder / "vi.mp4").is_file() else f"{folder}/ir.mp4 or vi.mp4 not found"
        clips.append(("real_" + folder.name, folder, settings["real_frames"], missing))
    reason = backend_unavailable_reason(spec)
    results = []
    for label, folder, frames, missing in clips:
        if missing or reason:
            results.append({"label": label, "status": "skipped", "reason": missing or reason})
            print(f"  {label}: skipped ({missing or reason})", flush=True)
            continue
        from dstfuse_stream.sources import VideoFileSource

        with VideoFileSource(folder / "vi.mp4") as probe:
            size_wh = probe.size_wh
        backend = None
        try:
            backend = build_backend(
                spec, model, resolution_wh=size_wh, onnx_path=onnx_exporter(model, workdir / "onnx", settings["pipeline_preset"], exports)
            )
            result = run_clip_benchmark(
                label, folder / "ir.mp4", folder / "vi.mp4", backend, workdir=workdir / label, timing_dir=timing_dir,
                max_frames=frames, model_iters=settings["model_iters"],
            )
        except Exception as exc:  # noqa: BLE001 - recorded; the other clip and the report still run
            logger.warning("clip %s failed", label, exc_info=True)
            results.append({"label": label, "status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip()[:500]}"})
            print(f"  {label}: failed ({type(exc).__name__}: {exc})", flush=True)
            continue
        finally:
            if backend is not None:
                backend.close()
        result["status"] = "ok"
        result["load_average"] = load_average()
        results.append(result)
        p = result["pipeline"]
        print(
            f"  {label}: {p['frames']} frames {result['clip']['size_wh']}: model-only {result['model_only']['fps']:.2f} fps, "
            f"pipeline {p['fps']:.2f} fps, naive {result['naive']['fps']:.2f} fps, "
            f"pipeline/model {result['ratios']['pipeline_over_model_only_fps']:.2f}, "
            f"pipeline/naive {result['ratios']['pipeline_over_naive_fps']:.2f}",
            flush=True,
        )
    return results


def _configure_logging(verbose: bool) -> dict[str, int]:
    """Progress from ``dstfuse_bench`` at INFO, library chatter at WARNING; returns the previous levels."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    level = logging.DEBUG if verbose else logging.INFO
    previous = {}
    for name in ("dstfuse_bench", "dstfuse_stream"):
        previous[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(level if verbose or name == "dstfuse_bench" else logging.WARNING)
    return previous


def run(settings: dict[str, Any], *, out: Path, command: str) -> dict[str, Any]:
    """Run the configured benchmarks and write ``results.json``, ``results.md`` and the plot into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema": "dstfuse-bench/1",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "complete": False,
        "machine": machine_info(),
        "load_average": {"start": load_average(), "end": None},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        "models": {},
        "model_only": [],
        "pipeline": [],
        "notes": [
            "model_only: backend.fuse_batch on float32 (1,1,H,W) arrays; median/p90/p99 over timed calls after warm-up; "
            "fps = calls / total timed seconds; peak_mem_delta_mib = peak RSS (VmHWM reset per case) minus RSS at case start",
            "pipeline: stages from the pipeline's own timing log; model_only there = backend.fuse at the clip's size",
        ],
    }
    json_path = out / "results.json"
    wants_clips = not settings["no_pipeline"] and (settings["real_frames"] > 0 or settings["synthetic_frames"] > 0)
    presets = list(dict.fromkeys(settings["presets"] + ([settings["pipeline_preset"]] if wants_clips else [])))
    models, origin = _load_models(presets, weights_path=settings["weights_path"], random_weights=settings["random_weights"], seed=settings["seed"])
    result["models"] = {name: _model_info(models[name], origin[name]) for name in presets}
    with tempfile.TemporaryDirectory(prefix="dstfuse-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "onnx").mkdir()
        exports: dict[str, Path] = {}  # preset -> ONNX export, shared by both sections
        if not settings["no_pipeline"]:
            print(f"end to end ({settings['pipeline_preset']}, {settings['pipeline_backend']}):", flush=True)
            result["pipeline"] = _run_clips(settings, models[settings["pipeline_preset"]], workdir=workdir, timing_dir=out / "timing", exports=exports)
            write_json(json_path, result)
        if not settings["no_model"]:
            print("model only:", flush=True)

            def record(row: dict[str, Any]) -> None:
                row["load_average"] = load_average()
                result["model_only"].append(row)
                _print_row(row)
                write_json(json_path, result)

            run_model_benchmarks(
                {name: models[name] for name in settings["presets"]},
                backends=settings["backends"],
                resolutions=settings["resolutions"],
                settings=CaseSettings(
                    warmup=settings["warmup"], iters=settings["iters"], min_iters=settings["min_iters"],
                    max_case_s=settings["max_case_s"], skip_over_s=settings["skip_over_s"], seed=settings["seed"],
                ),
                workdir=workdir / "onnx",
                exports=exports,
                weights=origin,
                on_result=record,
            )
    result["load_average"]["end"] = load_average()
    result["wall_s"] = time.perf_counter() - started
    result["complete"] = True
    write_json(json_path, result)
    if importlib.util.find_spec("matplotlib") is None:
        logger.warning("matplotlib is not installed: no latency_vs_pixels.png (pip install 'dstfuse-stream[plots]')")
    else:
        plot_latency_vs_pixels(
            result["model_only"], out / "latency_vs_pixels.png",
            title=f"DSTFuse model-only latency, batch 1 ({result['machine']['cpu_model']}, GPU {result['machine']['gpu']})",
        )
    (out / "results.md").write_text(markdown_report(result) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "dstfuse-bench " + " ".join(shlex.quote(a) for a in argv_list)
    if argv_list[:1] == ["realtime"]:
        from . import realtime_cli

        previous_levels = _configure_logging("-v" in argv_list or "--verbose" in argv_list)
        try:
            return run_command("dstfuse-bench", realtime_cli.main, argv_list[1:], command)
        finally:
            for name, level in previous_levels.items():
                logging.getLogger(name).setLevel(level)
    args = build_parser().parse_args(argv_list)
    previous_levels = _configure_logging(args.verbose)
    previous_threads = torch.get_num_threads()
    try:
        return run_command("dstfuse-bench", _bench, args, command)
    finally:
        torch.set_num_threads(previous_threads)
        for name, level in previous_levels.items():  # main() may run inside a larger program (tests)
            logging.getLogger(name).setLevel(level)


def _bench(args: argparse.Namespace, command: str) -> int:
    settings = resolve_settings(args)
    settings["no_model"], settings["no_pipeline"] = args.no_model, args.no_pipeline
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            raise ConfigError(f"--torch-threads: expected >= 1, got {args.torch_threads}")
        torch.set_num_threads(args.torch_threads)
    settings["torch_threads"] = torch.get_num_threads()
    out = Path(args.out)
    result = run(settings, out=out, command=command)
    written = [out / name for name in ("results.json", "results.md", "latency_vs_pixels.png") if (out / name).is_file()]
    print(f"wrote {', '.join(map(str, written))} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
