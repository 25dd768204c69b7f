"""DSTFuse training losses: each a plain function plus a thin ``nn.Module`` (kornia style).

All images are ``(B, 1, H, W)`` floats in ``[0, 1]``; every loss returns a scalar (batch mean).

Conventions (stated once, used everywhere):

* **SSIM term** = ``1 - mean(SSIM)`` with :func:`kornia.metrics.ssim`, Gaussian window 11 (sigma 1.5),
  ``'same'`` reflect padding, ``max_val=1``. It lies in ``[0, 2]``. The authors' kornia ``SSIMLoss`` is
  ``(1 - SSIM) / 2``, so our SSIM terms weigh twice theirs at the same coefficient; the coefficients
  below are the brief's, applied to ``1 - SSIM``. SSIM needs ``H, W > 5``.
* **Gradient term** = ``mean |S(F) - max(S(V), S(I))|`` where ``S`` = ``|Gx| + |Gy|`` of
  :func:`kornia.filters.spatial_gradient` (normalised Sobel, i.e. kernels / 8, replicate borders): the
  same operator as the model's :func:`dstfuse_stream.model.sobel_magnitude` (a test pins the two equal;
  the runtime keeps its own so it does not need kornia).
* **Restoration term** (degradation-aware recipe only) = ``mean |D - V| + mean |grad D - grad V|``
  (signed Sobel gradients), against the sharp visible ``V``.
* **Intensity term** = ``mean |F - max(V, I)|``.
* **Perceptual term** = sum over the first ``num_blocks`` blocks of a small VGG-like extractor of
  ``MSE(phi_b(D), phi_b(I))``. The extractor (:class:`PerceptualExtractor`) is ImageNet-free: its convs
  hold fixed, seeded random (Kaiming-normal) weights, it is frozen (no grads, always in eval mode), follows
  the input's device/dtype, and lives in the loss, never in the model checkpoint.

Losses per module (weights as in the project brief):

* CST, per stage: ``100 * perceptual(D, I; i blocks) + ssim_term(D, V)``, ``i = 3`` for stage 1 and
  ``2`` for stage 2 (:func:`cst_loss` sums both stages). The degradation-aware recipe passes the sharp
  ``V``, a smaller perceptual weight and adds ``restoration_weight * restoration_term(D, V)`` (see
  ``docs/training.md`` for the measurements behind the weights).
* Fusion reconstruction, per image: ``MSE(R, X) + 5 * ssim_term(R, X)`` (:func:`reconstruction_loss`).
* Fusion stage: ``10 * gradient + 5 * intensity + 1 * ssim_term(F, V)`` (:func:`fusion_loss`).
* Mapping: ``10 * gradient + 1 * intensity`` (:func:`mapping_loss`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from dstfuse_stream.errors import InputShapeError

__all__ = [
    "SSIM_WINDOW",
    "ssim_term",
    "gradient_term",
    "intensity_term",
    "sobel_magnitude",
    "restoration_term",
    "PerceptualExtractor",
    "perceptual_loss",
    "PerceptualLoss",
    "cst_stage_loss",
    "cst_loss",
    "CSTLoss",
    "reconstruction_loss",
    "ReconstructionLoss",
    "fusion_loss",
    "FusionLoss",
    "mapping_loss",
    "MappingLoss",
]

SSIM_WINDOW = 11

Extractor = Callable[[torch.Tensor, int], Sequence[torch.Tensor]]


def _check_pair(x: object, y: object, names: tuple[str, str]) -> None:
    for t, name in zip((x, y), names):
        if not isinstance(t, torch.Tensor):
            raise InputShapeError(f"{name}: expected a torch.Tensor (B, 1, H, W), got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] != 1:
            raise InputShapeError(f"{name}: expected shape (B, 1, H, W), got {tuple(t.shape)}")
    if x.shape != y.shape:  # type: ignore[union-attr]
        raise InputShapeError(
            f"{names[0]} and {names[1]}: expected the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"  # type: ignore[union-attr]
        )


def ssim_term(x: torch.Tensor, y: torch.Tensor, *, window_size: int = SSIM_WINDOW) -> torch.Tensor:
    """``1 - mean(SSIM(x, y))`` (kornia, Gaussian window, reflect padding, ``max_val=1``)."""
    _check_pair(x, y, ("x", "y"))
    if min(x.shape[-2:]) <= window_size // 2:
        raise InputShapeError(f"ssim: expected H and W > {window_size // 2}, got {tuple(x.shape[-2:])}")
    return 1.0 - kornia.metrics.ssim(x, y, window_size, max_val=1.0).mean()


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Gx| + |Gy|`` (kornia normalised Sobel, replicate borders) of ``(B, 1, H, W)``."""
    return kornia.filters.spatial_gradient(x, mode="sobel", order=1, normalized=True).abs().sum(dim=2)


def restoration_term(restored: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """``mean |D - V| + mean |grad D - grad V|`` (signed normalised Sobel gradients, both axes)."""
    _check_pair(restored, sharp, ("restored", "sharp"))
    grad = kornia.filters.spatial_gradient(restored - sharp, mode="sobel", order=1, normalized=True)
    return (restored - sharp).abs().mean() + grad.abs().mean()


def gradient_term(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``mean |S(F) - max(S(V), S(I))|`` with ``S`` = :func:`sobel_magnitude`."""
    _check_pair(ir, vis, ("ir", "vis"))
    _check_pair(fused, vis, ("fused", "vis"))
    target = torch.maximum(sobel_magnitude(vis), sobel_magnitude(ir))
    return (sobel_magnitude(fused) - target).abs().mean()


def intensity_term(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``mean |F - max(V, I)|``."""
    _check_pair(ir, vis, ("ir", "vis"))
    _check_pair(fused, vis, ("fused", "vis"))
    return (fused - torch.maximum(vis, ir)).abs().mean()


class PerceptualExtractor(nn.Module):
    """Small VGG-like feature stack with fixed seeded random weights (ImageNet-free), frozen.

    Block ``b`` is ``[maxpool2 if b > 0] conv3x3-BN-ReLU x2`` at ``widths[b]`` channels, 1-channel
    input. Conv weights are Kaiming-normal from ``torch.Generator().manual_seed(seed)``, biases zero;
    BN layers keep their initial statistics (identity up to ``1/sqrt(1 + eps)``). Parameters never
    require grad and the module stays in eval mode even under ``.train()``.
    ``forward(x, num_blocks)`` returns the outputs of the first ``num_blocks`` blocks.
    """

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64), seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        blocks = []
        in_ch = 1
        for b, width in enumerate(widths):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if b > 0 else []
            for _ in range(2):
                conv = nn.Conv2d(in_ch, width, 3, padding=1, padding_mode="replicate")
                std = (2.0 / (in_ch * 9)) ** 0.5
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
                    conv.bias.zero_()
                layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                in_ch = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "PerceptualExtractor":
        """Always eval: the extractor is a fixed feature map."""
        return super().train(False)

    def forward(self, x: torch.Tensor, num_blocks: int) -> list[torch.Tensor]:
        if not 1 <= num_blocks <= len(self.blocks):
            raise InputShapeError(f"num_blocks: expected 1..{len(self.blocks)}, got {num_blocks}")
        feats = []
        for block in self.blocks[:num_blocks]:
            x = block(x)
            feats.append(x)
        return feats


def perceptual_loss(
    deblurred: torch.Tensor, ir: torch.Tensor, *, extractor: Extractor, num_blocks: int
) -> torch.Tensor:
    """``sum_b MSE(phi_b(D), phi_b(I))`` over the first ``num_blocks`` blocks of ``extractor``.

    ``extractor(x, num_blocks)`` returns a list of feature maps; gradients flow into ``deblurred`` only.
    """
    _check_pair(deblurred, ir, ("deblurred", "ir"))
    if isinstance(extractor, nn.Module):
        extractor = extractor.to(device=deblurred.device, dtype=deblurred.dtype)
    with torch.no_grad():
        target = [f.detach() for f in extractor(ir, num_blocks)]
    feats = extractor(deblurred, num_blocks)
    return sum(F.mse_loss(f, t) for f, t in zip(feats, target))  # type: ignore[return-value]


class PerceptualLoss(nn.Module):
    """Module form of :func:`perceptual_loss`; owns a frozen :class:`PerceptualExtractor`."""

    def __init__(self, *, num_blocks: int, seed: int = 0) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.extractor = PerceptualExtractor(seed=seed)

    def forward(self, deblurred: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return perceptual_loss(deblurred, ir, extractor=self.extractor, num_blocks=self.num_blocks)


def cst_stage_loss(
    deblurred: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    extractor: Extractor,
    num_blocks: int,
    perceptual_weight: float = 100.0,
    restoration_weight: float = 0.0,
) -> torch.Tensor:
    """One CST stage: ``perceptual_weight * perceptual(D, I; num_blocks) + ssim_term(D, V)
    [+ restoration_weight * restoration_term(D, V)]``."""
    loss = perceptual_weight * perceptual_loss(deblurred, ir, extractor=extractor, num_blocks=num_blocks) + ssim_term(
        deblurred, vis
    )
    if restoration_weight:
        loss = loss + restoration_weight * restoration_term(deblurred, vis)
    return loss


def cst_loss(
    stage1: torch.Tensor,
    stage2: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    extractor: Extractor,
    stage_blocks: tuple[int, int] = (3, 2),
    perceptual_weight: float = 100.0,
    restoration_weight: float = 0.0,
) -> torch.Tensor:
    """Sum of :func:`cst_stage_loss` for both stages (stage 1 uses more extractor blocks)."""
    return sum(
        cst_stage_loss(d, ir, vis, extractor=extractor, num_blocks=n, perceptual_weight=perceptual_weight,
                       restoration_weight=restoration_weight)
        for d, n in zip((stage1, stage2), stage_blocks)
    )  # type: ignore[return-value]


class CSTLoss(nn.Module):
    """Module form of :func:`cst_loss`; ``forward(cst_output, ir, vis)``."""

    def __init__(
        self,
        *,
        stage_blocks: tuple[int, int] = (3, 2),
        perceptual_weight: float = 100.0,
        restoration_weight: float = 0.0,
        extractor_widths: Sequence[int] = (16, 32, 64),
        seed: int = 0,
    ):
        super().__init__()
        self.stage_blocks = tuple(stage_blocks)
        self.perceptual_weight = perceptual_weight
        self.restoration_weight = restoration_weight
        self.extractor = PerceptualExtractor(widths=extractor_widths, seed=seed)

    def forward(self, cst_output: tuple[torch.Tensor, torch.Tensor], ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        stage1, stage2 = cst_output
        return cst_loss(
            stage1,
            stage2,
            ir,
            vis,
            extractor=self.extractor,
            stage_blocks=self.stage_blocks,  # type: ignore[arg-type]
            perceptual_weight=self.perceptual_weight,
            restoration_weight=self.restoration_weight,
        )


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, *, ssim_weight: float = 5.0) -> torch.Tensor:
    """``MSE(R, X) + 5 * ssim_term(R, X)`` for one reconstructed image."""
    _check_pair(recon, target, ("recon", "target"))
    return F.mse_loss(recon, target) + ssim_weight * ssim_term(recon, target)


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss`."""

    def __init__(self, *, ssim_weight: float = 5.0) -> None:
        super().__init__()
        self.ssim_weight = ssim_weight

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(recon, target, ssim_weight=self.ssim_weight)


def fusion_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    gradient_weight: float = 10.0,
    intensity_weight: float = 5.0,
    ssim_weight: float = 1.0,
) -> torch.Tensor:
    """``10 * gradient + 5 * intensity + 1 * ssim_term(F, V)``."""
    return (
        gradient_weight * gradient_term(fused, ir, vis)
        + intensity_weight * intensity_term(fused, ir, vis)
        + ssim_weight * ssim_term(fused, vis)
    )


class FusionLoss(nn.Module):
    """Module form of :func:`fusion_loss`."""

    def __init__(self, *, gradient_weight: float = 10.0, intensity_weight: float = 5.0, ssim_weight: float = 1.0):
        super().__init__()
        self.gradient_weight = gradient_weight
        self.intensity_weight = intensity_weight
        self.ssim_weight = ssim_weight

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return fusion_loss(
            fused,
            ir,
            vis,
            gradient_weight=self.gradient_weight,
            intensity_weight=self.intensity_weight,
            ssim_weight=self.ssim_weight,
        )


def mapping_loss(
    mapped: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    gradient_weight: float = 10.0,
    intensity_weight: float = 1.0,
) -> torch.Tensor:
    """``10 * gradient + 1 * intensity`` of the mapping module's output."""
    return gradient_weight * gradient_term(mapped, ir, vis) + intensity_weight * intensity_term(mapped, ir, vis)


class MappingLoss(nn.Module):
    """Module form of :func:`mapping_loss`."""

    def __init__(self, *, gradient_weight: float = 10.0, intensity_weight: float = 1.0) -> None:
        super().__init__()
        self.gradient_weight = gradient_weight
        self.intensity_weight = intensity_weight

    def forward(self, mapped: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return mapping_loss(
            mapped, ir, vis, gradient_weight=self.gradient_weight, intensity_weight=self.intensity_weight
        )
