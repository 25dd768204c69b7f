"""``python -m dstfuse_bench.probes``: the measurements behind docs/training.md's deblurring and loss notes.

Three probes, each printing one line per case (luma in [0, 1], synthetic linear motion blur of
:mod:`dstfuse_stream.degrade`, every 3rd vifb pair by default):

* ``wiener``: the ceiling with a **known** kernel: PSNR gain of a Wiener deconvolution given the true
  kernel over the blurred input, per kernel length and noise-to-signal ratio (angles 0, 45, 90).
* ``kernel-estimate``: whether the sharp IR can tell the visible's blur: the kernel (7 lengths x 12
  angles) whose blur of the IR's gradient magnitude correlates best with the blurred visible's, its
  accuracy (length within 4 px and angle within 15 degrees) and the gain of Wiener with that kernel.
* ``fusion-loss``: the paper's fusion loss (``10 * gradient + 5 * intensity + 1 - SSIM``, what the
  fusion module is trained on) of fixed fusion rules, on the same pairs: which output that loss prefers.

``fusion-loss`` needs the ``[train]`` extra (kornia).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.degrade import motion_blur, motion_blur_kernel
from dstfuse_stream.imageio import list_pairs, read_gray
from dstfuse_stream.metrics import psnr

__all__ = ["wiener_deconvolve", "estimate_kernel", "main"]

_LENGTHS = (1, 5, 9, 13, 17, 21, 25)
_ANGLES = tuple(range(0, 180, 15))


def _quantised(x: np.ndarray) -> np.ndarray:
    """What an 8-bit camera would deliver."""
    return float_to_uint8(np.clip(x, 0.0, 1.0)).astype(np.float32) / 255.0


def wiener_deconvolve(blurred: np.ndarray, kernel: np.ndarray, nsr: float) -> np.ndarray:
    """Wiener deconvolution of ``blurred`` by ``kernel`` (reflect-padded by the kernel size)."""
    h, w = blurred.shape
    p = kernel.shape[0]
    padded = np.pad(blurred, p, mode="reflect")
    k = np.zeros_like(padded)
    k[:p, :p] = kernel
    k = np.roll(k, (-(p // 2), -(p // 2)), (0, 1))
    kf = np.fft.fft2(k)
    x = np.conj(kf) * np.fft.fft2(padded) / (np.abs(kf) ** 2 + nsr)
    return np.real(np.fft.ifft2(x))[p:p + h, p:p + w]


def _gradient_magnitude(x: np.ndarray) -> np.ndarray:
    gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    g = np.sqrt(gx * gx + gy * gy)
    return (g - g.mean()) / (g.std() + 1e-6)


def estimate_kernel(ir: np.ndarray, blurred_vis: np.ndarray, *, scale: float = 0.5) -> tuple[int, float]:
    """``(length, angle)`` whose motion blur of the IR best matches the blurred visible's gradients."""
    small = [cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for x in (ir, blurred_vis)]
    target = _gradient_magnitude(small[1])
    best = (-np.inf, 1, 0.0)
    for length in _LENGTHS:
        scaled = max(1, int(round(length * scale)) | 1)
        for angle in _ANGLES if length > 1 else (0,):
            score = float((_gradient_magnitude(motion_blur(small[0], scaled, angle)) * target).mean())
            if score > best[0]:
                best = (score, length, float(angle))
    return best[1], best[2]


def _probe_wiener(pairs) -> None:
    for length in (9, 15, 21):
        for nsr in (3e-3, 1e-2, 3e-2):
            gains = []
            for _, vis in pairs:
                for angle in (0, 45, 90):
                    blurred = _quantised(motion_blur(vis, length, angle))
                    restored = np.clip(wiener_deconvolve(blurred, motion_blur_kernel(length, angle), nsr), 0, 1)
                    gains.append(psnr(restored, vis) - psnr(blurred, vis))
            print(f"wiener, true kernel, L{length}, nsr {nsr:g}: {np.mean(gains):+.2f} dB (min {np.min(gains):+.2f}), n {len(gains)}",
                  flush=True)


def _probe_kernel_estimate(pairs) -> None:
    for length in (9, 15, 21):
        right, gains = 0, []
        for ir, vis in pairs:
            for angle in (0, 45, 90):
                blurred = _quantised(motion_blur(vis, length, angle))
                est_len, est_angle = estimate_kernel(ir, blurred)
                d_angle = abs(est_angle - angle)
                right += abs(est_len - length) <= 4 and min(d_angle, 180 - d_angle) <= 15
                restored = (np.clip(wiener_deconvolve(blurred, motion_blur_kernel(est_len, est_angle), 1e-2), 0, 1)
                            if est_len > 1 else blurred)
                gains.append(psnr(restored, vis) - psnr(blurred, vis))
        n = len(gains)
        print(f"kernel from IR, L{length}: right {right}/{n} ({100 * right / n:.0f} %), Wiener with it {np.mean(gains):+.2f} dB",
              flush=True)


def _probe_fusion_loss(pairs) -> None:
    import torch

    from dstfuse_stream.baselines import create_baseline
    from dstfuse_train.losses import fusion_loss

    rules = {"visible": lambda ir, vis: vis, "ir": lambda ir, vis: ir}
    for name in ("average", "max", "laplacian", "gff"):
        backend = create_baseline(name)
        rules[name] = lambda ir, vis, b=backend: b.fuse_image(ir, vis)
    for name, rule in rules.items():
        losses = []
        for ir, vis in pairs:
            fused = np.clip(rule(ir, vis), 0, 1).astype(np.float32)
            t = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (fused, ir, vis)]
            losses.append(float(fusion_loss(*t)))
        print(f"paper fusion loss of {name:9s}: {np.mean(losses):.3f}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_bench.probes", description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=("wiener", "kernel-estimate", "fusion-loss"))
    p.add_argument("--pairs", default="../shared/data/vifb", help="pairs folder (default ../shared/data/vifb)")
    p.add_argument("--every", type=int, default=3, help="every N-th pair (default 3)")
    args = p.parse_args(argv)
    found = list_pairs(Path(args.pairs))[:: max(1, args.every)]
    if not found:
        print(f"probes: error: no pairs in {args.pairs!r}", file=sys.stderr)
        return 2
    pairs = [(read_gray(i), read_gray(v)) for i, v in found]
    {"wiener": _probe_wiener, "kernel-estimate": _probe_kernel_estimate, "fusion-loss": _probe_fusion_loss}[args.probe](pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
