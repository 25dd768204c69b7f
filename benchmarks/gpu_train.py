"""Train a preset (``paper``) for a fixed time on a GPU and write its weights as fp16 shards plus a card.

The run uses ``dstfuse_train`` unchanged: :class:`~dstfuse_train.trainer.Trainer` with the
degradation-aware recipe (``TrainConfig(recipe="degradation")``), :class:`~dstfuse_train.data.CropSampler`
and :class:`~dstfuse_train.data.Degradation`, the full 15-epoch phase schedule. What this module adds:

* **autocast**: :class:`AutocastTrainer` runs every training step under ``torch.autocast`` (bf16 by
  default; no gradient scaler is needed for bf16). Before training, one step of an fp32 copy and one
  of an autocast copy, from the same weights on the same batch, compare the loss terms
  (``autocast_check``: the relative difference autocast makes to each loss).
* **a schedule that fits the time**: a few timed steps of each phase (:func:`calibrate`) give the
  seconds per step; :func:`plan_crops_per_image` then picks how many crops each image gives per epoch,
  so that all 15 epochs (every phase, the mapping phase last) fit the budget. ``max_minutes`` stays as
  the hard stop, and SIGTERM saves too (``KeyboardInterrupt``, as in ``dstfuse-train``).
* **outputs** (to ``out``): ``dstfuse_<preset>-0000k-of-0000n.pt`` shards of at most ``shard_mib`` MiB
  (:func:`dstfuse_stream.checkpoint.save_checkpoint_shards`), the training card
  ``dstfuse_<preset>.json`` (:func:`dstfuse_train.card.build_card` plus the shards and the GPU facts)
  and ``losses.png``.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dstfuse_stream.checkpoint import file_sha256, preset_weights_stem, save_checkpoint_shards
from dstfuse_stream.config import get_config
from dstfuse_stream.model import DSTFuse
from dstfuse_stream.sinks import write_json
from dstfuse_train.card import build_card
from dstfuse_train.data import CropSampler, Degradation, load_pairs
from dstfuse_train.trainer import Trainer, TrainConfig, phase_modules

__all__ = ["AutocastTrainer", "phase_epochs", "calibrate", "plan_crops_per_image", "TrainPlan", "train_preset"]

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


class AutocastTrainer(Trainer):
    """:class:`Trainer` whose every step runs under ``torch.autocast(device, dtype)`` (``None``: plain fp32)."""

    def __init__(self, *args: Any, autocast_dtype: torch.dtype | None = torch.bfloat16, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autocast_dtype = autocast_dtype

    def train_step(self, epoch: int, *batch: torch.Tensor) -> dict[str, float]:
        """:meth:`Trainer.train_step` on the sampler's batch (``ir, vis, sharp[, blur_mask]``) under autocast."""
        if self.autocast_dtype is None:
            return super().train_step(epoch, *batch)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return super().train_step(epoch, *batch)


def phase_epochs(config: TrainConfig) -> dict[int, list[int]]:
    """Epochs grouped by what trains in them: ``{first epoch of a phase: [its epochs]}``."""
    groups: dict[tuple, list[int]] = {}
    for epoch in range(config.epochs):
        groups.setdefault(tuple(sorted(phase_modules(config, epoch).items())), []).append(epoch)
    return {epochs[0]: epochs for epochs in groups.values()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrate(make_trainer: Callable[[torch.dtype | None], AutocastTrainer], config: TrainConfig, *, autocast_dtype: torch.dtype | None,
              steps: int) -> dict[str, Any]:
    """Seconds per step of each phase, and what autocast does to the loss of the first step.

    ``make_trainer(dtype)`` builds a throw-away trainer on a copy of the initial model. One step of an fp32
    trainer and one of an autocast trainer on the same batch compare the loss terms (both are computed
    before the update, from the same weights); then, per phase, one warm-up step (cuDNN autotuning)
    and ``steps`` timed steps of the autocast trainer on the phase's first batches.
    """
    trainer = make_trainer(autocast_dtype)
    first_batch = trainer._to_device(next(iter(trainer.sampler.batches(0))))
    check = None
    if autocast_dtype is not None:
        reference = make_trainer(None).train_step(0, *first_batch)
        mixed = trainer.train_step(0, *first_batch)
        check = {k: {"fp32": reference[k], "autocast": mixed[k], "rel_diff": abs(mixed[k] - reference[k]) / max(abs(reference[k]), 1e-12)}
                 for k in reference}
    seconds: dict[int, float] = {}
    for epoch in phase_epochs(config):
        batches = trainer.sampler.batches(epoch)
        batch = trainer._to_device(next(batches))
        trainer.train_step(epoch, *batch)
        _sync(trainer.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(epoch, *batch)
        _sync(trainer.device)
        seconds[epoch] = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    trainer.save()
    save_s = time.perf_counter() - t0
    return {"s_per_step": seconds, "save_s": save_s, "autocast_check": check}


def plan_crops_per_image(s_per_step: dict[int, float], config: TrainConfig, *, budget_s: float, num_pairs: int, save_s: float) -> int:
    """Crops per image and epoch so that ``config.epochs`` epochs, with a checkpoint save after each, fit ``budget_s``.

    ``s_per_step`` maps the first epoch of each phase (:func:`phase_epochs`) to its seconds per step;
    one step takes ``batch_size`` crops. At least 1 (then the time budget may stop the run early).
    """
    groups = phase_epochs(config)
    seconds_per_epoch_step = sum(s_per_step[first] * len(epochs) for first, epochs in groups.items())
    steps_per_epoch = (budget_s - save_s * config.epochs) / max(seconds_per_epoch_step, 1e-9)
    return max(1, math.floor(steps_per_epoch * config.batch_size / num_pairs))


@dataclass(frozen=True)
class TrainPlan:
    """What the training stage was given: data roots, budget, settings (``settings`` keys ``train_*``)."""

    roots: list[str]
    frame_step: int
    budget_s: float
    device: str
    settings: dict[str, Any]


def _train_config(s: dict[str, Any], *, crops_per_image: int, max_minutes: float | None) -> TrainConfig:
    return TrainConfig(
        epochs=s["train_epochs"], recon_epochs=s["train_recon_epochs"], fusion_epochs=s["train_fusion_epochs"],
        cst_epochs=s["train_cst_epochs"], lr=s["train_lr"], lr_schedule=s["train_lr_schedule"], recipe="degradation",
        grad_clip=s["train_grad_clip"], batch_size=s["train_batch"], crop_size=s["train_crop"], crops_per_image=crops_per_image,
        degradation=Degradation(blur_prob=s["train_blur_prob"]), max_side=s["train_max_side"],
        channels_last=s["train_channels_last"], seed=s["seed"], num_threads=s["train_threads"], max_minutes=max_minutes,
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def train_preset(plan: TrainPlan, *, work: Path, out: Path, record: Callable[[str, Any], None]) -> dict[str, Any]:
    """Calibrate, train until the budget, write shards + card + loss plot to ``out``; returns the stage result."""
    s = plan.settings
    start = time.monotonic()
    preset = s["train_preset"]
    autocast_dtype = AUTOCAST_DTYPES[s["train_autocast"]]
    pairs, dropped = load_pairs(plan.roots, max_side=s["train_max_side"], frame_step=plan.frame_step)
    record("data", {"roots": plan.roots, "pairs": len(pairs), "dropped_duplicates": dropped, "frame_step": plan.frame_step,
                    "load_s": time.monotonic() - start})
    torch.manual_seed(s["seed"])
    initial = DSTFuse(get_config(preset))
    probe_config = _train_config(s, crops_per_image=1, max_minutes=None)

    def make_trainer(dtype: torch.dtype | None) -> AutocastTrainer:
        sampler = CropSampler(pairs, crop_size=probe_config.crop_size, batch_size=probe_config.batch_size,
                              degradation=probe_config.degradation, seed=s["seed"])
        return AutocastTrainer(copy.deepcopy(initial), sampler, probe_config, work / "calibration", device=plan.device,
                               progress=False, autocast_dtype=dtype)

    calibration = calibrate(make_trainer, probe_config, autocast_dtype=autocast_dtype, steps=s["train_calib_steps"])
    record("calibration", calibration)
    if plan.device.startswith("cuda"):
        torch.cuda.empty_cache()  # the calibration copies are gone
    reserve_s = s["train_reserve_s"]  # shards, card and plot after training
    budget_s = plan.budget_s - (time.monotonic() - start) - reserve_s
    crops = plan_crops_per_image(calibration["s_per_step"], probe_config, budget_s=budget_s, num_pairs=len(pairs),
                                 save_s=calibration["save_s"])
    if s["train_max_crops"] is not None:
        crops = min(crops, s["train_max_crops"])
    config = _train_config(s, crops_per_image=crops, max_minutes=max(budget_s, 1.0) / 60.0)
    sampler = CropSampler(pairs, crop_size=config.crop_size, batch_size=config.batch_size, crops_per_image=crops,
                          degradation=config.degradation, seed=config.seed)
    run = work / "run"
    command = f"python3 -m benchmarks.gpu_run --stages train (preset {preset}, budget {plan.budget_s:.0f} s)"
    trainer = AutocastTrainer(initial, sampler, config, run, device=plan.device, data_roots=plan.roots, command=command,
                              progress=False, autocast_dtype=autocast_dtype)
    record("plan", {"crops_per_image": crops, "steps_per_epoch": sampler.steps_per_epoch(), "train_budget_s": budget_s,
                    "train_config": config.to_dict()})
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    t0 = time.monotonic()
    try:
        trainer.fit()
    except KeyboardInterrupt:  # SIGTERM from the orchestrator: fit() saved last.pt; export what there is
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    train_s = time.monotonic() - t0
    state = trainer.state
    last_loss = trainer.history[-1]["loss"] if trainer.history else None
    stem = preset_weights_stem(preset)
    shards = save_checkpoint_shards(out / stem, trainer.model, max_shard_bytes=int(s["shard_mib"] * 2**20),
                                    epoch=state.epoch, loss=last_loss, dropped_duplicates=dropped)
    if (run / "losses.png").is_file():
        shutil.copy(run / "losses.png", out / "losses.png")
    pixels = state.global_step * config.batch_size * config.crop_size**2
    reference_pixels = 15 * len(pairs) * 640**2
    gpu = {
        "device": torch.cuda.get_device_name() if plan.device.startswith("cuda") else plan.device,
        "autocast": s["train_autocast"], "channels_last": config.channels_last,
        "calibration_s_per_step": calibration["s_per_step"], "autocast_check": calibration["autocast_check"],
        "budget_s": plan.budget_s, "train_s": train_s, "interrupted": interrupted,
        "finished_schedule": state.epoch >= config.epochs,
        "steps_per_s": state.global_step / train_s if train_s > 0 else None,
        "crop_pixels_seen": pixels,
        "paper_schedule_crop_pixels": reference_pixels,
        "fraction_of_paper_schedule": pixels / reference_pixels,
        "paper_schedule_note": "15 epochs of one 640x640 crop per pair over this run's pairs (the paper's schedule "
                               "on this data); the fraction compares crop pixels processed",
    }
    card = build_card(run, shards[0], note=s.get("train_note"))
    card.update(weights=[p.name for p in shards], sha256={p.name: file_sha256(p) for p in shards},
                size_bytes={p.name: p.stat().st_size for p in shards}, gpu_training=gpu)
    write_json(out / f"{stem}.json", card)
    return {"card": f"{stem}.json", "shards": [p.name for p in shards], "epochs_completed": state.epoch,
            "global_steps": state.global_step, "last_loss": last_loss, "per_epoch_mean_losses": card["per_epoch_mean_losses"], **gpu}
