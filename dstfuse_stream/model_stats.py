"""Parameter and multiply-accumulate (MAC) counts of DSTFuse, from forward hooks.

    python -m dstfuse_stream.model_stats --presets paper lite --size 640x512

MACs count the convolutions (``Conv2d``, ``ConvTranspose2d``) and ``Linear`` layers, which are
nearly all of DSTFuse's arithmetic; the two fixed Sobel convs (functional ``F.conv2d``) and
element-wise ops (ReLU, sigmoid, padding, pooling, additions) are not counted. The forward pass
runs on the ``meta`` device, so counting a 1280x1024 paper model costs no compute.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Sequence

import torch
from torch import nn

from dstfuse_stream.config import get_config
from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.model import DSTFuse

__all__ = ["count_params", "count_macs", "layer_macs", "model_stats", "main"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def layer_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one call of ``module`` with input ``inputs`` and output ``output`` (0 for other layers).

    * ``Conv2d``: ``output elements * (C_in / groups) * kH * kW``
    * ``ConvTranspose2d``: ``input elements * (C_out / groups) * kH * kW`` (each input pixel is
      scattered through the kernel into every output channel of its group)
    * ``Linear``: ``output elements * in_features``
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return inputs.numel() * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, *inputs_shape: tuple[int, ...], within: str | None = None) -> int:
    """MACs of one forward pass of ``model`` on inputs of the given shapes (one shape per argument).

    ``within`` names a submodule (e.g. ``"cst"``): only its layers are counted. The pass runs on a
    deep copy of ``model`` moved to the ``meta`` device (shapes only, no arithmetic); ``model``
    itself keeps its device and weights.
    """
    meta_model = copy.deepcopy(model).to("meta")
    counted = meta_model.get_submodule(within) if within else meta_model
    total = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, args[0], output)

    handles = [
        m.register_forward_hook(hook)
        for m in counted.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        with torch.inference_mode():
            meta_model(*(torch.empty(shape, device="meta") for shape in inputs_shape))
    finally:
        for h in handles:
            h.remove()
    if not math.isfinite(total):
        raise ValueError("count_macs: non-finite count")
    return int(total)


def model_stats(preset: str, *, size_hw: tuple[int, int]) -> dict[str, object]:
    """Parameters (per module and total) and conv MACs of ``preset`` at ``size_hw``."""
    model = DSTFuse(get_config(preset))
    shape = (1, 1, *size_hw)
    tops = ("cst", "fusion", "mapping")
    params = {top: count_params(getattr(model, top)) for top in tops}
    params["total"] = count_params(model)
    macs = {top: count_macs(model, shape, shape, within=top) for top in tops}
    macs["total"] = count_macs(model, shape, shape)
    return {"preset": preset, "size_hw": size_hw, "params": params, "macs": macs}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x512") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--size {text!r}: expected positive width and height")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_stream.model_stats", description="Params and conv MACs of DSTFuse presets.")
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
