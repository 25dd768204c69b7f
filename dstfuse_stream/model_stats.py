"""Parameter and multiply-accumulate (MAC) counts of DSTFuse, from torch's ``FlopCounterMode``.

    python -m dstfuse_stream.model_stats --presets paper lite --size 640x512

``FlopCounterMode`` counts the FLOPs of matrix products and convolutions (``Conv2d``,
``ConvTranspose2d``, ``Linear``, the two fixed Sobel ``F.conv2d`` calls), which are nearly all of
DSTFuse's arithmetic; one multiply-accumulate is two FLOPs, so MACs = FLOPs / 2. Element-wise ops
(ReLU, sigmoid, padding, pooling, additions) are not counted. The forward pass runs on the ``meta``
device, so counting a 1280x1024 paper model costs no compute.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dstfuse_stream.cliutil import arg_type, run_command
from dstfuse_stream.config import get_config
from dstfuse_stream.geometry import parse_size_wh
from dstfuse_stream.model import DSTFuse

__all__ = ["count_params", "count_macs", "model_stats", "main"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs_shape: tuple[int, ...], within: str | None = None) -> int:
    """MACs (FLOPs / 2) of one forward pass of ``model`` on inputs of the given shapes (one per argument).

    ``within`` names a submodule (e.g. ``"cst"``): only its operations are counted. The pass runs on
    a deep copy of ``model`` moved to the ``meta`` device (shapes only, no arithmetic); ``model``
    itself keeps its device and weights.
    """
    meta_model = copy.deepcopy(model).to("meta")
    if within:
        meta_model.get_submodule(within)  # raises AttributeError naming a wrong path
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        meta_model(*(torch.empty(shape, device="meta") for shape in inputs_shape))
    if within is None:
        return counter.get_total_flops() // 2
    # Per-module counts include the module's subtree, but only for modules that were called: a
    # container used through a method (``model.fusion.fuse(...)``) has no entry of its own, so sum
    # its outermost called descendants.
    counts = counter.get_flop_counts()
    prefix = f"{type(model).__name__}.{within}"
    inside = [k for k in counts if k == prefix or k.startswith(prefix + ".")]
    outermost = [k for k in inside if not any(k.startswith(other + ".") for other in inside)]
    return sum(sum(counts[k].values()) for k in outermost) // 2


def model_stats(preset: str, *, size_wh: tuple[int, int], work_scale: float = 1.0) -> dict[str, object]:
    """Parameters (per module and total) and MACs of ``preset`` at ``size_wh``, its networks run at
    ``work_scale`` (MACs of the blend-map upsampler counted only below 1, where it runs)."""
    model = DSTFuse(get_config(preset)).set_work_scale(work_scale)
    shape = (1, 1, size_wh[1], size_wh[0])
    tops = ("cst", "fusion", "mapping", "upsampler")
    params = {top: count_params(getattr(model, top)) if getattr(model, top) is not None else 0 for top in tops}
    params["total"] = count_params(model)
    macs = {top: count_macs(model, shape, shape, within=top) if params[top] else 0 for top in tops}
    macs["total"] = count_macs(model, shape, shape)
    return {"preset": preset, "size_wh": size_wh, "work_scale": work_scale, "params": params, "macs": macs}


def _print_stats(args: argparse.Namespace) -> int:
    rows = [model_stats(name, size_wh=args.size, work_scale=args.work_scale) for name in args.presets]
    size = f"{args.size[0]}x{args.size[1]}"
    print(f"{'preset':<7} {'params':>10} {'cst':>9} {'fusion':>9} {'mapping':>8} {'upsampler':>9} {'GMACs':>8}  "
          f"(input {size}, work scale {args.work_scale:g})")
    for r in rows:
        pr, mc = r["params"], r["macs"]
        print(f"{r['preset']:<7} {pr['total']:>10,d} {pr['cst']:>9,d} {pr['fusion']:>9,d} {pr['mapping']:>8,d} {pr['upsampler']:>9,d} "
              f"{mc['total'] / 1e9:>8.2f}  (cst {mc['cst'] / 1e9:.2f}, fusion {mc['fusion'] / 1e9:.2f}, mapping {mc['mapping'] / 1e9:.3f}, "
              f"upsampler {mc['upsampler'] / 1e9:.3f})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dstfuse_stream.model_stats", description="Params and MACs of DSTFuse presets.")
    p.add_argument("--presets", nargs="+", default=["paper", "lite"])
    p.add_argument("--size", type=arg_type(parse_size_wh), default=(640, 512), metavar="WxH",
                   help="input width x height (default 640x512)")
    p.add_argument("--work-scale", type=float, default=1.0, choices=(1.0, 0.5, 0.25),
                   help="resolution the networks run at (1, 0.5, 0.25; below 1 only for blend-head presets; default 1)")
    return run_command("model_stats", _print_stats, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
