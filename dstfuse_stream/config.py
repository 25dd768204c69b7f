"""Model configuration: a frozen dataclass that fully determines the DSTFuse architecture.

Two presets ship:

* ``paper``: the published widths (32/64/128 channels, 3 residual blocks of 5x5 convs per
  EBlock/DBlock/OutBlock), as in the authors' code.
* ``lite``: a variant designed here for CPU streaming (8/16/32 channels, 1 residual block per
  stage, 3x3 convs). Same topology, same losses, same schedule.

The resolved config is stored inside every checkpoint (``asdict``) and rebuilt with
:meth:`DSTFuseConfig.from_dict`, so a checkpoint always knows its own architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from dstfuse_stream.errors import ConfigError

__all__ = ["DSTFuseConfig", "PRESETS", "get_config"]


@dataclass(frozen=True)
class DSTFuseConfig:
    """Architecture of the three DSTFuse modules (CST, fusion, mapping).

    Attributes:
        name: preset name, informational (``"paper"``, ``"lite"`` or a custom label).
        widths: channels of the three encoder levels (full, 1/2 and 1/4 resolution).
        num_res_blocks: residual blocks inside every EBlock, DBlock and OutBlock.
        kernel_size: spatial size of every conv in the encoder/decoder (odd).
        attention_width: channels of the small conv net that computes the IR attention map A(I).
    """

    name: str = "paper"
    widths: tuple[int, int, int] = (32, 64, 128)
    num_res_blocks: int = 3
    kernel_size: int = 5
    attention_width: int = 16

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
    "lite": DSTFuseConfig(
        name="lite", widths=(8, 16, 32), num_res_blocks=1, kernel_size=3, attention_width=8
    ),
}


def get_config(name: str) -> DSTFuseConfig:
    """Return the preset called ``name`` (``"paper"`` or ``"lite"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}") from None
