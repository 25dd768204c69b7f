"""Do IR hot targets survive fusion? Mean luma on hot pixels (IR > threshold) vs. the rest.

    python -m dstfuse_train.hot_targets --pairs ../shared/data/llvip --names 010001 010018 050131 \\
        --weights dstfuse_stream/weights/dstfuse_lite.pt

Per pair prints the mean of IR, visible, the fusion module's output ``F`` and the final fused image on
hot pixels and on the other pixels (inputs area-downscaled by ``--scale``). A fused image that keeps the
hot targets has a hot mean well above the visible's and a clear hot/cold gap.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch
import torch.nn.functional as F

from dstfuse_stream.checkpoint import load_model
from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.imageio import list_pairs, read_gray
from dstfuse_stream.model import pad_to_multiple
from dstfuse_stream.preview import select_pairs

__all__ = ["hot_target_stats", "main"]


def hot_target_stats(model, ir: torch.Tensor, vis: torch.Tensor, *, threshold: float = 0.6) -> dict[str, tuple[float, float]]:
    """``{name: (mean on hot pixels, mean elsewhere)}`` for ir, vis, fusion-module output and fused."""
    with torch.inference_mode():
        ir_p, vis_p = pad_to_multiple(ir), pad_to_multiple(vis)
        fusion_out = model.fusion.fuse(ir_p, vis_p)[..., : ir.shape[-2], : ir.shape[-1]]
        fused = model(ir, vis)
    hot = ir > threshold
    if not hot.any() or hot.all():
        raise ConfigError(f"threshold {threshold}: no split into hot and other pixels for this pair")
    return {n: (float(t[hot].mean()), float(t[~hot].mean())) for n, t in
            (("ir", ir), ("vis", vis), ("fusion_F", fusion_out), ("fused", fused))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_train.hot_targets", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True)
    p.add_argument("--names", nargs="+", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--weights", default=None, help="checkpoint (default: shipped weights)")
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--scale", type=float, default=0.5, help="area-downscale inputs by this factor first")
    args = p.parse_args(argv)
    try:
        model = load_model(args.weights)
        pairs = select_pairs(list_pairs(args.pairs), names=args.names, limit=args.limit)
        for ir_path, vis_path in pairs:
            ir, vis = (torch.from_numpy(read_gray(x))[None, None] for x in (ir_path, vis_path))
            if args.scale != 1.0:
                ir, vis = (F.interpolate(x, scale_factor=args.scale, mode="area") for x in (ir, vis))
            stats = hot_target_stats(model, ir, vis, threshold=args.threshold)
            hot_frac = float((ir > args.threshold).float().mean())
            print(f"{ir_path.stem}: hot {hot_frac:.1%} | " + "  ".join(f"{k} {h:.3f}/{c:.3f}" for k, (h, c) in stats.items())
                  + "  (hot/other)")
    except DSTFuseError as exc:
        print(f"hot_targets: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
