"""``python -m dstfuse_bench.work_scale_fidelity``: where work scale 0.5 departs from full resolution.

For each real frame pair, the fused output at work scale 0.5 is compared (PSNR) with the output at
work scale 1 of the same weights, for the model as it runs and for variants that isolate the cause:

* ``attention 0``: the mapping attention held at 0 at both scales (no CST path): what is left is the
  fusion module's blend maps, decided at half resolution;
* ``bilinear (no upsampler)``: the blend maps' logits upsampled bilinearly only, without the model's
  learned :class:`~dstfuse_stream.model.BlendMapUpsampler` (what the model did before it had one);
* ``bicubic``: the blend maps' logits upsampled bicubically instead of bilinearly;
* ``guided G rR eE``: the blend weights upsampled by a fast guided filter (He & Sun 2015; ``a``, ``b``
  fitted at half resolution, applied to the full-resolution guide ``G`` = IR, visible or their mean).

It prints the mean and minimum PSNR per variant, best first. The numbers in docs/realtime.md come from::

    python -m dstfuse_bench.work_scale_fidelity --frames 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

DATA = Path("../shared/data/sequences")
CLIPS = ("m3svd_frames_0111_1803", "m3svd_frames_0115_1834")


def _box(x, r: int):
    import torch.nn.functional as F

    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def fast_guided_upsample(guide_low, src_low, guide, radius: int, eps: float):
    """``src_low`` brought to ``guide``'s size by a guided filter fitted at low resolution."""
    import torch.nn.functional as F

    mean_g, mean_p = _box(guide_low, radius), _box(src_low, radius)
    cov = _box(guide_low * src_low, radius) - mean_g * mean_p
    var = _box(guide_low * guide_low, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_p - a * mean_g

    def up(t):
        return F.interpolate(t, size=guide.shape[-2:], mode="bilinear", align_corners=False)

    return up(a) * guide + up(b)


def variants_for_pair(model, ir, vis) -> dict[str, float]:
    """PSNR (dB) of each half-scale variant against the full-scale output, for one ``(1, 1, H, W)`` pair."""
    import torch
    import torch.nn.functional as F

    from dstfuse_stream.metrics import psnr
    from dstfuse_stream.model import pad_to_multiple

    def fused(scale: float, zero_attention: bool = False) -> np.ndarray:
        model.set_work_scale(scale)
        original = model.mapping.attention_map
        if zero_attention:
            model.mapping.attention_map = lambda ir_, vis_, deblurred: torch.zeros_like(vis_)
        try:
            return model.intermediates(ir, vis).fused[0, 0].numpy()
        finally:
            model.mapping.attention_map = original

    out: dict[str, float] = {}
    with torch.inference_mode():
        reference = fused(1.0)
        out["as shipped"] = psnr(fused(0.5), reference)
        out["attention 0"] = psnr(fused(0.5, zero_attention=True), fused(1.0, zero_attention=True))
        # the half-scale path of DSTFuse.intermediates, with the blend maps' upsampling swapped
        height, width = ir.shape[-2:]
        ir_p, vis_p = (pad_to_multiple(x, model.size_multiple * 2) for x in (ir, vis))
        low = model.reduced_scale(ir_p, vis_p, 2)
        mapped, mapped_l, logits_l = low.fusion_vis, low.fusion_vis_low, low.logits_low
        vis_b, ir_b = model.fusion.bands(torch.cat([mapped, ir_p], dim=1)).split(1, dim=1)

        def blend(weights) -> np.ndarray:
            w_base, w_detail = weights.clamp(0.0, 1.0).split(1, dim=1)
            f = mapped + w_base * (ir_b - vis_b) + w_detail * ((ir_p - ir_b) - (mapped - vis_b))
            return f.clamp(0.0, 1.0)[0, 0, :height, :width].numpy()

        out["bilinear (no upsampler)"] = psnr(blend(torch.sigmoid(low.logits)), reference)
        ir, ir_l = ir_p, F.avg_pool2d(ir_p, 2)
        out["bicubic"] = psnr(blend(torch.sigmoid(F.interpolate(logits_l, scale_factor=2, mode="bicubic",
                                                                align_corners=False))), reference)
        weights_l = torch.sigmoid(logits_l)
        guides: dict[str, tuple] = {"IR": (ir, ir_l), "visible": (mapped, mapped_l),
                                    "mean": ((ir + mapped) / 2, (ir_l + mapped_l) / 2)}
        for name, (guide, guide_l) in guides.items():
            for radius in (1, 2, 4):
                for eps in (1e-4, 1e-3, 1e-2):
                    up = fast_guided_upsample(guide_l, weights_l, guide, radius, eps)
                    out[f"guided {name} r{radius} e{eps:g}"] = psnr(blend(up), reference)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_bench.work_scale_fidelity", description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="checkpoint (default: the shipped weights)")
    p.add_argument("--clips", nargs="+", default=[str(DATA / c) for c in CLIPS], help="pairs folders (ir/, vi/)")
    p.add_argument("--frames", type=int, default=3, help="first N frames of each clip (default 3)")
    p.add_argument("--top", type=int, default=8, help="variants printed (default 8)")
    args = p.parse_args(argv)

    import cv2
    import torch

    from dstfuse_stream import load_model

    model = load_model(args.weights)
    read: Callable[[Path], np.ndarray] = lambda f: cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)  # noqa: E731
    scores: dict[str, list[float]] = {}
    for clip in map(Path, args.clips):
        irs, viss = sorted((clip / "ir").iterdir())[: args.frames], sorted((clip / "vi").iterdir())[: args.frames]
        if not irs or len(irs) != len(viss):
            print(f"work_scale_fidelity: error: {clip}: expected ir/ and vi/ with the same number of frames", file=sys.stderr)
            return 2
        for ir_file, vis_file in zip(irs, viss):
            ir, vis = (torch.from_numpy(read(f).astype(np.float32) / 255.0)[None, None] for f in (ir_file, vis_file))
            for name, value in variants_for_pair(model, ir, vis).items():
                scores.setdefault(name, []).append(value)
    print(f"{'variant (half scale vs full scale)':36s} PSNR mean  min   (n={len(scores['as shipped'])})")
    ranked = sorted(scores.items(), key=lambda kv: -float(np.mean(kv[1])))
    fixed = ("as shipped", "attention 0", "bilinear (no upsampler)")
    for name in [*fixed, *[n for n, _ in ranked if n not in fixed][: args.top]]:
        values = scores[name]
        print(f"{name:36s} {np.mean(values):6.2f} {np.min(values):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
