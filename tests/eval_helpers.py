"""Hand-made data and stub networks for the ``dstfuse_stream.evaluation`` tests."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dstfuse_stream.model import DSTFuseIntermediates


def textured(shape, seed, *, lo=40, hi=215):
    """A smooth random texture (blurred noise), uint8, strong enough that blur changes it."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(lo, hi, shape).astype(np.float32), (0, 0), 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_pairs(root: Path, n: int, *, shape=(64, 64), seed=0, blur=False, name="{:04d}.png") -> Path:
    """``root/ir``, ``root/vi`` (and ``root/vi_blur``: a 5x1 box blur, 10 levels darker) with ``n`` pairs."""
    for sub in ("ir", "vi") + (("vi_blur",) if blur else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ir, vis = textured(shape, seed + 2 * i), textured(shape, seed + 2 * i + 1)
        cv2.imwrite(str(root / "ir" / name.format(i)), ir)
        cv2.imwrite(str(root / "vi" / name.format(i)), vis)
        if blur:
            cv2.imwrite(str(root / "vi_blur" / name.format(i)), cv2.subtract(cv2.blur(vis, (5, 1)), 10))
    return root


def read_gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class StubNet(torch.nn.Module):
    """An architecture-free stand-in: identity CST, fused = (ir + vis) / 2, and an attention that is

    ``"zero"``: 0 everywhere; ``"const"``: 0.3 everywhere; ``"blur"``: high where the visible input has
    little local detail (``1 - tanh(20 * local mean |vis - 3x3 mean|)``), i.e. where it is blurred.
    """

    def __init__(self, attention: str = "zero") -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.attention = attention

    def intermediates(self, ir: torch.Tensor, vis: torch.Tensor) -> DSTFuseIntermediates:
        if self.attention == "zero":
            att = torch.zeros_like(vis)
        elif self.attention == "const":
            att = torch.full_like(vis, 0.3)
        else:
            detail = (vis - F.avg_pool2d(vis, 3, 1, 1, count_include_pad=False)).abs()
            att = 1.0 - torch.tanh(20.0 * F.avg_pool2d(detail, 9, 1, 4, count_include_pad=False))
        fused = 0.5 * (ir + vis)
        return DSTFuseIntermediates(deblurred=vis.clone(), fusion=fused, attention=att, fused=fused)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.intermediates(ir, vis).fused
