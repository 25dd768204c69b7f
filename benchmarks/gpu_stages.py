"""The stages of the one-command GPU run; each runs in its own child process (see :mod:`.gpu_run`).

A stage function takes a :class:`StageContext` and records its results through it: every
:meth:`StageContext.record` / :meth:`StageContext.add_row` rewrites ``work/stage_<name>.json`` at once
(atomically), so a stage killed at its deadline still leaves everything it measured. Stages:

* ``probe``: machine, versions, GPU properties, ``nvidia-smi``, and two measured ceilings (a large
  device-to-device copy, a bf16 matrix product) against which the model's numbers can be judged;
* ``tests``: the ``gpu``-marked tests (pytest, in the child, after the source-tree aliases);
* ``train``: :func:`.gpu_train.train_preset` on the carried training subset;
* ``stream``: :func:`.gpu_stream.run_stream_variant` per backend variant on the carried clip;
* ``models`` / ``compile``: :func:`.gpu_models.run_cases` on the eager matrix / the ``torch.compile`` cases.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstfuse_stream.errors import SourceError
from dstfuse_stream.geometry import parse_size_wh
from dstfuse_stream.sinks import write_json

from .source_tree import REPO_ROOT

__all__ = ["StageContext", "STAGE_FUNCTIONS", "run_stage"]

logger = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage gets: its settings, folders and deadline (``time.time()`` seconds), and its result file."""

    name: str
    settings: dict[str, Any]
    work: Path
    out: Path
    deadline: float
    data: dict[str, Any] = field(default_factory=lambda: {"rows": []})

    @property
    def result_path(self) -> Path:
        return self.work / f"stage_{self.name}.json"

    @property
    def device(self) -> str:
        return self.settings["device"]

    def left_s(self) -> float:
        return self.deadline - time.time()

    def record(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def add_row(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        self.flush()

    def flush(self) -> None:
        tmp = self.result_path.with_name(self.result_path.name + ".tmp")
        write_json(tmp, self.data)
        os.replace(tmp, self.result_path)


# ---------------------------------------------------------------------------------------------- probe


def _nvidia_smi() -> str | None:
    query = "name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,clocks.sm,clocks.max.sm"
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    return done.stdout.strip() or done.stderr.strip()


def _import_status(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is what the probe reports
        return f"failed: {type(exc).__name__}: {exc}"
    return f"ok {getattr(module, '__version__', '')}".strip()


def measure_ceilings(device: str, *, copy_mib: int, matmul_n: int) -> dict[str, Any]:
    """Device-to-device copy bandwidth (bytes read + written) and bf16 matrix-product rate, medians."""
    import torch

    from .gpu_models import time_forward

    kwargs = {"device": device, "batch": 1, "warmup": 2, "min_iters": 5, "max_iters": 50, "target_s": 0.3, "sync_iters": 0}
    x = torch.rand(copy_mib * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    copy = time_forward(lambda: y.copy_(x), [()], **kwargs)
    a, b = (torch.randn(matmul_n, matmul_n, device=device, dtype=torch.bfloat16) for _ in range(2))
    matmul = time_forward(lambda: a @ b, [()], **kwargs)
    return {
        "copy_mib": copy_mib, "copy_gb_per_s": 2 * x.numel() * 4 / (copy["median_ms"] / 1e3) / 1e9,
        "matmul_n": matmul_n, "bf16_matmul_tflops": 2 * matmul_n**3 / (matmul["median_ms"] / 1e3) / 1e12,
    }


def stage_probe(ctx: StageContext) -> None:
    import torch

    from .machine import machine_info

    ctx.record("machine", machine_info())
    facts: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "imports": {name: _import_status(name) for name in ("triton", "av", "kornia", "onnxruntime", "cv2", "pytest")},
    }
    if ctx.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}", "memory_gib": props.total_memory / 2**30,
                        "multiprocessors": props.multi_processor_count}
        facts["nvidia_smi"] = _nvidia_smi()
    ctx.record("facts", facts)
    s = ctx.settings
    ctx.record("ceilings", measure_ceilings(ctx.device, copy_mib=s["probe_copy_mib"], matmul_n=s["probe_matmul_n"]))
    if s.get("probe_hang_s"):
        time.sleep(float(s["probe_hang_s"]))


# ---------------------------------------------------------------------------------------------- tests


class _Outcomes:
    """pytest plugin: the outcome of every test (setup errors and skips included)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.failures: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome
            if report.outcome == "failed":
                self.failures[report.nodeid] = str(report.longrepr)[-2000:]


def stage_tests(ctx: StageContext) -> None:
    import pytest

    files = sorted(p for p in (REPO_ROOT / "tests").glob("test_*.py") if "pytest.mark.gpu" in p.read_text())
    plugin = _Outcomes()
    args = ["-q", "-m", "gpu", "-p", "no:cacheprovider", "--continue-on-collection-errors", "-rs", *map(str, files)]
    exit_code = pytest.main(args, plugins=[plugin])
    counts = {k: sum(1 for v in plugin.outcomes.values() if v == k) for k in ("passed", "failed", "skipped")}
    ctx.record("result", {"exit_code": int(exit_code), "files": [p.name for p in files], "counts": counts,
                          "outcomes": plugin.outcomes, "failures": plugin.failures})
    if counts["failed"] or int(exit_code) not in (0, 5):  # 5: nothing selected
        raise RuntimeError(f"gpu tests: exit code {int(exit_code)}, {counts}")


# ---------------------------------------------------------------------------------------------- train


def stage_train(ctx: StageContext) -> None:
    from .gpu_train import TrainPlan, train_preset

    s = ctx.settings
    carry = Path(s["carry"])
    roots = sorted(str(p) for p in (carry / "train").glob("*") if p.is_dir())
    chosen = [r for r in roots if s["train_roots"] is None or Path(r).name in s["train_roots"]]
    roots = chosen or roots  # the named roots when the carried folder has them, else all
    if (carry / "clip" / "ir.mp4").is_file():
        roots.append(str(carry / "clip"))  # a video root: every frame_step-th frame
    if not roots:
        raise SourceError(f"no training data under {str(carry)!r} (run python3 -m benchmarks.gpu_prepare first)")
    plan = TrainPlan(roots=roots, frame_step=s["train_frame_step"], budget_s=ctx.left_s() - s["child_margin_s"],
                     device=ctx.device, settings=s)
    ctx.record("result", train_preset(plan, work=ctx.work / "train", out=ctx.out, record=ctx.record))


# ---------------------------------------------------------------------------------------------- stream


def stage_stream(ctx: StageContext) -> None:
    from .gpu_models import build_model
    from .gpu_stream import clip_sources, run_stream_variant

    s = ctx.settings
    sources = clip_sources(Path(s["carry"]) / "clip", ctx.work / "stream", reader=s["stream_reader"], max_frames=s["stream_max_frames"])
    ctx.record("sources", sources)
    model = build_model(s["stream_model"], seed=s["seed"])
    runs = [(spec, False) for spec in s["stream_variants"]]
    if s["stream_encode"] and importlib.util.find_spec("av") is not None:
        runs.append((None, True))  # the fastest variant again, writing H.264 (the dstfuse-stream command's path)
    for spec, encode in runs:
        if spec is None:
            done = [r for r in ctx.data["rows"] if r.get("status") == "ok"]
            if not done:
                continue
            spec = max(done, key=lambda r: r["pipeline"]["fps"])["variant"]
        row: dict[str, Any] = {"variant": spec, "encode": encode}
        if ctx.left_s() < s["stream_min_variant_s"]:
            row.update(status="skipped", reason=f"stage budget: {ctx.left_s():.0f} s left")
        else:
            try:
                row.update(status="ok", **run_stream_variant(spec, model, sources, device=ctx.device, settings=s,
                                                             work=ctx.work / "stream", encode=encode))
            except Exception as exc:  # noqa: BLE001 - one failing variant must not end the stage
                logger.warning("stream variant %s failed", spec, exc_info=True)
                row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).strip()[:400]}")
        ctx.add_row(row)


# ---------------------------------------------------------------------------------------------- models


def _run_model_cases(ctx: StageContext, cases: list[Any]) -> None:
    from .gpu_models import run_cases

    deadline = time.monotonic() + ctx.left_s() - ctx.settings["child_margin_s"]
    run_cases(cases, device=ctx.device, settings=ctx.settings, deadline=deadline, on_row=ctx.add_row,
              min_case_s=ctx.settings["min_case_s"])


def stage_models(ctx: StageContext) -> None:
    from .gpu_models import Variant, case_matrix

    cases = [
        case
        for block in ctx.settings["model_blocks"]
        for case in case_matrix(block["models"], [parse_size_wh(x) for x in block["sizes"]], block["batches"],
                                [Variant.parse(v) for v in block["variants"]])
    ]
    _run_model_cases(ctx, cases)


def stage_compile(ctx: StageContext) -> None:
    from .gpu_models import Case, Variant

    cases = [Case(m, parse_size_wh(size), int(b), Variant.parse(v)) for m, size, b, v in ctx.settings["compile_cases"]]
    _run_model_cases(ctx, cases)


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], None]] = {
    "probe": stage_probe, "tests": stage_tests, "train": stage_train,
    "stream": stage_stream, "models": stage_models, "compile": stage_compile,
}


def run_stage(ctx: StageContext) -> int:
    """Run one stage in this (child) process; 0 when it finished, 1 when it raised (recorded as ``error``)."""
    if ctx.device.startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True  # autotuned convolutions; first calls per shape are warm-up
    ctx.record("status", "running")
    t0 = time.monotonic()
    try:
        STAGE_FUNCTIONS[ctx.name](ctx)
    except BaseException as exc:  # noqa: BLE001 - recorded for the report, then the process exits 1
        ctx.data["error"] = f"{type(exc).__name__}: {exc}"
        ctx.data["traceback"] = traceback.format_exc()[-4000:]
        ctx.data["wall_s"] = time.monotonic() - t0
        ctx.record("status", "failed")
        logger.error("stage %s failed: %s", ctx.name, ctx.data["error"])
        return 1
    ctx.data["wall_s"] = time.monotonic() - t0
    ctx.record("status", "ok")
    return 0
