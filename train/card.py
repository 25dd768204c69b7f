"""Training card: a JSON summary of a finished run, written next to released weights.

    python -m dstfuse_train.card --run runs/lite --weights dstfuse_stream/weights/dstfuse_lite.pt \\
        --out dstfuse_stream/weights/dstfuse_lite.json

Everything in the card is read from the run folder (``config.json``, ``last.pt`` history,
``loss_log.jsonl``) and the weights file (sha256, size); ``--note`` adds free text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from dstfuse_stream.checkpoint import file_sha256, load_checkpoint
from dstfuse_stream.errors import DSTFuseError
from .trainer import read_loss_log

__all__ = ["phase_summary", "run_summary", "build_card", "build_recipe_card", "main"]


def phase_summary(records: Sequence[dict[str, Any]], *, window: int = 10) -> list[dict[str, Any]]:
    """Per phase (in order): epochs, steps, and each loss term's mean over its first and last ``window`` steps."""
    phases: list[dict[str, Any]] = []
    for r in records:
        if not phases or phases[-1]["phase"] != r["phase"]:
            phases.append({"phase": r["phase"], "records": []})
        phases[-1]["records"].append(r)
    out = []
    for p in phases:
        recs = p["records"]
        terms = [k for k in recs[0] if k not in ("step", "epoch", "phase")]
        summary: dict[str, Any] = {
            "phase": p["phase"],
            "epochs": sorted({r["epoch"] for r in recs}),
            "steps": len(recs),
        }
        for t in terms:
            vals = [r[t] for r in recs if t in r]
            k = min(window, len(vals))
            summary[t] = {f"start_mean_{k}": round(sum(vals[:k]) / k, 5), f"end_mean_{k}": round(sum(vals[-k:]) / k, 5)}
        out.append(summary)
    return out


def _machine(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "device": config["device"],
        "torch_threads": config["train"]["num_threads"],
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _cpu_model() -> str:
    from dstfuse_stream.backends.precision import cpu_features

    return cpu_features().model


def run_summary(run: str | os.PathLike[str]) -> dict[str, Any]:
    """What one training run did: command, data, configs, steps, wall time, losses per epoch and phase."""
    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    ckpt = load_checkpoint(run / "last.pt")
    history = ckpt["history"]
    return {
        "run": run.name,
        "train_command": config["command"],
        "resume_commands": config.get("resume_commands", []),
        "data_roots": config["data"],
        "num_pairs_after_dedup": config["num_pairs"],
        "train_config": config["train"],
        "steps_per_epoch": config["steps_per_epoch"],
        "epochs_completed": ckpt["epoch"],
        "global_steps": ckpt["global_step"],
        "wall_time_s": history[-1]["wall_s"] if history else None,
        "per_epoch_mean_losses": [
            {"epoch": h["epoch"], "phase": h["phase"], **{k: round(v, 5) for k, v in h["terms"].items()}} for h in history
        ],
        "per_phase_losses": phase_summary(read_loss_log(run / "loss_log.jsonl")),
        "machine": _machine(config),
    }


def _release(weights: Path) -> dict[str, Any]:
    release = load_checkpoint(weights)
    return {
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "size_bytes": weights.stat().st_size,
        "model_config": release["config"],
        "dropped_duplicates": release.get("dropped_duplicates"),
    }


def build_card(run: str | os.PathLike[str], weights: str | os.PathLike[str], *, note: str | None = None) -> dict[str, Any]:
    """The card of weights made by one run (``run`` folder)."""
    summary = run_summary(run)
    summary.pop("run")
    return {**_release(Path(weights)), **summary, "note": note}


def build_recipe_card(
    runs: Sequence[str | os.PathLike[str]], weights: str | os.PathLike[str], *, note: str | None = None
) -> dict[str, Any]:
    """The card of weights made by several runs (a :mod:`~.recipe`): one summary per run, in order,
    and the total number of steps and of wall seconds."""
    stages = [run_summary(r) for r in runs]
    return {
        **_release(Path(weights)),
        "recipe": "python -m dstfuse_train.recipe",
        "total_steps": sum(s["global_steps"] for s in stages),
        "total_wall_time_s": round(sum(s["wall_time_s"] or 0.0 for s in stages), 1),
        "stages": stages,
        "note": note,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_train.card", description="Write a training card JSON for released weights.")
    p.add_argument("--run", required=True, nargs="+", help="run folder(s) (config.json, last.pt, loss_log.jsonl); "
                   "several = the stages of a recipe, in order")
    p.add_argument("--weights", required=True, help="released checkpoint")
    p.add_argument("--out", required=True, help="card JSON path")
    p.add_argument("--note", default=None)
    args = p.parse_args(argv)
    try:
        if len(args.run) == 1:
            card = build_card(args.run[0], args.weights, note=args.note)
        else:
            card = build_recipe_card(args.run, args.weights, note=args.note)
    except (DSTFuseError, FileNotFoundError, KeyError) as exc:
        print(f"card: error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
