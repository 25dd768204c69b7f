"""Model configuration: a frozen dataclass that fully determines the DSTFuse architecture.

Three presets ship:

* ``paper``: the published widths (32/64/128 channels, 3 residual blocks of 5x5 convs per
  EBlock/DBlock/OutBlock), full-resolution modules and the authors' output rules, as in their code.
* ``lite``: the first CPU variant (8/16/32 channels, 1 residual block, 3x3 convs); same rules as
  ``paper``. Kept so its checkpoints still load.
* ``stream``: the default, designed for live CPU/GPU fusion and for deblurring (see
  ``docs/training.md``): every module starts with a pixel-unshuffle (space-to-depth by 2), so its
  convs run at 1/2, 1/4 and 1/8 resolution (4x the receptive field per MAC of ``lite``); the CST module
  also sees the IR image itself and adds a linear residual; the fusion module outputs per-pixel band
  weights (``fusion_head="blend"``) instead of a free image; the mapping attention sees the visible
  image, so it can find where the visible input is blurred, and it maps before the fusion
  (``mapping="before_fusion"``).

The resolved config is stored inside every checkpoint (``to_dict``) and rebuilt with
:meth:`DSTFuseConfig.from_dict`, so a checkpoint always knows its own architecture. Fields added after
the first release have defaults equal to the first release's behaviour, so old checkpoints load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from dstfuse_stream.errors import ConfigError

__all__ = ["DSTFuseConfig", "PRESETS", "DEFAULT_PRESET", "get_config"]

_RESIDUALS = ("logit", "linear")
_FUSION_HEADS = ("residual", "blend")
_MAPPINGS = ("after_fusion", "before_fusion")


@dataclass(frozen=True)
class DSTFuseConfig:
    """Architecture of the three DSTFuse modules (CST, fusion, mapping).

    Attributes:
        name: preset name, informational (``"paper"``, ``"lite"``, ``"stream"`` or a custom label).
        widths: channels of the three encoder levels.
        num_res_blocks: residual blocks inside every EBlock, DBlock and OutBlock.
        kernel_size: spatial size of every conv in the encoder/decoder (odd).
        attention_width: channels of the small conv nets that compute attention maps.
        pixel_unshuffle: space-to-depth factor in front of every module (1 = full resolution, as in
            the paper; 2 = the first encoder level runs at half resolution and outputs are
            pixel-shuffled back).
        residual: how the CST module (and the fusion module's ``residual`` head) add their output
            to their input image: ``"logit"`` = ``sigmoid(d + logit(x))`` (first release) or
            ``"linear"`` = ``x + d`` (no vanishing gradient in dark regions).
        cst_ir_input: the CST stage 1 also sees the IR image (not only its Sobel magnitude).
        fusion_head: ``"residual"`` = an image residual on the visible input (paper);
            ``"blend"`` = per-pixel weights of the two sources' base and detail bands (the output is
            built from the sources' own bands).
        blend_sigma: Gaussian sigma (pixels) that splits base and detail bands for ``"blend"``.
        mapping: ``"after_fusion"`` (paper, Eq. 9): ``O = D2' A(I) + F' (1 - A(I))``, the attention
            from the IR image alone; ``"before_fusion"``: the attention sees the IR, the visible input,
            the CST output and both sources' Sobel magnitudes, blends the CST output into the
            visible image where that is blurred, ``V' = D2' A + V (1 - A)``, and the fusion module fuses
            ``V'`` with the IR image (so the restored content keeps the IR information).
        upsampler_width: channels of the learned blend-map upsampler used at work scales below 1
            (:class:`~dstfuse_stream.model.BlendMapUpsampler`, ``blend`` head only); 0 = plain
            bilinear upsampling (checkpoints saved before it existed load as 0).
    """

    name: str = "paper"
    widths: tuple[int, int, int] = (32, 64, 128)
    num_res_blocks: int = 3
    kernel_size: int = 5
    attention_width: int = 16
    pixel_unshuffle: int = 1
    residual: str = "logit"
    cst_ir_input: bool = False
    fusion_head: str = "residual"
    blend_sigma: float = 2.0
    mapping: str = "after_fusion"
    upsampler_width: int = 0

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        object.__setattr__(self, "widths", widths)
        if len(widths) != 3 or any(w < 1 for w in widths):
            raise ConfigError(f"widths: expected three positive ints, got {self.widths!r}")
        if self.num_res_blocks < 0:
            raise ConfigError(f"num_res_blocks: expected >= 0, got {self.num_res_blocks}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size: expected a positive odd int, got {self.kernel_size}")
        if self.attention_width < 1:
            raise ConfigError(f"attention_width: expected >= 1, got {self.attention_width}")
        if self.pixel_unshuffle not in (1, 2, 4):
            raise ConfigError(f"pixel_unshuffle: expected 1, 2 or 4, got {self.pixel_unshuffle}")
        for field, allowed in (("residual", _RESIDUALS), ("fusion_head", _FUSION_HEADS), ("mapping", _MAPPINGS)):
            if getattr(self, field) not in allowed:
                raise ConfigError(f"{field}: expected one of {list(allowed)}, got {getattr(self, field)!r}")
        if self.upsampler_width < 0:
            raise ConfigError(f"upsampler_width: expected >= 0, got {self.upsampler_width}")
        if self.upsampler_width and self.fusion_head != "blend":
            raise ConfigError(f"upsampler_width {self.upsampler_width}: needs fusion_head='blend', got {self.fusion_head!r}")
        if not self.blend_sigma > 0:
            raise ConfigError(f"blend_sigma: expected > 0, got {self.blend_sigma}")

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this: the unshuffle factor times two stride-2 levels."""
        return 4 * self.pixel_unshuffle

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (lists, not tuples) that survives ``torch.load(weights_only=True)``."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DSTFuseConfig":
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown DSTFuseConfig keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        kwargs = dict(data)
        if "widths" in kwargs:
            kwargs["widths"] = tuple(kwargs["widths"])
        return cls(**kwargs)


PRESETS: dict[str, DSTFuseConfig] = {
    "paper": DSTFuseConfig(name="paper"),
    "lite": DSTFuseConfig(name="lite", widths=(8, 16, 32), num_res_blocks=1, kernel_size=3, attention_width=8),
    "stream": DSTFuseConfig(
        name="stream", widths=(16, 32, 64), num_res_blocks=1, kernel_size=3, attention_width=16,
        pixel_unshuffle=2, residual="linear", cst_ir_input=True, fusion_head="blend", mapping="before_fusion",
        upsampler_width=8,
    ),
}
#: The preset of the shipped default weights.
DEFAULT_PRESET = "stream"


def get_config(name: str) -> DSTFuseConfig:
    """Return the preset called ``name`` (one of :data:`PRESETS`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}") from None
