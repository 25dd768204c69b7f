"""``dstfuse-train`` / ``python -m train``: train DSTFuse on IR/visible pair folders.

Example (the shipped lite weights; see ``dstfuse_stream/weights/dstfuse_lite.json`` for the exact run)::

    dstfuse-train --data ../shared/data/flir_train ../shared/data/roadscene ../shared/data/tno \\
        ../shared/data/llvip --preset lite --out runs/lite --export-weights dstfuse_stream/weights/dstfuse_lite.pt
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from dstfuse_stream.config import DEFAULT_PRESET, PRESETS, get_config
from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.model import DSTFuse
from .data import CropSampler, Degradation, load_pairs
from .trainer import RECIPES, Trainer, TrainConfig, export_weights

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="dstfuse-train", description="Train DSTFuse (CST + fusion + mapping) on IR/visible pairs.")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="pair roots: ir/ + vi/ folders or the LLVIP infrared/ + visible/ layout (several are combined and deduplicated)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=f"model preset (default {DEFAULT_PRESET})")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--recon-epochs", type=int, default=None,
                   help=f"reconstruction-stage epochs (default {d.recon_epochs}; 0 for presets with the blend fusion head)")
    p.add_argument("--fusion-epochs", type=int, default=d.fusion_epochs)
    p.add_argument("--cst-epochs", type=int, default=d.cst_epochs)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of every module (default 1e-4)")
    p.add_argument("--mapping-lr", type=float, default=d.mapping_lr, help="Adam learning rate of the mapping module (default: --lr)")
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM", help="clip each module's gradient norm (default off)")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                   help=f"per-module learning-rate schedule (default {d.lr_schedule})")
    p.add_argument("--recipe", default=d.recipe, choices=sorted(RECIPES),
                   help=f"'degradation': losses against the sharp visible + CST restoration term; 'paper': the paper's "
                        f"equations literally (default {d.recipe})")
    p.add_argument("--perceptual-weight", type=float, default=None, help="CST perceptual-to-IR weight (default: the recipe's)")
    p.add_argument("--restoration-weight", type=float, default=None, help="CST restoration weight (default: the recipe's)")
    p.add_argument("--attention-weight", type=float, default=0.0,
                   help="weight of BCE(mapping attention, blur mask): teaches A where the visible input is blurred (default 0)")
    p.add_argument("--joint-epochs", type=int, default=0, metavar="N",
                   help="in the last N epochs of the mapping phase the fusion module trains too, end to end through the "
                        "inference graph (fusion + mapping loss on the fused image; default 0)")
    p.add_argument("--init", nargs="+", default=[], metavar="MODULE=CKPT",
                   help="start modules from another run's checkpoint, e.g. cst=runs/a/last.pt fusion=runs/b/last.pt")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--crop", type=int, default=d.crop_size, help="square crop side in pixels (multiple of 4)")
    p.add_argument("--crops-per-image", type=int, default=d.crops_per_image)
    g = d.degradation
    p.add_argument("--blur-prob", type=float, default=g.blur_prob, help="probability of motion-blurring the visible input")
    p.add_argument("--blur-lengths", type=int, nargs=2, default=list(g.blur_lengths), metavar=("MIN", "MAX"),
                   help="motion-blur kernel lengths in px (default %(default)s)")
    p.add_argument("--blur-curriculum", type=int, default=g.curriculum_epochs, metavar="EPOCHS",
                   help="grow the longest blur from MIN to MAX over this many epochs (default 0 = off)")
    p.add_argument("--blur-angles", type=float, nargs="+", default=None, metavar="DEG",
                   help="draw blur directions from these angles (default: uniform in [0, 180))")
    p.add_argument("--partial-blur-prob", type=float, default=g.partial_prob,
                   help="share of blurred crops blurred only inside a soft random region (default %(default)s)")
    p.add_argument("--dark-prob", type=float, default=g.dark_prob, help="probability of a low-light input (default %(default)s)")
    p.add_argument("--dark-gain", type=float, nargs=2, default=list(g.dark_gain), metavar=("LOW", "HIGH"))
    p.add_argument("--noise-std", type=float, default=g.noise_std, help="max std of the low-light noise (default %(default)s)")
    p.add_argument("--frame-step", type=int, default=1, help="use every N-th frame of video-pair roots (ir.mp4 + vi.mp4)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster convs on CPU)")
    p.add_argument("--max-side", type=int, default=d.max_side, help="downsize images whose longer side exceeds this (0 = never)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.num_threads, help="torch CPU threads")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (and save) after this much training time")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--export-weights", metavar="PATH", help="write the final model as a release checkpoint (no optimizer)")
    p.add_argument("--half", action="store_true", help="with --export-weights: store fp16 tensors")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    degradation = Degradation(
        blur_prob=args.blur_prob, blur_lengths=tuple(args.blur_lengths), curriculum_epochs=args.blur_curriculum,
        angles=None if args.blur_angles is None else tuple(args.blur_angles),
        partial_prob=args.partial_blur_prob, dark_prob=args.dark_prob, dark_gain=tuple(args.dark_gain), noise_std=args.noise_std,
    )
    model_config = get_config(args.preset)
    recon_epochs = args.recon_epochs
    if recon_epochs is None:
        recon_epochs = 0 if model_config.fusion_head == "blend" else TrainConfig.recon_epochs
    config = TrainConfig(
        epochs=args.epochs, recon_epochs=recon_epochs, fusion_epochs=args.fusion_epochs, cst_epochs=args.cst_epochs,
        lr=args.lr, mapping_lr=args.mapping_lr, lr_schedule=args.lr_schedule, grad_clip=args.grad_clip, attention_weight=args.attention_weight,
        joint_epochs=args.joint_epochs, recipe=args.recipe,
        perceptual_weight=args.perceptual_weight, restoration_weight=args.restoration_weight, batch_size=args.batch_size,
        crop_size=args.crop, crops_per_image=args.crops_per_image, degradation=degradation, max_side=args.max_side or None,
        channels_last=args.channels_last, seed=args.seed, num_threads=args.threads, max_minutes=args.max_minutes,
    )
    init = dict(_parse_init(spec) for spec in args.init)
    pairs, dropped = load_pairs(args.data, max_side=config.max_side, frame_step=args.frame_step)
    print(f"data: {len(pairs)} pairs from {len(args.data)} root(s), {dropped} duplicate(s) dropped")
    sampler = CropSampler(pairs, crop_size=config.crop_size, batch_size=config.batch_size,
                          crops_per_image=config.crops_per_image, degradation=degradation, seed=config.seed)
    torch.manual_seed(config.seed)
    model = DSTFuse(model_config)
    trainer = Trainer(model, sampler, config, args.out, device=args.device, data_roots=args.data,
                      command="dstfuse-train " + shlex.join(argv), progress=not args.no_progress)
    if args.resume:
        trainer.resume()
    elif init:
        trainer.init_modules(init)
    extra = {"dropped_duplicates": dropped}
    t0 = time.monotonic()
    state = trainer.fit()
    wall_s = time.monotonic() - t0
    print(f"stopped at epoch {state.epoch}/{config.epochs}, global step {state.global_step}, {wall_s:.0f} s; checkpoint {trainer.last_path}")
    for h in trainer.history:
        print(f"  epoch {h['epoch']:2d} {h['phase']:<22s} " + " ".join(f"{k}={v:.5f}" for k, v in h["terms"].items()))
    if args.export_weights:
        path = export_weights(trainer.last_path, args.export_weights, half=args.half, **extra)
        print(f"exported {path}")
    return trainer.last_path


def _parse_init(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--init: expected MODULE=CHECKPOINT, got {spec!r}")
    return name, path


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        run(args, argv)
    except KeyboardInterrupt:
        print("dstfuse-train: interrupted; progress saved (continue with --resume)", file=sys.stderr)
        return 130
    except DSTFuseError as exc:
        print(f"dstfuse-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
