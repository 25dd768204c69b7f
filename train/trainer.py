"""DSTFuse training loop: phase schedule, per-module Adam optimizers, checkpoints, logs and plots.

Schedule (epoch ``e``, defaults of :class:`TrainConfig`):

* fusion module: reconstruction stage for ``e < recon_epochs``, fusion stage for
  ``recon_epochs <= e < recon_epochs + fusion_epochs``;
* CST module: trained for ``e < cst_epochs`` (alongside the fusion module, separate optimizer);
* mapping module: trained for ``e >= max(cst_epochs, recon_epochs + fusion_epochs)`` with CST and
  fusion frozen (eval mode, no grad);
* joint fine-tuning (``joint_epochs``, default 0): in the last ``joint_epochs`` epochs of the mapping
  phase the fusion module trains too, end to end through the inference graph (for
  ``mapping="before_fusion"`` it then sees the *mapped* visible image it blends at inference, not the
  raw degraded crop of its own fusion stage); the fused image gets the fusion loss and the mapping loss.

With the defaults (15 epochs, 3/3/10) that is: 0-2 reconstruction + CST, 3-5 fusion + CST, 6-9 CST
only, 10-14 mapping only. The network's visible input is the degraded crop (:class:`~.data.Degradation`).

Two recipes (``TrainConfig.recipe``; both documented in ``docs/training.md``):

* ``"degradation"`` (default): every loss sees the *sharp* visible crop as ``V`` (CST SSIM and
  restoration terms, the fusion targets ``max(V, I)`` and ``max(S(V), S(I))``, the mapping targets), so the
  network learns to undo the degradation; the CST adds the supervised restoration term and a smaller
  perceptual-to-IR weight.
* ``"paper"``: the losses see the network's own visible input as ``V``, CST perceptual weight 100, no
  restoration term, i.e. the paper's equations literally.

``lr_schedule="cosine"`` decays each module's learning rate to 0 over the epochs in which it trains
(computed from the position, so ``--resume`` stays exact).

Run folder (``out``): ``config.json`` (resolved model/train configs, data roots), ``last.pt`` (every
epoch and on a time-budget stop; ``--resume`` continues exactly from it), ``loss_log.jsonl`` (one line
per step), ``losses.png`` (per-step losses by phase).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dstfuse_stream.backends.torch_backend import resolve_device
from dstfuse_stream.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.errors import CheckpointError, ConfigError
from dstfuse_stream.model import DSTFuse
from .data import CropSampler, Degradation
from .losses import CSTLoss, fusion_loss, logit_penalty, mapping_loss, reconstruction_loss

__all__ = ["TrainConfig", "MODULES", "RECIPES", "module_span", "scheduled_lr", "phase_modules", "TrainState", "Trainer", "plot_losses"]

logger = logging.getLogger(__name__)

MODULES = ("cst", "fusion", "mapping")
#: Loss weights each recipe resolves when the config leaves them ``None``.
RECIPES: dict[str, dict[str, Any]] = {
    "degradation": {"perceptual_weight": 1.0, "restoration_weight": 10.0, "perceptual_widths": (8, 16, 32)},
    "paper": {"perceptual_weight": 100.0, "restoration_weight": 0.0, "perceptual_widths": (16, 32, 64)},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the data and the model architecture."""

    epochs: int = 15
    recon_epochs: int = 3
    fusion_epochs: int = 3
    cst_epochs: int = 10
    lr: float = 1e-4
    mapping_lr: float | None = None
    lr_schedule: str = "constant"
    recipe: str = "degradation"
    perceptual_weight: float | None = None
    restoration_weight: float | None = None
    perceptual_widths: tuple[int, ...] | None = None
    batch_size: int = 8
    crop_size: int = 128
    crops_per_image: int = 1
    degradation: Degradation = Degradation()
    max_side: int | None = 640
    channels_last: bool = False
    grad_clip: float | None = None
    attention_weight: float = 0.0
    joint_epochs: int = 0
    seed: int = 0
    num_threads: int = 2
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crop_size", "crops_per_image", "num_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("recon_epochs", "fusion_epochs", "cst_epochs", "joint_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.crop_size % 4:
            raise ConfigError(f"crop_size: expected a multiple of 4 (two stride-2 levels), got {self.crop_size}")
        if self.crop_size <= 5:
            raise ConfigError(f"crop_size: expected > 5 (SSIM window 11), got {self.crop_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")
        if self.mapping_lr is not None and not self.mapping_lr > 0:
            raise ConfigError(f"mapping_lr: expected > 0 or None (= lr), got {self.mapping_lr}")
        if self.joint_epochs and self.joint_epochs > self.epochs - self.mapping_start:
            raise ConfigError(
                f"joint_epochs: expected at most the {self.epochs - self.mapping_start} mapping-phase epoch(s), got {self.joint_epochs}"
            )
        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe: expected one of {list(RECIPES)}, got {self.recipe!r}")
        if self.attention_weight < 0:
            raise ConfigError(f"attention_weight: expected >= 0, got {self.attention_weight}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip: expected > 0 or None, got {self.grad_clip}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule: expected 'constant' or 'cosine', got {self.lr_schedule!r}")
        if isinstance(self.degradation, dict):
            object.__setattr__(self, "degradation", Degradation(**self.degradation))
        for name, value in RECIPES[self.recipe].items():  # resolve the recipe's loss settings
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "perceptual_widths", tuple(int(w) for w in self.perceptual_widths))  # type: ignore[union-attr]
        if min(self.perceptual_weight, self.restoration_weight) < 0 or min(self.perceptual_widths) < 1:  # type: ignore[type-var, arg-type]
            raise ConfigError("perceptual_weight, restoration_weight: expected >= 0; perceptual_widths: expected >= 1")
        if self.max_side is not None and self.max_side < self.crop_size:
            raise ConfigError(f"max_side: expected >= crop_size ({self.crop_size}) or None, got {self.max_side}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes: expected > 0 or None, got {self.max_minutes}")

    def module_lr(self, name: str) -> float:
        """Adam learning rate of module ``name`` (``mapping_lr`` for the mapping module when set)."""
        return self.mapping_lr if name == "mapping" and self.mapping_lr is not None else self.lr

    @property
    def mapping_start(self) -> int:
        """First epoch of the mapping phase."""
        return max(self.cst_epochs, self.recon_epochs + self.fusion_epochs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["degradation"] = self.degradation.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown TrainConfig keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)


def phase_modules(config: TrainConfig, epoch: int) -> dict[str, str | None]:
    """What each module does in ``epoch``: ``{"cst": "cst"|None, "fusion": "reconstruction"|"fusion"|"joint"|None,
    "mapping": "mapping"|None}``."""
    if epoch < config.recon_epochs:
        fusion: str | None = "reconstruction"
    elif epoch < config.recon_epochs + config.fusion_epochs:
        fusion = "fusion"
    elif epoch >= config.epochs - config.joint_epochs:
        fusion = "joint"
    else:
        fusion = None
    return {
        "cst": "cst" if epoch < config.cst_epochs else None,
        "fusion": fusion,
        "mapping": "mapping" if epoch >= config.mapping_start else None,
    }


def module_span(config: TrainConfig, name: str) -> tuple[int, int]:
    """``[first, stop)`` epochs in which module ``name`` trains."""
    active = [e for e in range(config.epochs) if phase_modules(config, e)[name]]
    return (active[0], active[-1] + 1) if active else (0, 0)


def scheduled_lr(config: TrainConfig, name: str, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate of module ``name`` at ``step`` of ``epoch``: constant, or a cosine from the module's
    lr to 0 over the epochs it trains (a pure function of the position, so resume is exact)."""
    base = config.module_lr(name)
    if config.lr_schedule == "constant":
        return base
    first, stop = module_span(config, name)
    total = max(1, (stop - first) * steps_per_epoch)
    done = min(total, max(0, (epoch - first) * steps_per_epoch + step))
    return base * 0.5 * (1.0 + math.cos(math.pi * done / total))


def phase_name(config: TrainConfig, epoch: int) -> str:
    """Human-readable phase label of ``epoch``, e.g. ``"reconstruction+cst"`` or ``"mapping"``."""
    active = [p for p in (phase_modules(config, epoch)[m] for m in ("fusion", "cst", "mapping")) if p]
    return "+".join(active) if active else "idle"


@dataclass
class TrainState:
    """Where a run stands: ``epoch`` (current, 0-based), ``step_in_epoch`` (steps done in it), ``global_step``."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


class Trainer:
    """Train a :class:`DSTFuse` on a :class:`CropSampler` with the DSTFuse schedule.

    Args:
        model: the network (moved to ``device``).
        sampler: batches of ``(ir, vis_input, vis_sharp)``.
        config: the schedule and optimisation settings.
        out: run folder (created).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        data_roots: recorded in ``config.json``.
        command: recorded in ``config.json``.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        model: DSTFuse,
        sampler: CropSampler,
        config: TrainConfig,
        out: str | os.PathLike[str],
        *,
        device: str = "auto",
        data_roots: Sequence[str] = (),
        command: str | None = None,
        progress: bool = True,
    ) -> None:
        if model.config.fusion_head == "blend" and config.recon_epochs > 0:
            raise ConfigError(
                f"recon_epochs: the {model.config.name!r} preset's blend fusion head has no reconstruction stage; expected 0, "
                f"got {config.recon_epochs}"
            )
        self.device = torch.device(resolve_device(device))
        self.model = model.to(self.device)
        self.sampler = sampler
        self.config = config
        self.out = Path(out)
        self.data_roots = [str(r) for r in data_roots]
        self.command = command
        self.progress = progress
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.cst_loss = CSTLoss(
            seed=config.seed, perceptual_weight=config.perceptual_weight, restoration_weight=config.restoration_weight,
            extractor_widths=config.perceptual_widths,
        ).to(self.device)
        self.optimizers = {
            name: torch.optim.Adam(getattr(model, name).parameters(), lr=config.module_lr(name)) for name in MODULES
        }
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self._resumed = False

    # ---------------------------------------------------------------- checkpoints
    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the full training checkpoint (model, optimizers, state, configs, history)."""
        last = self.history[-1] if self.history else {}
        return save_checkpoint(
            self.last_path if path is None else path,
            self.model,
            epoch=self.state.epoch,
            loss=last.get("loss"),
            step_in_epoch=self.state.step_in_epoch,
            global_step=self.state.global_step,
            optimizers={name: opt.state_dict() for name, opt in self.optimizers.items()},
            train_config=self.config.to_dict(),
            history=self.history,
        )

    def load_state(self, ckpt: dict[str, Any], *, source: str = "checkpoint") -> None:
        """Restore model, optimizers, position and history from a :meth:`save` checkpoint."""
        missing = [k for k in ("optimizers", "step_in_epoch", "global_step", "history") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{source}: not a training checkpoint (missing {missing}); cannot resume from it")
        if DSTFuseConfig.from_dict(ckpt["config"]) != self.model.config:
            raise CheckpointError(f"{source}: model config {ckpt['config']} differs from this run's {self.model.config.to_dict()}")
        self.model.load_state_dict(ckpt["state_dict"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        self.state = TrainState(int(ckpt["epoch"]), int(ckpt["step_in_epoch"]), int(ckpt["global_step"]))
        self.history = list(ckpt["history"])
        self._resumed = True
        logger.info("resumed %s at epoch %d step %d (global step %d)", source, *self.state.__dict__.values())

    def resume(self, path: str | os.PathLike[str] | None = None) -> None:
        """Resume from ``path`` (default ``out/last.pt``); trims the step log past the checkpoint."""
        path = self.last_path if path is None else Path(path)
        self.load_state(load_checkpoint(path, map_location=self.device), source=f"checkpoint {str(path)!r}")
        log = self.out / "loss_log.jsonl"
        if log.is_file():
            keep = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)["step"] < self.state.global_step]
            log.write_text("".join(ln + "\n" for ln in keep))

    # ---------------------------------------------------------------- one step
    def _set_modes(self, phases: dict[str, str | None]) -> None:
        for name in MODULES:
            module = getattr(self.model, name)
            active = phases[name] is not None
            module.train(active)
            module.requires_grad_(active)

    def init_modules(self, sources: dict[str, str | os.PathLike[str]]) -> None:
        """Load the weights of some modules from checkpoints, e.g. ``{"cst": "runs/a/last.pt"}``
        (a module trained in another run); the module's architecture must match."""
        for name, path in sources.items():
            if name not in MODULES:
                raise ConfigError(f"init: unknown module {name!r}; expected one of {list(MODULES)}")
            ckpt = load_checkpoint(path, map_location=self.device)
            prefix = name + "."
            state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
            try:
                getattr(self.model, name).load_state_dict(state)
            except RuntimeError as exc:
                raise CheckpointError(f"init {name} from {str(path)!r}: weights do not match this model ({exc})") from exc
            logger.info("initialised module %s from %s", name, path)

    def train_step(
        self, epoch: int, ir: torch.Tensor, vis: torch.Tensor, sharp: torch.Tensor, blur_mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One optimisation step of every module active in ``epoch``; returns the loss terms.

        ``vis`` is the network's (degraded) visible input, ``sharp`` the undegraded crop; the recipe
        decides which of the two the losses call ``V``. ``blur_mask`` (1 where ``vis`` is blurred)
        supervises the mapping attention when ``attention_weight > 0``.
        """
        phases = phase_modules(self.config, epoch)
        self._set_modes(phases)
        model = self.model
        target = sharp if self.config.recipe == "degradation" else vis
        losses: dict[str, torch.Tensor] = {}
        if phases["cst"]:
            losses["cst"] = self.cst_loss(model.cst(ir, vis), ir, target)
        if phases["fusion"] == "reconstruction":
            losses["reconstruction"] = reconstruction_loss(model.fusion.reconstruct(ir), ir) + reconstruction_loss(
                model.fusion.reconstruct(sharp), sharp
            )
        elif phases["fusion"] == "fusion":
            losses["fusion"] = fusion_loss(self._fuse(ir, vis, losses, True), ir, target)
        if phases["mapping"]:
            joint = phases["fusion"] == "joint"  # the fusion module trains too, on the image it blends at inference
            with torch.no_grad():
                deblurred = model.cst(ir, vis).stage2
            # a frozen fusion module (requires_grad off, see _set_modes) builds no graph of its own
            if model.mapping.before_fusion:  # gradients reach A through the fusion module (frozen unless joint)
                mapped = self._fuse(ir, model.mapping(ir, vis, deblurred, vis), losses, joint)
            else:
                mapped = model.mapping(ir, vis, deblurred, self._fuse(ir, vis, losses, joint))
            if joint:
                losses["fusion"] = fusion_loss(mapped, ir, target)
            losses["mapping"] = mapping_loss(mapped, ir, target)
            if self.config.attention_weight and blur_mask is not None:
                att = model.mapping.attention_map(ir, vis, deblurred)
                losses["attention"] = self.config.attention_weight * F.binary_cross_entropy(
                    att.clamp(1e-4, 1 - 1e-4), blur_mask
                )
        active = [name for name in MODULES if phases[name]]
        if not losses:
            return {}
        for name in active:
            self.optimizers[name].zero_grad(set_to_none=True)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}: { {k: float(v) for k, v in losses.items()} }")
        total.backward()  # type: ignore[union-attr]
        steps = self.sampler.steps_per_epoch()
        for name in active:
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(getattr(model, name).parameters(), self.config.grad_clip)
            for group in self.optimizers[name].param_groups:
                group["lr"] = scheduled_lr(self.config, name, epoch, self.state.step_in_epoch, steps)
            self.optimizers[name].step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _fuse(self, ir: torch.Tensor, vis: torch.Tensor, losses: dict[str, torch.Tensor], penalty: bool) -> torch.Tensor:
        """The fusion module's image; with ``penalty`` and the blend head, adds the logit penalty to ``losses``."""
        fusion = self.model.fusion
        if not (penalty and fusion.head == "blend"):
            return fusion.fuse(ir, vis)
        maps = fusion.maps(ir, vis)
        losses["logit_penalty"] = logit_penalty(maps)
        return fusion.blend(ir, vis, maps)

    # ---------------------------------------------------------------- loop
    def _write_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        if self._resumed and path.is_file():  # keep the original command; record how it was continued
            payload = json.loads(path.read_text())
            payload.setdefault("resume_commands", []).append(self.command)
            path.write_text(json.dumps(payload, indent=2) + "\n")
            return
        payload = {
            "model": self.model.config.to_dict(),
            "train": self.config.to_dict(),
            "data": self.data_roots,
            "num_pairs": len(self.sampler.pairs),
            "steps_per_epoch": self.sampler.steps_per_epoch(),
            "device": str(self.device),
            "command": self.command,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")

    def _to_device(self, arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        return tuple(torch.from_numpy(a).to(self.device).contiguous(memory_format=fmt) for a in arrays)

    def fit(self) -> TrainState:
        """Train until ``config.epochs`` or the ``max_minutes`` budget; save ``last.pt`` each epoch."""
        cfg = self.config
        torch.set_num_threads(cfg.num_threads)
        self._write_config()
        steps = self.sampler.steps_per_epoch()
        start = time.monotonic()
        budget_s = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        log_path = self.out / "loss_log.jsonl"
        total_steps = cfg.epochs * steps
        bar = tqdm(total=total_steps, initial=min(self.state.global_step, total_steps), disable=not self.progress,
                   desc="train", unit="step", dynamic_ncols=True)
        stopped = False
        try:
            with log_path.open("a") as log:
                while self.state.epoch < cfg.epochs and not stopped:
                    epoch = self.state.epoch
                    phase = phase_name(cfg, epoch)
                    sums: dict[str, float] = {}
                    done_before = self.state.step_in_epoch
                    for s, batch in enumerate(self.sampler.batches(epoch)):
                        if s < done_before:
                            continue
                        terms = self.train_step(epoch, *self._to_device(batch))
                        self.state.step_in_epoch += 1
                        self.state.global_step += 1
                        for k, v in terms.items():
                            sums[k] = sums.get(k, 0.0) + v
                        record = {"step": self.state.global_step - 1, "epoch": epoch, "phase": phase, **terms}
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        bar.update(1)
                        bar.set_postfix({"ep": epoch, **{k: f"{v:.4f}" for k, v in terms.items()}})
                        if budget_s is not None and time.monotonic() - start >= budget_s and (
                            self.state.step_in_epoch < steps or epoch + 1 < cfg.epochs
                        ):
                            stopped = True
                            break
                    if stopped:
                        logger.warning(
                            "time budget of %.1f min reached at epoch %d step %d; saved %s (resume with --resume)",
                            cfg.max_minutes, epoch, self.state.step_in_epoch, self.last_path,
                        )
                        break
                    n = max(1, self.state.step_in_epoch - done_before)
                    means = {k: v / n for k, v in sums.items()}
                    self.history.append(
                        {"epoch": epoch, "phase": phase, "steps": self.state.step_in_epoch,
                         "loss": float(sum(means.values())), "terms": means,
                         "wall_s": round(time.monotonic() - start, 1)}
                    )
                    logger.info("epoch %d (%s): %s", epoch, phase, {k: round(v, 5) for k, v in means.items()})
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                    self.save()
            if stopped:
                self.save()
        except KeyboardInterrupt:
            logger.warning("interrupted at epoch %d step %d; saving %s", self.state.epoch, self.state.step_in_epoch, self.last_path)
            self.save()
            raise
        finally:
            bar.close()
            plot_losses(log_path, self.out / "losses.png")
        return self.state


def read_loss_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a ``loss_log.jsonl`` file (empty list if absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def plot_losses(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str], *, smooth: int = 10) -> Path | None:
    """Plot every loss term per step (moving average over ``smooth`` steps, log y) into ``png_path``."""
    records = read_loss_log(log_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = sorted({k for r in records for k in r if k not in ("step", "epoch", "phase")})
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for term in terms:
        pts = [(r["step"], r[term]) for r in records if term in r]
        steps = np.array([p[0] for p in pts])
        vals = np.array([p[1] for p in pts], dtype=np.float64)
        k = max(1, min(smooth, len(vals)))
        smooth_vals = np.convolve(vals, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth_vals, label=term)
    prev = None
    for r in records:
        if prev is not None and r["phase"] != prev:
            ax.axvline(r["step"], color="gray", lw=0.8, ls="--")
        prev = r["phase"]
    if all(r[t] > 0 for r in records for t in terms if t in r):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (moving average of {smooth} steps)")
    ax.set_title("DSTFuse training losses (dashed: phase changes)")
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def export_weights(
    source: str | os.PathLike[str] | DSTFuse, path: str | os.PathLike[str], *, half: bool = False, **extra: Any
) -> Path:
    """Write a release checkpoint (state_dict + config + epoch + loss, no optimizer) from a training
    checkpoint path or a model."""
    if isinstance(source, DSTFuse):
        return save_checkpoint(path, source, epoch=0, loss=None, half=half, **extra)
    ckpt = load_checkpoint(source)
    model = model_from_checkpoint(ckpt, source=f"checkpoint {str(source)!r}")
    loss = ckpt.get("loss")
    return save_checkpoint(path, model, epoch=ckpt["epoch"], loss=None if loss is None or math.isnan(loss) else loss,
                           half=half, **extra)
