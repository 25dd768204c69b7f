"""``python -m dstfuse_train.distill``: train the blend-map upsampler that makes work scale 0.5 match full resolution.

``Fuser()`` runs the ``stream`` model at work scale 0.5 on a CPU: the networks see a 2x-downscaled
pair and their blend maps are applied to the full-resolution frames. Upsampled bilinearly, those maps
lose the fine per-pixel choices that the full-resolution model makes between the two sources' detail
bands (31.5 dB PSNR against the full-resolution output on the worst real frame, under the 35 dB fidelity
gate). :class:`~dstfuse_stream.model.BlendMapUpsampler` (three 3x3 convs at full resolution, ``--width``
channels) refines the upsampled maps with the full-resolution images. This trains it, and nothing
else, so that the model's output at a reduced work scale matches **the same weights'** full-resolution
output (the teacher): every other weight is frozen, so work scale 1 is unchanged.

1. ``--per-root`` frames of every ``--data`` root (at most 640 px on the long side; a ``--blur-share`` of
   them with the visible image motion-blurred, 5-19 px) are run once through the frozen networks: the
   full-resolution fusion output (target) and, at each ``--factors`` downscale, the upsampled blend
   logits and the visible image the fusion blends. These are kept in memory (float16).
2. The upsampler is trained on random ``--crop`` crops of them (MSE of the fusion output plus
   ``--grad-weight`` x L1 of its Sobel-gradient error, Adam with a cosine schedule, ``--steps``).
3. Every ``--eval-every`` steps, and at the end, the model itself (``forward`` at work scale 0.5 and 0.25)
   is compared with its work-scale-1 output on held-out real frames (the M3SVD validation clips):
   PSNR min and mean per scale, in ``log.jsonl``. The final upsampler is saved in ``--out/distilled.pt``
   (no selection on the validation frames).

``--export PATH`` writes the result as a release checkpoint (the teacher's epoch and loss) and adds a
``distill`` entry to the card ``PATH.json`` when there is one. The shipped weights were made with::

    python -m dstfuse_train.distill --data <TRAIN_ROOTS> --out runs/upsampler --export dstfuse_stream/weights/dstfuse_stream.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dstfuse_stream.checkpoint import load_model, save_checkpoint
from dstfuse_stream.cliutil import run_command

__all__ = ["with_upsampler", "upsampler_example", "evaluate", "train_upsampler", "export_distilled", "main"]

logger = logging.getLogger(__name__)

VALIDATION_CLIPS = ("sequences/m3svd_frames_0111_1803", "sequences/m3svd_frames_0115_1834")
#: Work scales reported by :func:`evaluate`.
EVAL_SCALES = (0.5, 0.25)


def with_upsampler(model, width: int):
    """A copy of ``model`` whose config has a ``width``-channel upsampler (the other weights copied;
    an existing upsampler of that width is kept, otherwise a fresh one starts as bilinear)."""
    from dstfuse_stream.model import DSTFuse

    if model.config.fusion_head != "blend":
        raise ValueError(f"model preset {model.config.name!r} has no blend head: nothing to upsample")
    student = DSTFuse(dataclasses.replace(model.config, upsampler_width=width))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("upsampler.") or model.config.upsampler_width == width}
    student.load_state_dict(state, strict=False)
    return student.float().eval()


def upsampler_example(model, ir: np.ndarray, vis: np.ndarray, factor: int):
    """One training example, ``(5, H', W')`` float16 on the padded frame: the IR, the visible image the
    fusion blends at ``factor``, the two upsampled logits and the full-resolution fusion output (target)."""
    import torch

    from dstfuse_stream.model import pad_to_multiple

    ir_t, vis_t = (pad_to_multiple(torch.from_numpy(x.astype(np.float32) / 255.0)[None, None], model.size_multiple * factor)
                   for x in (ir, vis))
    with torch.inference_mode():
        model.set_work_scale(1.0)
        target = model.intermediates(ir_t, vis_t).fusion
        low = model.reduced_scale(ir_t, vis_t, factor)
    return torch.cat([ir_t, low.fusion_vis, low.logits, target], dim=1)[0].half()


def _validation_frames(data_root: Path, per_clip: int):
    import torch

    from dstfuse_stream.imageio import list_pairs, read_luma

    frames = []
    for clip in VALIDATION_CLIPS:
        pairs = list_pairs(data_root / clip)
        step = max(1, len(pairs) // per_clip)
        for ir_path, vis_path in pairs[::step][:per_clip]:
            frames.append(tuple(torch.from_numpy(read_luma(f).astype(np.float32) / 255.0)[None, None] for f in (ir_path, vis_path)))
    return frames


def evaluate(model, frames, scales: Sequence[float] = EVAL_SCALES) -> dict[str, float]:
    """PSNR (dB, uint8 luma) of ``model`` at each work scale against its own work-scale-1 output: min and mean over ``frames``."""
    import torch

    from dstfuse_stream.colour import float_to_uint8
    from dstfuse_stream.metrics import psnr

    def as_uint8(t) -> np.ndarray:
        return float_to_uint8(t[0, 0].numpy())

    out: dict[str, float] = {}
    with torch.inference_mode():
        full = [as_uint8(model.set_work_scale(1.0)(ir, vis)) for ir, vis in frames]
        for scale in scales:
            values = [psnr(as_uint8(model.set_work_scale(scale)(ir, vis)), ref) for (ir, vis), ref in zip(frames, full)]
            out[f"psnr_ws{scale:g}_min"], out[f"psnr_ws{scale:g}_mean"] = float(np.min(values)), float(np.mean(values))
    model.set_work_scale(1.0)
    return out


def _crops(examples, batch_size: int, crop: int, rng: np.random.Generator):
    import torch

    batch = []
    for _ in range(batch_size):
        x = examples[int(rng.integers(len(examples)))]
        h, w = x.shape[-2:]
        size_h, size_w = min(crop, h), min(crop, w)
        i, j = int(rng.integers(h - size_h + 1)), int(rng.integers(w - size_w + 1))
        batch.append(x[:, i:i + size_h, j:j + size_w].float())
    return torch.stack(batch)


def train_upsampler(model, examples, *, steps: int, lr: float, batch_size: int, crop: int, seed: int,
                    grad_weight: float = 0.0, on_eval=None, eval_every: int = 0) -> None:
    """Train ``model.upsampler`` (in place; every other weight frozen) on :func:`upsampler_example` items:
    MSE of the fusion output plus ``grad_weight`` x L1 of its Sobel gradients (edges kept as sharp as
    the full-resolution output's)."""
    import kornia
    import torch

    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("upsampler."))
    params = list(model.upsampler.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    rng = np.random.default_rng(seed)
    for step in range(1, steps + 1):
        x = _crops(examples, batch_size, crop, rng)
        ir, fusion_vis, logits, target = x[:, :1], x[:, 1:2], x[:, 2:4], x[:, 4:5]
        fusion = model.fusion.blend(ir, fusion_vis, model.upsampler(ir, fusion_vis, logits))
        loss = ((fusion - target) ** 2).mean()
        if grad_weight:
            grad = kornia.filters.spatial_gradient(fusion - target, mode="sobel", order=1, normalized=True)
            loss = loss + grad_weight * grad.abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_eval is not None and eval_every and (step % eval_every == 0 or step == steps):
            on_eval(step, float(loss.detach()))


def _sample_pairs(root: Path, count: int, *, frame_step: int, rng: np.random.Generator):
    """Up to ``count`` random ``(ir, vis)`` luma pairs of ``root`` (at most 640 px on the long side),
    reading only the chosen files of an image root."""
    from dstfuse_stream.imageio import list_pairs, read_bgr, resize_max_side, to_gray

    from .data import _is_video_root, load_video_pairs

    if _is_video_root(root):
        items = [(ir, vis) for _, ir, vis in load_video_pairs(root, frame_step=frame_step)]
        chosen = [items[int(k)] for k in rng.choice(len(items), size=min(count, len(items)), replace=False)]
    else:
        pairs = list_pairs(root)
        chosen = [(read_bgr(pairs[int(k)][0]), read_bgr(pairs[int(k)][1]))
                  for k in rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)]
    return [(resize_max_side(to_gray(ir), 640), resize_max_side(to_gray(vis), 640)) for ir, vis in chosen]


def _gather(model, roots: Sequence[str], *, per_root: int, blur_share: float, factors: Sequence[int], frame_step: int, seed: int):
    from dstfuse_stream.degrade import motion_blur

    rng = np.random.default_rng(seed)
    examples = []
    for root in roots:
        for ir, vis in _sample_pairs(Path(root), per_root, frame_step=frame_step, rng=rng):
            if rng.random() < blur_share:
                vis = motion_blur(vis, int(rng.integers(2, 10)) * 2 + 1, float(rng.uniform(0.0, 180.0)))
            for factor in factors:
                examples.append(upsampler_example(model, ir, vis, factor))
        logger.info("%s: %d examples so far", root, len(examples))
    return examples


def export_distilled(run: str | Path, path: str | Path, *, teacher: str | None = None) -> Path:
    """Write ``run/distilled.pt`` as a release checkpoint at ``path`` (the teacher's epoch and loss, so the
    training card's epochs still hold) and record the distillation in the card ``path.json`` if present."""
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_checkpoint, model_from_checkpoint

    run, path = Path(run), Path(path)
    teacher_path = Path(teacher) if teacher else (path if path.is_file() else default_weights_path())
    teacher_ckpt = load_checkpoint(teacher_path)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    summary = {
        "what": "BlendMapUpsampler trained to match the same weights' full-resolution output (other weights unchanged)",
        "command": json.loads((run / "config.json").read_text())["command"] if (run / "config.json").is_file() else None,
        "teacher_sha256": file_sha256(teacher_path),
        "steps_trained": records[-1]["step"],
        "wall_time_s": records[-1].get("wall_s"),
        "start": records[0],
        "end": records[-1],
    }
    distilled = load_checkpoint(run / "distilled.pt")
    model = model_from_checkpoint(distilled, source=str(run / "distilled.pt"))
    out = save_checkpoint(path, model, epoch=int(teacher_ckpt["epoch"]), loss=teacher_ckpt.get("loss"),
                          work_scale_distill=json.dumps(summary))
    card_path = out.with_suffix(".json")
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        card.update({"sha256": file_sha256(out), "size_bytes": out.stat().st_size, "model_config": model.config.to_dict(),
                     "distill": summary})
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_train.distill", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="checkpoint to distil (default: the shipped weights)")
    p.add_argument("--data", nargs="+", help="training roots (as dstfuse-train --data); without it, only --export")
    p.add_argument("--data-root", default="../shared/data", help="where the validation clips are (default ../shared/data)")
    p.add_argument("--out", required=True, help="run folder (distilled.pt, log.jsonl, config.json)")
    p.add_argument("--width", type=int, default=8, help="upsampler channels (default 8)")
    p.add_argument("--per-root", type=int, default=40, help="frames taken from each root (default 40)")
    p.add_argument("--blur-share", type=float, default=0.3, help="share of frames with a motion-blurred visible image (default 0.3)")
    p.add_argument("--factors", default="2", help="comma list of downscale factors to train at (2 = work scale 0.5; default 2)")
    p.add_argument("--frame-step", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--grad-weight", type=float, default=0.1, help="weight of the Sobel-gradient L1 term (default 0.1)")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-frames", type=int, default=4, help="validation frames per clip (default 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", help="after training (or alone, without --data): write --out/distilled.pt as a "
                   "release checkpoint at PATH, with the teacher's epoch and loss, and add a 'distill' entry to the "
                   "card PATH.json when there is one")
    args = p.parse_args(argv)
    if not args.data and not args.export:
        p.error("expected --data (train) and/or --export")
    try:
        factors = [int(f) for f in args.factors.split(",")]
    except ValueError:
        p.error(f"--factors {args.factors!r}: expected a comma list of 2 and/or 4")
    if not factors or any(f not in (2, 4) for f in factors):
        p.error(f"--factors {args.factors!r}: expected a comma list of 2 and/or 4")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def run() -> None:
        if args.data:
            train()
        if args.export:
            path = export_distilled(args.out, args.export, teacher=args.teacher)
            print(f"exported {path}")

    def train() -> None:
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(args.threads)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"command": " ".join(["python -m dstfuse_train.distill", *(argv or sys.argv[1:])]),
                                                     "args": vars(args)}, indent=2) + "\n")
        model = with_upsampler(load_model(args.teacher), args.width)
        t0 = time.monotonic()
        examples = _gather(model, args.data, per_root=args.per_root, blur_share=args.blur_share, factors=factors,
                           frame_step=args.frame_step, seed=args.seed)
        frames = _validation_frames(Path(args.data_root), args.eval_frames)
        log = (out / "log.jsonl").open("w")

        def record(step: int, loss: float | None) -> None:
            entry = {"step": step, "wall_s": round(time.monotonic() - t0, 1), "loss": loss, **evaluate(model, frames)}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            logger.info("%s", entry)

        record(0, None)
        train_upsampler(model, examples, steps=args.steps, lr=args.lr, batch_size=args.batch_size, crop=args.crop,
                        seed=args.seed, grad_weight=args.grad_weight, on_eval=record, eval_every=args.eval_every)
        model.requires_grad_(False)
        save_checkpoint(out / "distilled.pt", model, epoch=args.steps, distilled_from=str(args.teacher or "shipped"))
        print(f"{out / 'distilled.pt'}: {len(examples)} examples, {args.steps} steps")

    return run_command("dstfuse-train distill", run)


if __name__ == "__main__":
    sys.exit(main())
