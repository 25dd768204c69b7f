"""``python -m dstfuse_train.recipe``: the multi-run recipe that makes the shipped ``stream`` weights.

One command runs every stage as its own ``dstfuse-train`` process, in dependency order, at most
``--jobs`` at a time (the fusion module and the CST curriculum are independent, so on two cores they
train side by side, one thread each), then exports the release checkpoint and writes its training card::

    python -m dstfuse_train.recipe --data-root ../shared/data --out runs/stream \\
        --export dstfuse_stream/weights/dstfuse_stream.pt

Stages (``STREAM_STAGES``; every flag is visible there and in ``docs/training.md``):

1. ``fusion``, ``fusion_ft``: the fusion module alone (blend head, the paper's fusion loss against the
   sharp visible), then fine-tuned with twice as many blurred inputs.
2. ``cst_a`` .. ``cst_d``: the CST module alone, a curriculum over blur *directions*: 2 angles
   (short blur), then 8, then uniform, then a longer uniform run at a larger crop (a single run over
   uniform directions stayed at the identity: see ``docs/training.md``); each stage starts from the
   previous one's CST (``--init``).
3. ``mapping``: CST and fusion frozen (loaded with ``--init``), the mapping attention learns where
   the visible input is blurred (paper mapping loss + ``--attention-weight`` x BCE against the blur mask).
4. ``joint``: the fusion module and the mapping attention fine-tuned together through the inference
   graph (``--joint-epochs``): the fusion module now blends the *mapped* visible image it sees at
   inference (its own stage trained it on the raw degraded crop), mostly on blurred inputs, with the
   losses against the sharp visible; the CST stays frozen.

The shipped ``dstfuse_stream.pt`` came from exactly these stages (run one by one; its card lists every
command), except that ``cst_d`` was stopped after 8 of its 10 epochs (lr already at 5e-5 on its cosine
schedule) by a machine restart, and ``mapping`` started from that checkpoint; ``joint`` was run later,
from the weights the ``mapping`` stage had exported (identical module weights), with two threads.

A stage whose run folder already holds a finished ``last.pt`` is skipped, so an interrupted recipe
continues where it stopped (an unfinished stage resumes with ``--resume``). ``--scale`` multiplies
every stage's ``--crops-per-image`` (e.g. 0.01 for a smoke test; tests use it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dstfuse_stream.checkpoint import load_checkpoint
from dstfuse_stream.cliutil import run_command
from dstfuse_stream.errors import ConfigError

from .card import build_recipe_card
from .trainer import export_weights

__all__ = ["Stage", "STREAM_STAGES", "TRAIN_ROOTS", "stage_command", "run_recipe", "main"]

logger = logging.getLogger(__name__)

#: Training roots under the data root (validation, never trained on: ``vifb`` and the three
#: ``sequences/m3svd_frames_*`` clips).
TRAIN_ROOTS = (
    "llvip", "roadscene", "tno", "flir_train", "msrs", "m3fd", "msrs_degraded",
    "sequences/m3svd_0111_1716", "sequences/m3svd_0113_1714", "sequences/m3svd_0117_1605",
    "sequences/m3svd_0117_1620", "sequences/m3svd_1230_1202",
)

_COMMON = ("--preset", "stream", "--frame-step", "3", "--batch-size", "8", "--channels-last", "--grad-clip", "1.0",
           "--no-progress")
_CST = (*_COMMON, "--fusion-epochs", "0", "--crops-per-image", "4", "--perceptual-weight", "0.1", "--blur-prob", "0.9",
        "--partial-blur-prob", "0.2", "--dark-prob", "0")


@dataclass(frozen=True)
class Stage:
    """One ``dstfuse-train`` run: its name (= run folder under the recipe's ``--out``), its flags
    (``--data`` and ``--out`` are added), the stages it needs, and ``--init`` sources by stage name."""

    name: str
    args: tuple[str, ...]
    after: tuple[str, ...] = ()
    init: tuple[tuple[str, str], ...] = ()
    threads: int = 1


STREAM_STAGES: tuple[Stage, ...] = (
    Stage("fusion", (*_COMMON, "--epochs", "6", "--fusion-epochs", "6", "--cst-epochs", "0", "--crop", "160",
                     "--crops-per-image", "4", "--lr", "5e-4", "--lr-schedule", "cosine", "--blur-prob", "0.25",
                     "--blur-lengths", "3", "21", "--partial-blur-prob", "0.3", "--dark-prob", "0")),
    Stage("fusion_ft", (*_COMMON, "--epochs", "3", "--fusion-epochs", "3", "--cst-epochs", "0", "--crop", "160",
                        "--crops-per-image", "4", "--lr", "3e-4", "--lr-schedule", "cosine", "--blur-prob", "0.5",
                        "--blur-lengths", "3", "21", "--partial-blur-prob", "0.5", "--dark-prob", "0"),
          after=("fusion",), init=(("fusion", "fusion"),)),
    Stage("cst_a", (*_CST, "--epochs", "3", "--cst-epochs", "3", "--crop", "96", "--lr", "1e-3",
                    "--blur-lengths", "5", "15", "--blur-angles", "0", "90"), threads=2),
    Stage("cst_b", (*_CST, "--epochs", "3", "--cst-epochs", "3", "--crop", "96", "--lr", "1e-3", "--blur-lengths", "5", "21",
                    "--blur-angles", "0", "22.5", "45", "67.5", "90", "112.5", "135", "157.5"),
          after=("cst_a",), init=(("cst", "cst_a"),), threads=2),
    Stage("cst_c", (*_CST, "--epochs", "4", "--cst-epochs", "4", "--crop", "96", "--lr", "1e-3", "--blur-lengths", "5", "21",
                    "--lr-schedule", "cosine"),
          after=("cst_b",), init=(("cst", "cst_b"),)),
    Stage("cst_d", (*_CST, "--epochs", "10", "--cst-epochs", "10", "--crop", "128", "--lr", "5e-4", "--blur-lengths", "5", "21",
                    "--lr-schedule", "cosine"),
          after=("cst_c",), init=(("cst", "cst_c"),)),
    Stage("mapping", (*_COMMON, "--epochs", "8", "--fusion-epochs", "0", "--cst-epochs", "0", "--crop", "160",
                      "--crops-per-image", "2", "--lr", "2e-3", "--lr-schedule", "cosine", "--attention-weight", "0.5",
                      "--blur-prob", "0.7", "--blur-lengths", "5", "21", "--partial-blur-prob", "0.5", "--dark-prob", "0"),
          after=("fusion_ft", "cst_d"), init=(("cst", "cst_d"), ("fusion", "fusion_ft"))),
    Stage("joint", (*_COMMON, "--epochs", "8", "--fusion-epochs", "0", "--cst-epochs", "0", "--joint-epochs", "8", "--crop", "160",
                    "--crops-per-image", "2", "--lr", "1e-4", "--mapping-lr", "5e-4", "--lr-schedule", "cosine",
                    "--attention-weight", "0.5", "--blur-prob", "0.7", "--blur-lengths", "5", "21", "--partial-blur-prob", "0.5",
                    "--dark-prob", "0"),
          after=("mapping",), init=(("cst", "mapping"), ("fusion", "mapping"), ("mapping", "mapping")), threads=2),
)


def _scaled(args: Sequence[str], scale: float) -> list[str]:
    out = list(args)
    if scale != 1.0 and "--crops-per-image" in out:
        i = out.index("--crops-per-image") + 1
        out[i] = str(max(1, round(int(out[i]) * scale)))
    return out


def stage_command(stage: Stage, out: Path, data: Sequence[str], *, scale: float = 1.0, resume: bool = False) -> list[str]:
    """The ``python -m dstfuse_train`` argv of ``stage`` (run folder ``out / stage.name``)."""
    cmd = [sys.executable, "-m", "dstfuse_train", "--data", *data, "--out", str(out / stage.name),
           "--threads", str(stage.threads), *_scaled(stage.args, scale)]
    if resume:
        cmd.append("--resume")
    elif stage.init:
        cmd += ["--init", *(f"{module}={out / source / 'last.pt'}" for module, source in stage.init)]
    return cmd


def _finished(run: Path) -> bool:
    """Whether ``run/last.pt`` has completed all its epochs."""
    if not (run / "last.pt").is_file() or not (run / "config.json").is_file():
        return False
    epochs = json.loads((run / "config.json").read_text())["train"]["epochs"]
    return int(load_checkpoint(run / "last.pt")["epoch"]) >= int(epochs)


def run_recipe(
    stages: Sequence[Stage], out: str | os.PathLike[str], data: Sequence[str], *, jobs: int = 2, scale: float = 1.0
) -> dict[str, float]:
    """Run ``stages`` (dependency order, ``jobs`` at a time); return each stage's wall seconds (0 = skipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in stages]
    for s in stages:
        missing = [d for d in s.after if d not in names]
        if missing:
            raise ConfigError(f"recipe stage {s.name!r}: depends on unknown stage(s) {missing}")
    pending = list(stages)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: dict[str, float] = {}
    while pending or running:
        for stage in [s for s in pending if all(d in done for d in s.after)]:
            if len(running) >= jobs:
                break
            pending.remove(stage)
            run = out / stage.name
            if _finished(run):
                logger.info("stage %s: finished earlier, skipped", stage.name)
                done[stage.name] = 0.0
                continue
            cmd = stage_command(stage, out, data, scale=scale, resume=(run / "last.pt").is_file())
            logger.info("stage %s: %s", stage.name, " ".join(cmd))
            log = open(out / f"{stage.name}.log", "a")
            running[stage.name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.monotonic())
        if pending and not running and not any(all(d in done for d in s.after) for s in pending):
            raise ConfigError(f"recipe: stages {[s.name for s in pending]} can never start (dependency cycle)")
        time.sleep(0.2)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                for other, _ in running.values():
                    other.terminate()
                raise ConfigError(f"recipe stage {name!r} failed (exit {proc.returncode}); see {out / (name + '.log')}")
            done[name] = time.monotonic() - t0
            logger.info("stage %s: done in %.0f s", name, done[name])
    return done


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_train.recipe", description="Train the shipped 'stream' weights (all stages).")
    p.add_argument("--data-root", default="../shared/data", help="folder holding the training roots (default ../shared/data)")
    p.add_argument("--out", required=True, help="recipe folder: one run folder per stage")
    p.add_argument("--jobs", type=int, default=2, help="stages run at the same time (default 2)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's crops per image (smoke tests)")
    p.add_argument("--export", metavar="PATH", help="write the release checkpoint (fp32) and its card (PATH with .json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def run() -> None:
        data = [str(Path(args.data_root) / r) for r in TRAIN_ROOTS]
        walls = run_recipe(STREAM_STAGES, args.out, data, jobs=args.jobs, scale=args.scale)
        print("stages:", ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()))
        if args.export:
            final = Path(args.out) / STREAM_STAGES[-1].name / "last.pt"
            weights = export_weights(final, args.export)
            card = build_recipe_card([Path(args.out) / s.name for s in STREAM_STAGES], weights)
            weights.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
            print(f"exported {weights} and {weights.with_suffix('.json')}")

    return run_command("dstfuse-train recipe", run)


if __name__ == "__main__":
    sys.exit(main())
