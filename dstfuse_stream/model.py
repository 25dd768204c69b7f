"""The DSTFuse network: CST (style-transfer deblurring), fusion and mapping modules.

Everything works on gray (Y) images shaped ``(B, 1, H, W)`` with values in ``[0, 1]``, for any
``H x W`` (inputs are padded by edge replication to a multiple of 4 and the output is cropped
back) and on any device (fixed kernels are buffers; nothing calls ``.cuda()``).

Structure (paper section numbers in brackets; widths from :class:`DSTFuseConfig`):

* :class:`CSTModule` [CST]: a two-stage auto-encoder. Stage 1 sees the visible image ``V``
  concatenated with ``D_S = S(I) + V`` (Sobel edges of the IR image added to the visible, Eq. 1);
  ``D_S`` also enters the decoder through one strided conv. Stage 2 re-runs the same encoder/decoder
  trunk on stage 1's output, without edges. Each stage has its own input block.
* :class:`FusionModule` [fusion]: encoder of 3 EBlocks, decoder of 2 DBlocks + OutBlock, residual
  blocks, skips first-last and second-second-last. ``reconstruct(x)`` is the auto-encoder path of the
  reconstruction stage; ``fuse(ir, vis)`` combines the deepest features with the attention rule of
  Eq. 6: ``phi = (phi_V + phi_I) + (phi_V + phi_I) * (1 - A(I))``.
* :class:`MappingModule` [mapping]: ``O = (D2 + V) * A(I) + (F + V) * (1 - A(I))`` (Eq. 9), where
  ``D2`` and ``F`` are the residuals that the CST and fusion modules add to ``V``; with their image
  outputs ``D2' = D2 + V`` and ``F' = F + V`` this is ``O = D2' * A(I) + F' * (1 - A(I))``.
* :class:`DSTFuse`: the inference graph ``forward(ir, vis) -> fused``.

Deviations from the authors' partial code (NaNagi2020/DSTFuse), each for a stated reason:

* Residual outputs are ``sigmoid(d + logit(x))`` instead of ``sigmoid(d + x)``: with ``d = 0`` the
  block is the identity, so a barely trained network already returns its input rather than a
  contrast-compressed copy (``sigmoid(x)`` maps ``[0, 1]`` into ``[0.5, 0.73]``).
* The attention map is computed at full resolution and average-pooled by 4 to the feature map,
  instead of interpolated to a square ``size`` (the authors' code only worked for square input).
* The Sobel magnitude ``|Gx| + |Gy|`` uses kernels normalised by 1/8, so edges lie in ``[0, 1]``
  and ``D_S`` in ``[0, 2]`` without the authors' extra sigmoid.
* Convs pad by edge replication (valid for any size, including 1-pixel-wide feature maps).
* Eq. 9 is applied to the modules' image outputs, which already contain ``+ V`` (their residual
  connection), so ``O`` is a per-pixel convex blend in ``[0, 1]``. The authors' code added ``V`` a
  second time and squashed with ``sigmoid``, which maps ``[0, 2]`` into ``[0.5, 0.88]`` (never dark);
  a learnt slope/offset on that sigmoid was tried here and flattened IR hot targets.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.errors import InputShapeError

__all__ = [
    "SIZE_MULTIPLE",
    "check_image",
    "check_image_pair",
    "sobel_magnitude",
    "SobelMagnitude",
    "IRAttention",
    "CSTOutput",
    "CSTModule",
    "FusionModule",
    "MappingModule",
    "DSTFuseIntermediates",
    "DSTFuse",
]

#: Inputs are padded to a multiple of this (two stride-2 levels).
SIZE_MULTIPLE = 4
_LOGIT_EPS = 1e-3


def check_image(x: object, name: str) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is a floating tensor shaped ``(B, 1, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise InputShapeError(f"{name}: expected a torch.Tensor (B, 1, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputShapeError(f"{name}: expected shape (B, 1, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputShapeError(f"{name}: expected a floating dtype with values in [0, 1], got {x.dtype}")
    if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise InputShapeError(f"{name}: expected non-empty (B, 1, H, W), got {tuple(x.shape)}")


def check_image_pair(ir: object, vis: object) -> None:
    """Check ``ir`` and ``vis`` individually and that they have the same shape."""
    check_image(ir, "ir")
    check_image(vis, "vis")
    if ir.shape != vis.shape:  # type: ignore[union-attr]
        raise InputShapeError(
            f"ir and vis: expected the same shape, got ir {tuple(ir.shape)} and vis {tuple(vis.shape)}"  # type: ignore[union-attr]
        )


def _sobel_kernels() -> torch.Tensor:
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    return torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3)


def sobel_magnitude(x: torch.Tensor, kernels: torch.Tensor | None = None) -> torch.Tensor:
    """``|Gx| + |Gy|`` of a ``(B, 1, H, W)`` image, Sobel kernels scaled by 1/8, edge-replicated borders.

    A constant image gives exactly zero; a unit step gives 0.5 on the two columns beside it.
    """
    if kernels is None:
        kernels = _sobel_kernels().to(device=x.device, dtype=x.dtype)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.abs().sum(dim=1, keepdim=True)


class SobelMagnitude(nn.Module):
    """Module form of :func:`sobel_magnitude`; kernels are a (non-persistent) buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernels", _sobel_kernels(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sobel_magnitude(x, self.kernels.to(x.dtype))


def _residual_output(delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``sigmoid(delta + logit(base))``: identity for ``delta == 0``, always in (0, 1)."""
    return torch.sigmoid(delta + torch.logit(base, eps=_LOGIT_EPS))


class ConvLayer(nn.Sequential):
    """Conv with edge-replicated 'same' padding, followed by ReLU unless ``last``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, *, last: bool = False):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, padding_mode="replicate")
        ]
        if not last:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` at constant width."""

    def __init__(self, width: int, kernel_size: int):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(width, width, kernel_size), ConvLayer(width, width, kernel_size, last=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EBlock(nn.Sequential):
    """Encoder block: (strided) conv to ``out_ch`` then ``num_res`` residual blocks."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, num_res: int, kernel_size: int):
        super().__init__(
            ConvLayer(in_ch, out_ch, kernel_size, stride), *[ResBlock(out_ch, kernel_size) for _ in range(num_res)]
        )


class DBlock(nn.Sequential):
    """Decoder block: ``num_res`` residual blocks then a x2 transposed conv to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, num_res: int, kernel_size: int):
        super().__init__(
            *[ResBlock(in_ch, kernel_size) for _ in range(num_res)],
            nn.ConvTranspose2d(in_ch, out_ch, kernel_size, 2, padding=kernel_size // 2, output_padding=1),
        )


class OutBlock(nn.Sequential):
    """Output block: ``num_res`` residual blocks then a conv to one channel (no activation)."""

    def __init__(self, in_ch: int, num_res: int, kernel_size: int):
        super().__init__(*[ResBlock(in_ch, kernel_size) for _ in range(num_res)], ConvLayer(in_ch, 1, kernel_size, last=True))


class _Trunk(nn.Module):
    """Encoder levels 2-3 and the decoder, shared by the paths of one module."""

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        w1, w2, w3 = config.widths
        n, k = config.num_res_blocks, config.kernel_size
        self.down1 = EBlock(w1, w2, 2, n, k)
        self.down2 = EBlock(w2, w3, 2, n, k)
        self.up1 = DBlock(w3, w2, n, k)
        self.up2 = DBlock(w2, w1, n, k)
        self.out = OutBlock(w1, n, k)

    def encode(self, e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e2 = self.down1(e1)
        return e2, self.down2(e2)

    def decode(self, deep: torch.Tensor, skip2: torch.Tensor, skip1: torch.Tensor) -> torch.Tensor:
        """Decoder with skips second-second-last (``skip2``) and first-last (``skip1``)."""
        d2 = self.up1(deep)
        d1 = self.up2(d2 + skip2)
        return self.out(d1 + skip1)


class IRAttention(nn.Module):
    """Attention map ``A(I)`` in (0, 1) from the IR image: conv-ELU-conv-ELU-conv1x1-sigmoid.

    ``forward(ir, pool=s)`` average-pools the full-resolution map by ``s`` (1 = no pooling).
    """

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, padding_mode="replicate"),
            nn.ELU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
            nn.ELU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, ir: torch.Tensor, pool: int = 1) -> torch.Tensor:
        att = torch.sigmoid(self.body(ir))
        return F.avg_pool2d(att, pool) if pool > 1 else att


class CSTOutput(NamedTuple):
    """The CST module's two stages, both ``(B, 1, H, W)`` in (0, 1)."""

    stage1: torch.Tensor
    stage2: torch.Tensor


class CSTModule(nn.Module):
    """Two-stage style-transfer auto-encoder restyling the (blurred) visible image toward IR."""

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        w1, w2, _ = config.widths
        n, k = config.num_res_blocks, config.kernel_size
        self.sobel = SobelMagnitude()
        self.in_edges = EBlock(2, w1, 1, n, k)  # stage 1: [V, D_S]
        self.in_plain = EBlock(1, w1, 1, n, k)  # stage 2: D1 only
        self.edge_conv = ConvLayer(1, w2, 3, 2)  # D_S -> decoder at 1/2 resolution
        self.trunk = _Trunk(config)

    def edge_guidance(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """``D_S = S(I) + V`` (Eq. 1)."""
        return self.sobel(ir) + vis

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> CSTOutput:
        d_s = self.edge_guidance(ir, vis)
        e1 = self.in_edges(torch.cat([vis, d_s], dim=1))
        e2, e3 = self.trunk.encode(e1)
        stage1 = _residual_output(self.trunk.decode(e3, e2 + self.edge_conv(d_s), e1), vis)
        e1 = self.in_plain(stage1)
        e2, e3 = self.trunk.encode(e1)
        stage2 = _residual_output(self.trunk.decode(e3, e2, e1), stage1)
        return CSTOutput(stage1, stage2)


class FusionModule(nn.Module):
    """Auto-encoder with an attention fusion layer between the shared encoder and the decoder."""

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        n, k = config.num_res_blocks, config.kernel_size
        self.inblock = EBlock(1, config.widths[0], 1, n, k)
        self.trunk = _Trunk(config)
        self.attention = IRAttention(config.attention_width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e1 = self.inblock(x)
        e2, e3 = self.trunk.encode(e1)
        return e1, e2, e3

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction-stage path: encode and decode one image (IR or visible)."""
        e1, e2, e3 = self.encode(x)
        return _residual_output(self.trunk.decode(e3, e2, e1), x)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fusion-stage path: Eq. 6 on the deepest features, visible skips, residual on ``vis``."""
        v1, v2, v3 = self.encode(vis)
        _, _, i3 = self.encode(ir)
        phi = v3 + i3
        att = self.attention(ir, pool=ir.shape[-1] // phi.shape[-1])
        phi = phi + phi * (1.0 - att)
        return _residual_output(self.trunk.decode(phi, v2, v1), vis)


class MappingModule(nn.Module):
    """Eq. 9: ``O = D2' * A(I) + F' * (1 - A(I))`` with ``D2'``, ``F'`` the CST and fusion images."""

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        self.attention = IRAttention(config.attention_width)

    def forward(self, ir: torch.Tensor, deblurred: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        att = self.attention(ir)
        return deblurred * att + fused * (1.0 - att)


class DSTFuseIntermediates(NamedTuple):
    """Every image the inference graph makes, all ``(B, 1, H, W)`` (see :meth:`DSTFuse.intermediates`).

    ``deblurred`` is the CST stage-2 output, ``fusion`` the fusion module's image, ``attention`` the
    mapping attention ``A`` in [0, 1] (weight of ``deblurred``), ``fused`` the final output.
    """

    deblurred: torch.Tensor
    fusion: torch.Tensor
    attention: torch.Tensor
    fused: torch.Tensor


class DSTFuse(nn.Module):
    """The full inference graph: ``forward(ir, vis) -> fused``, all ``(B, 1, H, W)`` in [0, 1]."""

    def __init__(self, config: DSTFuseConfig | None = None):
        super().__init__()
        self.config = config if config is not None else DSTFuseConfig()
        self.cst = CSTModule(self.config)
        self.fusion = FusionModule(self.config)
        self.mapping = MappingModule(self.config)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.intermediates(ir, vis).fused

    def intermediates(self, ir: torch.Tensor, vis: torch.Tensor) -> DSTFuseIntermediates:
        """The CST, fusion and mapping outputs and the attention map, cropped to the input size."""
        check_image_pair(ir, vis)
        height, width = ir.shape[-2:]
        ir_p, vis_p = pad_to_multiple(ir), pad_to_multiple(vis)
        deblurred = self.cst(ir_p, vis_p).stage2
        fusion = self.fusion.fuse(ir_p, vis_p)
        att = self.mapping.attention(ir_p)
        fused = deblurred * att + fusion * (1.0 - att)
        return DSTFuseIntermediates(*(t[..., :height, :width] for t in (deblurred, fusion, att, fused)))


def pad_to_multiple(x: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Pad bottom/right by edge replication so H and W are multiples of ``multiple``."""
    pad_h = (-x.shape[-2]) % multiple
    pad_w = (-x.shape[-1]) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
