"""The DSTFuse network: CST (style-transfer deblurring), fusion and mapping modules.

Everything works on gray (Y) images shaped ``(B, 1, H, W)`` with values in ``[0, 1]``, for any
``H x W`` (inputs are padded by edge replication to a multiple of ``config.size_multiple`` and the
output is cropped back) and on any device (fixed kernels are buffers; nothing calls ``.cuda()``).

Structure (paper section numbers in brackets; widths and switches from :class:`DSTFuseConfig`):

* :class:`CSTModule` [CST]: a two-stage auto-encoder. Stage 1 sees the visible image ``V``
  concatenated with ``D_S = S(I) + V`` (Sobel edges of the IR image added to the visible, Eq. 1);
  ``D_S`` also enters the decoder through one strided conv. Stage 2 re-runs the same encoder/decoder
  trunk on stage 1's output, without edges. Each stage has its own input block.
* :class:`FusionModule` [fusion]: encoder of 3 EBlocks, decoder of 2 DBlocks + OutBlock, residual
  blocks, skips first-last and second-second-last. ``reconstruct(x)`` is the auto-encoder path of the
  reconstruction stage; ``fuse(ir, vis)`` combines the deepest features with the attention rule of
  Eq. 6: ``phi = (phi_V + phi_I) + (phi_V + phi_I) * (1 - A(I))``.
* :class:`MappingModule` [mapping]: ``O = (D2 + V) * A + (F + V) * (1 - A)`` (Eq. 9), where ``D2`` and
  ``F`` are the residuals that the CST and fusion modules add to ``V``; with their image outputs
  ``D2' = D2 + V`` and ``F' = F + V`` this is ``O = D2' * A + F' * (1 - A)``.
* :class:`DSTFuse`: the inference graph ``forward(ir, vis) -> fused`` (and :meth:`DSTFuse.intermediates`).

Deviations from the authors' partial code (NaNagi2020/DSTFuse), each for a stated reason:

* Residual outputs are ``sigmoid(d + logit(x))`` (``residual="logit"``, the ``paper``/``lite`` presets)
  instead of ``sigmoid(d + x)``: with ``d = 0`` the block is the identity rather than a
  contrast-compressed copy. The ``stream`` preset's CST adds a plain ``x + d`` (``"linear"``): the
  logit form's gradient vanishes in dark pixels (``sigmoid'`` of ``logit(0.02)`` is 0.02), where night
  visible images live.
* The attention maps are computed at full resolution (average-pooled to the feature map for Eq. 6)
  instead of interpolated to a square ``size`` (the authors' code only worked for square input).
* The Sobel magnitude ``|Gx| + |Gy|`` uses kernels normalised by 1/8, so edges lie in ``[0, 1]``
  and ``D_S`` in ``[0, 2]`` without the authors' extra sigmoid.
* Convs pad by edge replication (valid for any size, including 1-pixel-wide feature maps).
* Eq. 9 is applied to the modules' image outputs, which already contain ``+ V`` (their residual
  connection), so ``O`` is a per-pixel convex blend in ``[0, 1]``. The authors' code added ``V`` a
  second time and squashed with ``sigmoid``, which maps ``[0, 2]`` into ``[0.5, 0.88]`` (never dark).

The ``stream`` preset (the shipped default) adds, for CPU speed and for deblurring (measurements in
``docs/training.md``):

* ``pixel_unshuffle=2``: every module starts with a space-to-depth by 2 and ends with a
  depth-to-space, so its convs run at 1/2, 1/4 and 1/8 resolution: 4x the receptive field per MAC
  (a 21 px motion blur spans 3 px at the deepest level), at 2x the width of ``lite`` for the same MACs.
* ``cst_ir_input``: stage 1 also sees the IR image itself (the Sobel magnitude loses edge polarity).
* ``fusion_head="blend"``: the fusion decoder outputs two per-pixel weights that pick between the
  two sources' base and detail bands (see :class:`FusionModule`): the output is built from the
  sources' own pixels, so it cannot invent texture or amplify sensor grain, and the weights are smooth
  decisions that can be made at a lower resolution (``DSTFuse.set_work_scale``).
* ``mapping="before_fusion"``: the mapping attention sees the visible input, the CST output and both
  sources' Sobel magnitudes besides the IR image (``A(I)`` from IR alone cannot know where the
  *visible* image is blurred), and Eq. 9's blend is made *before* the fusion: the CST output replaces
  the visible input where that is blurred, ``V' = D2' A + V (1 - A)``, and the fusion module fuses
  ``V'`` with the IR image. Blended after the fusion, as in the paper, every pixel given to the CST
  output would lose the IR content (the CST output is a restored *visible* image).
* ``upsampler_width=8``: at a reduced work scale (``set_work_scale(0.5)``, the CPU default) a small
  full-resolution CNN (:class:`BlendMapUpsampler`) refines the upsampled blend maps, distilled from the
  same weights' full-resolution output, so the fast path stays within the fidelity gate of the full one.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.errors import ConfigError, InputShapeError

__all__ = [
    "SIZE_MULTIPLE",
    "check_image",
    "check_image_pair",
    "sobel_magnitude",
    "SobelMagnitude",
    "GaussianBlur",
    "AttentionMap",
    "stem",
    "CSTOutput",
    "CSTModule",
    "FusionModule",
    "MappingModule",
    "BlendMapUpsampler",
    "DSTFuseIntermediates",
    "ReducedScale",
    "DSTFuse",
]

#: Default padding multiple (two stride-2 levels); a model pads to ``config.size_multiple``.
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


def _gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of ``(B, C, H, W)`` images, edge-replicated borders; kernel is a buffer."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.register_buffer("kernel", _gaussian_kernel_1d(sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(x.dtype)
        r = k.numel() // 2
        b, c, h, w = x.shape
        x = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode="replicate")  # static 1-channel weights (ONNX)
        x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        return x.reshape(b, c, h, w)


def _add_residual(delta: torch.Tensor, base: torch.Tensor, rule: str) -> torch.Tensor:
    """``"logit"``: ``sigmoid(delta + logit(base))`` (identity at 0, always in (0, 1)); ``"linear"``: ``base + delta``."""
    if rule == "linear":
        return base + delta
    return torch.sigmoid(delta + torch.logit(base, eps=_LOGIT_EPS))


def _space_to_depth(factor: int) -> nn.Module:
    return nn.PixelUnshuffle(factor) if factor > 1 else nn.Identity()


def _depth_to_space(factor: int) -> nn.Module:
    return nn.PixelShuffle(factor) if factor > 1 else nn.Identity()


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
    """Output block: ``num_res`` residual blocks then a conv to ``out_ch`` channels (no activation)."""

    def __init__(self, in_ch: int, num_res: int, kernel_size: int, out_ch: int = 1):
        super().__init__(
            *[ResBlock(in_ch, kernel_size) for _ in range(num_res)], ConvLayer(in_ch, out_ch, kernel_size, last=True)
        )


def stem(in_images: int, config: DSTFuseConfig) -> nn.Sequential:
    """Input block: space-to-depth by ``pixel_unshuffle`` (if > 1), then an EBlock to ``widths[0]``.

    With ``pixel_unshuffle=1`` it is exactly the EBlock (same parameter names as the first release).
    """
    s = config.pixel_unshuffle
    block = EBlock(in_images * s * s, config.widths[0], 1, config.num_res_blocks, config.kernel_size)
    return nn.Sequential(nn.PixelUnshuffle(s), *block) if s > 1 else block


class _Trunk(nn.Module):
    """Encoder levels 2-3 and the decoder, shared by the paths of one module.

    The decoder ends in ``out_maps`` full-resolution maps (pixel-shuffled when the stem unshuffled).
    """

    def __init__(self, config: DSTFuseConfig, out_maps: int = 1):
        super().__init__()
        w1, w2, w3 = config.widths
        n, k, s = config.num_res_blocks, config.kernel_size, config.pixel_unshuffle
        self.down1 = EBlock(w1, w2, 2, n, k)
        self.down2 = EBlock(w2, w3, 2, n, k)
        self.up1 = DBlock(w3, w2, n, k)
        self.up2 = DBlock(w2, w1, n, k)
        self.out = OutBlock(w1, n, k, out_maps * s * s)
        self.shuffle = _depth_to_space(s)

    def encode(self, e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e2 = self.down1(e1)
        return e2, self.down2(e2)

    def decode(self, deep: torch.Tensor, skip2: torch.Tensor, skip1: torch.Tensor) -> torch.Tensor:
        """Decoder with skips second-second-last (``skip2``) and first-last (``skip1``)."""
        d2 = self.up1(deep)
        d1 = self.up2(d2 + skip2)
        return self.shuffle(self.out(d1 + skip1))


class AttentionMap(nn.Module):
    """A full-resolution attention map in (0, 1) from ``in_images`` images.

    ``[space-to-depth] conv3x3-ELU [conv3x3 (dilated)-ELU per entry of dilations] conv1x1
    [depth-to-space] sigmoid``; with ``pixel_unshuffle=1`` and ``dilations=(1,)`` this is the
    authors' conv-ELU-conv-ELU-conv1x1-sigmoid. ``forward(*images, pool=s)`` average-pools the map by
    ``s`` (1 = no pooling).
    """

    def __init__(self, in_images: int, width: int, *, pixel_unshuffle: int = 1, dilations: Sequence[int] = (1,)):
        super().__init__()
        s = pixel_unshuffle
        layers: list[nn.Module] = [nn.Conv2d(in_images * s * s, width, 3, padding=1, padding_mode="replicate"), nn.ELU(inplace=True)]
        for d in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate"), nn.ELU(inplace=True)]
        layers.append(nn.Conv2d(width, s * s, 1))
        self.unshuffle = _space_to_depth(s)
        self.body = nn.Sequential(*layers)
        self.shuffle = _depth_to_space(s)

    def forward(self, *images: torch.Tensor, pool: int = 1) -> torch.Tensor:
        x = images[0] if len(images) == 1 else torch.cat(images, dim=1)
        att = torch.sigmoid(self.shuffle(self.body(self.unshuffle(x))))
        return F.avg_pool2d(att, pool) if pool > 1 else att


class CSTOutput(NamedTuple):
    """The CST module's two stages, both ``(B, 1, H, W)`` (in (0, 1) for the ``logit`` residual;
    unclamped for ``linear``)."""

    stage1: torch.Tensor
    stage2: torch.Tensor


class CSTModule(nn.Module):
    """Two-stage style-transfer auto-encoder restoring the (blurred) visible image, guided by IR."""

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        s = config.pixel_unshuffle
        self.residual = config.residual
        self.ir_input = config.cst_ir_input
        self.sobel = SobelMagnitude()
        self.in_edges = stem(3 if config.cst_ir_input else 2, config)  # stage 1: [V, D_S (, I)]
        self.in_plain = stem(1, config)  # stage 2: D1 only
        edge_conv = ConvLayer(s * s, config.widths[1], 3, 2)  # D_S -> decoder at the second level
        self.edge_conv = nn.Sequential(nn.PixelUnshuffle(s), edge_conv) if s > 1 else edge_conv
        self.trunk = _Trunk(config)

    def edge_guidance(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """``D_S = S(I) + V`` (Eq. 1)."""
        return self.sobel(ir) + vis

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> CSTOutput:
        d_s = self.edge_guidance(ir, vis)
        e1 = self.in_edges(torch.cat([vis, d_s, ir] if self.ir_input else [vis, d_s], dim=1))
        e2, e3 = self.trunk.encode(e1)
        stage1 = _add_residual(self.trunk.decode(e3, e2 + self.edge_conv(d_s), e1), vis, self.residual)
        e1 = self.in_plain(stage1)
        e2, e3 = self.trunk.encode(e1)
        stage2 = _add_residual(self.trunk.decode(e3, e2, e1), stage1, self.residual)
        return CSTOutput(stage1, stage2)


class FusionModule(nn.Module):
    """Auto-encoder with an attention fusion layer between the shared encoder and the decoder.

    ``fusion_head="residual"`` (paper): the decoder sees the fused deep features and the visible skips
    and outputs an image residual on ``V``. ``fusion_head="blend"``: its skips are the *differences*
    of the two sources' features (``v1 - i1``, ``v2 - i2``): the fused deep features are symmetric in
    the two sources, and a choice between them needs to know, at fine scale, which one is which and
    how they differ. It outputs two maps, the IR share of the base band ``w_base`` and of the detail band ``w_detail``; with
    ``X_b = G(X)`` (Gaussian, ``blend_sigma``) and ``X_d = X - X_b``::

        F = V_b + w_base (I_b - V_b) + V_d + w_detail (I_d - V_d)

    so the fused image is made of the sources' own bands: it cannot invent texture or amplify grain
    beyond the sources'. The weights are ``sigmoid(m)`` of the decoder's maps ``m``; training keeps
    ``|m| <= 4`` (weights in [0.018, 0.982]) with a hinge penalty, so near-binary choices are possible
    but never saturate to a dead gradient. The final conv starts at zero, i.e. at the average of the
    two sources.
    """

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        self.head = config.fusion_head
        self.residual = config.residual
        blend = config.fusion_head == "blend"
        self.inblock = stem(1, config)
        self.trunk = _Trunk(config, out_maps=2 if blend else 1)
        self.attention = AttentionMap(1, config.attention_width, pixel_unshuffle=config.pixel_unshuffle)
        if blend:
            self.bands = GaussianBlur(config.blend_sigma)
            last = self.trunk.out[-1][0]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e1 = self.inblock(x)
        e2, e3 = self.trunk.encode(e1)
        return e1, e2, e3

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction-stage path (``residual`` head only): encode and decode one image."""
        if self.head != "residual":
            raise ConfigError("reconstruct: the 'blend' fusion head has no reconstruction path (it blends two sources)")
        e1, e2, e3 = self.encode(x)
        return _add_residual(self.trunk.decode(e3, e2, e1), x, self.residual)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fusion-stage path: Eq. 6 on the deepest features, then the head."""
        if self.head == "residual":
            return _add_residual(self.maps(ir, vis), vis, self.residual)
        return self.blend(ir, vis, self.maps(ir, vis))

    def maps(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The decoder's output: the image residual (``residual`` head) or the two blend maps (logits)."""
        (v1, i1), (v2, i2), (v3, i3) = (t.chunk(2) for t in self.encode(torch.cat([vis, ir])))
        phi = v3 + i3
        att = self.attention(ir, pool=ir.shape[-1] // phi.shape[-1])
        phi = phi + phi * (1.0 - att)
        if self.head == "residual":
            return self.trunk.decode(phi, v2, v1)
        return self.trunk.decode(phi, v2 - i2, v1 - i1)

    def blend(self, ir: torch.Tensor, vis: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """The ``blend`` head's image from its two maps ``(B, 2, H, W)`` (unbounded logits)."""
        w_base, w_detail = torch.sigmoid(maps).split(1, dim=1)
        vis_b, ir_b = self.bands(torch.cat([vis, ir], dim=1)).split(1, dim=1)
        return vis + w_base * (ir_b - vis_b) + w_detail * ((ir - ir_b) - (vis - vis_b))


class MappingModule(nn.Module):
    """The mapping module: an attention ``A`` in (0, 1) that weighs the CST output (Eq. 9).

    ``mapping="after_fusion"`` (paper): ``A(I)`` from the IR image, ``O = D2' * A + F' * (1 - A)`` with
    ``D2'``, ``F'`` the CST and fusion images. ``"before_fusion"``: ``A`` from the IR, the visible input,
    the CST output and two maps of blur evidence (dilated convs), and the blend
    ``V' = D2' * A + V * (1 - A)`` is the visible input of the fusion module. The blur evidence is the
    physical cue the paper names: the IR stays sharp where the visible is blurred, so
    ``log((box(S(V)) + e) / (box(S(I)) + e))`` (local visible edge strength against the IR's, 15 px
    box, ``e`` = 0.01) drops where the visible is blurred; and ``box(|D2' - V|)``, how much the CST
    changed the visible image there.
    """

    def __init__(self, config: DSTFuseConfig):
        super().__init__()
        self.before_fusion = config.mapping == "before_fusion"
        self.sobel = SobelMagnitude()
        self.box = nn.AvgPool2d(15, stride=1, padding=7, count_include_pad=False)
        self.attention = AttentionMap(
            5 if self.before_fusion else 1, config.attention_width, pixel_unshuffle=config.pixel_unshuffle,
            dilations=(1, 2, 4) if self.before_fusion else (1,),
        )

    def attention_map(self, ir: torch.Tensor, vis: torch.Tensor, deblurred: torch.Tensor) -> torch.Tensor:
        """``A`` in (0, 1), ``(B, 1, H, W)``: the weight of the CST output."""
        if not self.before_fusion:
            return self.attention(ir)
        return self.attention(ir, vis, deblurred, *self.blur_evidence(ir, vis, deblurred))

    def blur_evidence(self, ir: torch.Tensor, vis: torch.Tensor, deblurred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log edge-strength ratio visible / IR, local CST change)``, each ``(B, 1, H, W)``."""
        ratio = torch.log((self.box(self.sobel(vis)) + 0.01) / (self.box(self.sobel(ir)) + 0.01))
        return ratio, 10.0 * self.box((deblurred - vis).abs())

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, deblurred: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``deblurred * A + other * (1 - A)``; ``other`` is the fusion image (after) or the visible (before)."""
        att = self.attention_map(ir, vis, deblurred)
        return deblurred * att + other * (1.0 - att)


class BlendMapUpsampler(nn.Module):
    """Learned guided upsampling of the fusion module's blend maps, for work scales below 1.

    At a reduced work scale the blend logits are decided at low resolution; upsampled bilinearly
    they lose the fine, per-pixel choices the full-resolution model makes between the two sources'
    detail bands (about 31.5 dB PSNR against the full-resolution output on real frames). This small
    full-resolution CNN (three 3x3 convs, ``width`` channels; the idea of deep guided filters, Wu et
    al. 2018) sees the bilinearly upsampled logits with the full-resolution IR and (mapped) visible
    images and adds a correction to the logits::

        m = up(m_low) + net([I, V', up(m_low) / 4])

    Its last conv starts at zero (so an untrained upsampler is the bilinear one). It is trained by
    ``python -m dstfuse_train.distill`` to make the reduced-scale output match the same model's
    full-resolution output, with every other weight frozen; at work scale 1 it is not used.
    """

    def __init__(self, width: int):
        super().__init__()
        last = nn.Conv2d(width, 2, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # zero padding inside the convs: edge replication would export as separate padding ops on
        # full-resolution tensors, with layout conversions around every conv (about twice as slow)
        self.body = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), last)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (``(B, 2, H, W)``, already upsampled) refined with the full-resolution ``ir``, ``vis``."""
        return logits + self.body(torch.cat([ir, vis, logits * 0.25], dim=1))


class DSTFuseIntermediates(NamedTuple):
    """Every image the inference graph makes, all ``(B, 1, H, W)`` in [0, 1] (see :meth:`DSTFuse.intermediates`).

    ``deblurred`` is the CST stage-2 output, ``fusion`` the fusion module's image (for
    ``mapping="before_fusion"`` it fuses the mapped visible image and equals ``fused``), ``attention``
    the mapping attention ``A`` (weight of ``deblurred``), ``fused`` the final output.
    """

    deblurred: torch.Tensor
    fusion: torch.Tensor
    attention: torch.Tensor
    fused: torch.Tensor


class ReducedScale(NamedTuple):
    """What :meth:`DSTFuse.reduced_scale` decides at low resolution, all at full resolution:
    ``deblurred`` (the visible image plus the upsampled CST correction), ``attention``, ``fusion_vis``
    (the visible image the fusion module blends: the mapped one for ``before_fusion``) and ``logits``
    (the fusion module's two blend maps, bilinearly upsampled, before :class:`BlendMapUpsampler`); and
    the last two at low resolution, as the networks made them (``fusion_vis_low``, ``logits_low``)."""

    deblurred: torch.Tensor
    attention: torch.Tensor
    fusion_vis: torch.Tensor
    logits: torch.Tensor
    fusion_vis_low: torch.Tensor
    logits_low: torch.Tensor


class DSTFuse(nn.Module):
    """The full inference graph: ``forward(ir, vis) -> fused``, all ``(B, 1, H, W)`` in [0, 1].

    ``work_scale`` (1, 0.5 or 0.25; an inference setting, not part of the checkpoint) runs the three
    networks on area-downscaled inputs and brings their *decisions* back to full resolution: the
    blend maps and the attention are upsampled (bilinear) and applied to the full-resolution sources'
    bands, and the CST's correction (``D2 - V`` at low resolution) is upsampled and added to the
    full-resolution visible image. Fine detail therefore still comes from the full-resolution
    sources, at 1/4 (or 1/16) of the network cost. Only the ``blend`` fusion head supports it. When the
    config has a :class:`BlendMapUpsampler` (``upsampler_width``), it refines the upsampled blend maps
    with the full-resolution images.
    """

    def __init__(self, config: DSTFuseConfig | None = None):
        super().__init__()
        self.config = config if config is not None else DSTFuseConfig()
        self.cst = CSTModule(self.config)
        self.fusion = FusionModule(self.config)
        self.mapping = MappingModule(self.config)
        self.upsampler = BlendMapUpsampler(self.config.upsampler_width) if self.config.upsampler_width else None
        self.work_scale = 1.0

    @property
    def size_multiple(self) -> int:
        """Inputs are padded (edge replication) to a multiple of this and cropped back."""
        return self.config.size_multiple

    def set_work_scale(self, scale: float) -> "DSTFuse":
        """Run the networks at ``scale`` x the input resolution (1, 0.5 or 0.25); returns ``self``."""
        if scale not in (1.0, 0.5, 0.25):
            raise ConfigError(f"work_scale: expected 1, 0.5 or 0.25, got {scale}")
        if scale != 1.0 and self.config.fusion_head != "blend":
            raise ConfigError(f"work_scale {scale}: needs the 'blend' fusion head; preset {self.config.name!r} has {self.config.fusion_head!r}")
        self.work_scale = float(scale)
        return self

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.intermediates(ir, vis).fused

    def intermediates(self, ir: torch.Tensor, vis: torch.Tensor) -> DSTFuseIntermediates:
        """The CST, fusion and mapping outputs and the attention map, cropped to the input size."""
        check_image_pair(ir, vis)
        height, width = ir.shape[-2:]
        factor = int(round(1.0 / self.work_scale))
        ir_p, vis_p = (pad_to_multiple(x, self.size_multiple * factor) for x in (ir, vis))
        if factor == 1:
            deblurred = self.cst(ir_p, vis_p).stage2
            att = self.mapping.attention_map(ir_p, vis_p, deblurred)
            if self.mapping.before_fusion:
                fusion = fused = self.fusion.fuse(ir_p, deblurred * att + vis_p * (1.0 - att))
            else:
                fusion = self.fusion.fuse(ir_p, vis_p)
                fused = deblurred * att + fusion * (1.0 - att)
        else:
            low = self.reduced_scale(ir_p, vis_p, factor)
            deblurred, att = low.deblurred, low.attention
            fusion = self.fusion.blend(ir_p, low.fusion_vis, self.upsample_maps(ir_p, low.fusion_vis, low.logits))
            fused = fusion if self.mapping.before_fusion else deblurred * att + fusion * (1.0 - att)
        return DSTFuseIntermediates(*(t[..., :height, :width].clamp(0.0, 1.0) for t in (deblurred, fusion, att, fused)))

    def reduced_scale(self, ir: torch.Tensor, vis: torch.Tensor, factor: int) -> "ReducedScale":
        """The networks' decisions made on ``ir``, ``vis`` (padded to a multiple of ``size_multiple * factor``)
        area-downscaled by ``factor``, brought back to full resolution (bilinear); see :class:`ReducedScale`."""
        ir_l, vis_l = F.avg_pool2d(ir, factor), F.avg_pool2d(vis, factor)
        deblurred_l = self.cst(ir_l, vis_l).stage2
        att_l = self.mapping.attention_map(ir_l, vis_l, deblurred_l)
        up = lambda t: F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)  # noqa: E731
        deblurred = vis + up(deblurred_l - vis_l)
        if self.mapping.before_fusion:
            fusion_vis_l = deblurred_l * att_l + vis_l * (1.0 - att_l)
            fusion_vis = vis + up(fusion_vis_l - vis_l)
        else:
            fusion_vis_l, fusion_vis = vis_l, vis
        logits_l = self.fusion.maps(ir_l, fusion_vis_l)
        return ReducedScale(deblurred, up(att_l), fusion_vis, up(logits_l), fusion_vis_l, logits_l)

    def upsample_maps(self, ir: torch.Tensor, vis: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The bilinearly upsampled blend ``logits``, refined by :class:`BlendMapUpsampler` when the config has one."""
        return logits if self.upsampler is None else self.upsampler(ir, vis, logits)


def pad_to_multiple(x: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Pad bottom/right by edge replication so H and W are multiples of ``multiple``."""
    pad_h = (-x.shape[-2]) % multiple
    pad_w = (-x.shape[-1]) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
