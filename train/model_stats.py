"""Parameter counts and conv multiply-accumulates (MACs) of the DSTFuse presets.

    python -m train.model_stats --presets paper lite --size 640x512

MACs are counted with forward hooks on every ``nn.Conv2d`` (``out_elements * in_ch/groups * kH * kW``)
and ``nn.ConvTranspose2d`` (``in_elements * out_ch/groups * kH * kW``) during one forward pass of
``DSTFuse`` on a ``1 x 1 x H x W`` input. The two fixed Sobel convs (functional ``F.conv2d``) and
element-wise ops (sigmoid, additions, pooling) are not counted; they are a small fraction.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch
from torch import nn

from dstfuse_stream.config import get_config
from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.model import DSTFuse

__all__ = ["count_parameters", "count_conv_macs", "model_stats", "main"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_conv_macs(model: DSTFuse, *, size_hw: tuple[int, int]) -> dict[str, int]:
    """Conv MACs of one ``model(ir, vis)`` forward at ``size_hw``, per top-level module and ``"total"``."""
    counts: dict[str, int] = {}
    handles = []

    def hook_for(top: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            k = module.kernel_size[0] * module.kernel_size[1]
            if isinstance(module, nn.ConvTranspose2d):
                macs = inputs[0].numel() * (module.out_channels // module.groups) * k
            else:
                macs = output.numel() * (module.in_channels // module.groups) * k
            counts[top] = counts.get(top, 0) + int(macs)

        return hook

    for top in ("cst", "fusion", "mapping"):
        for m in getattr(model, top).modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                handles.append(m.register_forward_hook(hook_for(top)))
    try:
        x = torch.rand(1, 1, *size_hw)
        with torch.inference_mode():
            model.eval()(x, x)
    finally:
        for h in handles:
            h.remove()
    counts["total"] = sum(counts.values())
    return counts


def model_stats(preset: str, *, size_hw: tuple[int, int]) -> dict[str, object]:
    """Parameters (per module and total) and conv MACs of ``preset`` at ``size_hw``."""
    model = DSTFuse(get_config(preset))
    params = {top: count_parameters(getattr(model, top)) for top in ("cst", "fusion", "mapping")}
    params["total"] = count_parameters(model)
    return {"preset": preset, "size_hw": size_hw, "params": params, "macs": count_conv_macs(model, size_hw=size_hw)}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x512") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--size {text!r}: expected positive width and height")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.model_stats", description="Params and conv MACs of DSTFuse presets.")
    p.add_argument("--presets", nargs="+", default=["paper", "lite"])
    p.add_argument("--size", default="640x512", help="WIDTHxHEIGHT of the input (default 640x512)")
    args = p.parse_args(argv)
    try:
        size_hw = _parse_size(args.size)
        rows = [model_stats(name, size_hw=size_hw) for name in args.presets]
    except DSTFuseError as exc:
        print(f"model_stats: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'preset':<7} {'params':>10} {'cst':>9} {'fusion':>9} {'mapping':>8} {'GMACs':>8}  (input {args.size})")
    for r in rows:
        pr, mc = r["params"], r["macs"]
        print(f"{r['preset']:<7} {pr['total']:>10,d} {pr['cst']:>9,d} {pr['fusion']:>9,d} {pr['mapping']:>8,d} "
              f"{mc['total'] / 1e9:>8.2f}  (cst {mc['cst'] / 1e9:.2f}, fusion {mc['fusion'] / 1e9:.2f}, mapping {mc['mapping'] / 1e9:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
