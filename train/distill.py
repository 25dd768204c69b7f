"""``python -m dstfuse_train.distill``: make a model's half-resolution path agree with its full-resolution one.

``Fuser()`` runs the ``stream`` model at work scale 0.5 on a CPU (the networks see a 2x-downscaled pair,
their blend maps are applied to the full-resolution frames). The shipped weights were trained at full
resolution only, so at half scale the fusion module decides a little differently (about 33 dB PSNR
against its own full-resolution output, under the 35 dB fidelity gate of ``Fuser``'s precision/scale
choices). This fine-tunes the **fusion module only** of a copy of the model (the *student*) so that its
output at work scale 0.5 *and* at work scale 1 both match the original model's full-resolution output
(the frozen *teacher*)::

    loss = |F_student@0.5 - F_teacher@1| + |F_student@1 - F_teacher@1|     (L1, luma in [0, 1])

so one weights file stays what it was at full resolution and becomes consistent at half resolution.
Inputs are training crops with the recipe's degradation (motion blur on part of the samples), CST and
mapping frozen. Every ``--eval-every`` steps the PSNR of student@0.5 against student@1 and against the
teacher is measured on held-out full frames; the checkpoint with the best minimum PSNR is kept as
``best.pt`` in ``--out`` (``log.jsonl`` holds every evaluation).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dstfuse_stream.checkpoint import load_model, save_checkpoint
from dstfuse_stream.cliutil import run_command

from .data import CropSampler, Degradation, load_pairs

__all__ = ["consistency_loss", "teacher_outputs", "evaluate", "export_distilled", "main"]

logger = logging.getLogger(__name__)

VALIDATION_CLIPS = ("sequences/m3svd_frames_0111_1803", "sequences/m3svd_frames_0115_1834")


def consistency_loss(student, teacher_fused, ir, vis, *, scale: float = 0.5):
    """``(loss, l1_half, l1_full)`` of the student's outputs at ``scale`` and at 1 against the teacher's."""
    student.set_work_scale(scale)
    half = student.intermediates(ir, vis).fused
    student.set_work_scale(1.0)
    full = student.intermediates(ir, vis).fused
    l1_half = (half - teacher_fused).abs().mean()
    l1_full = (full - teacher_fused).abs().mean()
    return l1_half + l1_full, l1_half, l1_full


def teacher_outputs(teacher, frames) -> list[np.ndarray]:
    """The teacher's full-resolution fused luma of each ``(ir, vis)`` frame (computed once per run)."""
    import torch

    with torch.inference_mode():
        return [teacher.set_work_scale(1.0)(ir, vis)[0, 0].numpy() for ir, vis in frames]


def evaluate(student, frames, references, *, scale: float = 0.5) -> dict[str, float]:
    """Min and mean PSNR (dB) on full frames: student@scale vs student@1, and vs the teacher@1
    (``references``: :func:`teacher_outputs` of the same frames)."""
    import torch

    from dstfuse_stream.metrics import psnr

    own, vs_teacher, full_vs_teacher = [], [], []
    with torch.inference_mode():
        for (ir, vis), t in zip(frames, references):
            student.set_work_scale(1.0)
            s1 = student(ir, vis)[0, 0].numpy()
            student.set_work_scale(scale)
            s05 = student(ir, vis)[0, 0].numpy()
            own.append(psnr(s05, s1))
            vs_teacher.append(psnr(s05, t))
            full_vs_teacher.append(psnr(s1, t))
    student.set_work_scale(1.0)
    return {"half_vs_own_full_min": float(np.min(own)), "half_vs_own_full_mean": float(np.mean(own)),
            "half_vs_teacher_min": float(np.min(vs_teacher)), "full_vs_teacher_min": float(np.min(full_vs_teacher))}


def export_distilled(run: str | Path, path: str | Path, *, teacher: str | None = None) -> Path:
    """Write ``run/best.pt`` as a release checkpoint at ``path`` (the teacher's epoch and loss, so the
    training card's epochs still hold) and record the distillation in the card ``path.json`` if present."""
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_checkpoint, model_from_checkpoint

    run, path = Path(run), Path(path)
    teacher_path = Path(teacher) if teacher else (path if path.is_file() else default_weights_path())
    teacher_ckpt = load_checkpoint(teacher_path)
    best = load_checkpoint(run / "best.pt")
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    summary = {
        "command": json.loads((run / "config.json").read_text())["command"] if (run / "config.json").is_file() else None,
        "teacher_sha256": file_sha256(teacher_path),
        "steps_trained": records[-1]["step"],
        "wall_time_s": records[-1].get("wall_s"),
        "best": json.loads(best["eval"]) if "eval" in best else None,
        "start": records[0],
    }
    model = model_from_checkpoint(best, source=str(run / "best.pt"))
    out = save_checkpoint(path, model, epoch=int(teacher_ckpt["epoch"]), loss=teacher_ckpt.get("loss"),
                          work_scale_distill=json.dumps(summary))
    card_path = out.with_suffix(".json")
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        card.update({"sha256": file_sha256(out), "size_bytes": out.stat().st_size, "distill": summary})
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return out


def _frames(data_root: Path, per_clip: int):
    import cv2
    import torch

    frames = []
    for clip in VALIDATION_CLIPS:
        irs = sorted((data_root / clip / "ir").iterdir())[:per_clip]
        viss = sorted((data_root / clip / "vi").iterdir())[:per_clip]
        for a, b in zip(irs, viss):
            frames.append(tuple(torch.from_numpy(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0)[None, None]
                                for f in (a, b)))
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_train.distill", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="checkpoint to make consistent (default: the shipped weights)")
    p.add_argument("--data", nargs="+", help="training roots (as dstfuse-train --data); without it, only --export")
    p.add_argument("--data-root", default="../shared/data", help="where the validation clips are (default ../shared/data)")
    p.add_argument("--out", required=True, help="run folder (best.pt, last.pt, log.jsonl)")
    p.add_argument("--frame-step", type=int, default=3)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--minutes", type=float, default=25.0, help="training time budget (default 25)")
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", help="after training (or alone, without --data): write --out/best.pt as a "
                   "release checkpoint at PATH, with the teacher's epoch and loss, and add a 'distill' entry to the "
                   "card PATH.json when there is one")
    args = p.parse_args(argv)
    if not args.data and not args.export:
        p.error("expected --data (train) and/or --export")
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
        teacher = load_model(args.teacher).eval()
        student = copy.deepcopy(teacher).train()
        for name, param in student.named_parameters():
            param.requires_grad_(name.startswith("fusion."))
        params = [q for q in student.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(params, lr=args.lr)
        pairs, _ = load_pairs(args.data, max_side=640, frame_step=args.frame_step)
        sampler = CropSampler(pairs, crop_size=args.crop, batch_size=args.batch_size, crops_per_image=2,
                              degradation=Degradation(blur_prob=0.5, blur_lengths=(5, 21), partial_prob=0.5, dark_prob=0.0),
                              seed=args.seed)
        frames = _frames(Path(args.data_root), per_clip=3)
        references = teacher_outputs(teacher, frames)
        log = (out / "log.jsonl").open("a")
        record = {"step": 0, **evaluate(student, frames, references)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        logger.info("start: %s", record)
        best = record["half_vs_own_full_min"]
        save_checkpoint(out / "best.pt", student, epoch=0, distilled_from=str(args.teacher or "shipped"), eval=json.dumps(record))
        t0, step, epoch = time.monotonic(), 0, 0
        while time.monotonic() - t0 < args.minutes * 60:
            for ir, vis_in, _sharp, _mask in sampler.batches(epoch):
                ir_t, vis_t = torch.from_numpy(ir), torch.from_numpy(vis_in)
                with torch.no_grad():
                    target = teacher(ir_t, vis_t)
                student.train()
                loss, l1_half, l1_full = consistency_loss(student, target, ir_t, vis_t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                if step % args.eval_every == 0:
                    student.eval()
                    record = {"step": step, "epoch": epoch, "wall_s": round(time.monotonic() - t0, 1),
                              "l1_half": float(l1_half.detach()), "l1_full": float(l1_full.detach()), **evaluate(student, frames, references)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    logger.info("%s", record)
                    if record["half_vs_own_full_min"] > best:
                        best = record["half_vs_own_full_min"]
                        save_checkpoint(out / "best.pt", student, epoch=step, distilled_from=str(args.teacher or "shipped"),
                                        eval=json.dumps(record))
                if time.monotonic() - t0 >= args.minutes * 60:
                    break
            epoch += 1
        save_checkpoint(out / "last.pt", student, epoch=step, distilled_from=str(args.teacher or "shipped"))
        print(f"best half-vs-full PSNR (min over frames): {best:.2f} dB; {out / 'best.pt'}")

    return run_command("dstfuse-train distill", run)


if __name__ == "__main__":
    sys.exit(main())
