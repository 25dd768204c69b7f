"""``dstfuse-eval``: fusion metrics, blur robustness, temporal stability, attention, scorecard.

::

    dstfuse-eval fusion    --pairs DIR... [--methods ...] [--fused-dir NAME=DIR ...] [--halo-crops N]
    dstfuse-eval blur      --pairs DIR... [--kernel-lengths 5 9 15 21] [--kernel-angles 0 45 90]
    dstfuse-eval temporal  [--pairs DIR...] [--video IR VIS ...] [--stride K]
    dstfuse-eval attention --pairs DIR... [--kernel-length 15 --kernel-angle 0]
    dstfuse-eval scorecard [--weights PATH] [--data ../shared/data] --out DIR

Without a sub-command it runs ``fusion``; the old flags ``--deblur`` and ``--temporal`` still
select ``blur`` and ``temporal``. Every run writes ``eval_config.json`` (its arguments) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from dstfuse_stream.errors import ConfigError, DSTFuseError
from dstfuse_stream.metrics import METRIC_NAMES

from .attention_eval import DEFAULT_ATTENTION_KERNEL, run_attention_eval
from .blur_eval import DEFAULT_KERNEL_ANGLES, DEFAULT_KERNEL_LENGTHS, MotionKernel, motion_kernels, run_blur_eval
from .fusion_eval import run_fusion_eval
from .methods import METHOD_NAMES, MethodSpec, parse_fused_dirs
from .scorecard import run_scorecard
from .tables import BEST_OF
from .temporal_eval import run_temporal_eval

__all__ = ["build_parser", "main"]

COMMANDS = ("fusion", "blur", "temporal", "attention", "scorecard")
_LEGACY = {"--deblur": "blur", "--temporal": "temporal"}


def _model_options(p: argparse.ArgumentParser, *, out: str = "outputs/eval") -> None:
    p.add_argument("--weights", default=None, metavar="PATH", help="DSTFuse checkpoint (default: shipped weights)")
    p.add_argument("--device", default="cpu", help="torch device for DSTFuse (cpu, cuda, auto)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads for DSTFuse (default 1: fastest on a busy 2-core machine)")
    p.add_argument("--work-scale", type=float, default=1.0, choices=(1.0, 0.5, 0.25),
                   help="resolution DSTFuse's networks run at (0.5 = what Fuser() runs for the stream preset; default 1)")
    p.add_argument("--out", default=out, metavar="DIR", help=f"output folder (default {out})")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")


def _data_options(p: argparse.ArgumentParser, *, pairs_required: bool = True, methods: bool = True) -> None:
    p.add_argument("--pairs", nargs="+", required=pairs_required, default=[], metavar="DIR",
                   help="pair folders (ir/ + vi/, optional vi_blur/; or LLVIP layout)")
    if methods:
        p.add_argument("--methods", nargs="*", default=list(METHOD_NAMES), choices=METHOD_NAMES, help="fusion methods")
        p.add_argument("--fused-dir", nargs="+", action="extend", default=[], metavar="NAME=DIR",
                       help="fused images of another tool, matched by stem; DIR/<dataset>/[sharp|blur]/ or DIR/ "
                            "(see docs/evaluation.md)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="N evenly spaced pairs (temporal: first N frames)")
    p.add_argument("--max-size", type=int, default=None, metavar="N", help="shrink so the longest side is <= N px")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dstfuse-eval",
        description="Evaluate IR/visible fusion: metrics and best-of-8 counts, blur robustness, temporal "
        "stability, mapping attention, and a PASS/FAIL scorecard. Without a sub-command: fusion.",
        epilog="Details: docs/evaluation.md",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    f = sub.add_parser("fusion", help="metrics per dataset and method, best-of-8 counts, grain and halo")
    _data_options(f)
    f.add_argument("--best-of", nargs="+", default=list(BEST_OF), metavar="METRIC", help="metrics of the best-count table")
    f.add_argument("--halo-crops", type=int, default=0, metavar="N", help="write 2x edge crops for N pairs per dataset")
    f.add_argument("--save-fused", action="store_true", help="also write fused PNGs to OUT/fused/<dataset>/<method>/")
    f.add_argument("--no-plot", action="store_true", help="skip the bar-plot PNGs")
    _model_options(f)
    b = sub.add_parser("blur", help="fused(ir, blurred vis) scored against the sharp sources; CST deblur gain")
    _data_options(b)
    b.add_argument("--kernel-lengths", type=int, nargs="*", default=list(DEFAULT_KERNEL_LENGTHS), metavar="PX")
    b.add_argument("--kernel-angles", type=float, nargs="+", default=list(DEFAULT_KERNEL_ANGLES), metavar="DEG")
    b.add_argument("--stride", type=int, default=1, metavar="K", help="every K-th pair (before --limit)")
    b.add_argument("--no-real", action="store_true", help="skip the real vi_blur frames")
    b.add_argument("--no-sharp", action="store_true", help="skip the unblurred reference row")
    b.add_argument("--save-inputs", action="store_true", help="write the synthetic blurred inputs to OUT/inputs/")
    _model_options(b)
    t = sub.add_parser("temporal", help="temporal stability ratio over consecutive frames")
    _data_options(t, pairs_required=False)
    t.add_argument("--video", nargs=2, action="append", default=[], metavar=("IR", "VIS"), help="a video pair")
    t.add_argument("--stride", type=int, default=1, metavar="K", help="every K-th frame")
    _model_options(t)
    a = sub.add_parser("attention", help="mapping attention: sharp vs blurred frames and regions, heat-maps")
    _data_options(a, methods=False)
    a.add_argument("--kernel-length", type=int, default=DEFAULT_ATTENTION_KERNEL.length_px, metavar="PX")
    a.add_argument("--kernel-angle", type=float, default=DEFAULT_ATTENTION_KERNEL.angle_deg, metavar="DEG")
    a.add_argument("--stride", type=int, default=1, metavar="K", help="every K-th pair (before --limit)")
    _model_options(a)
    s = sub.add_parser("scorecard", help="every issue-14 criterion on the validation data, PASS/FAIL")
    s.add_argument("--data", default="../shared/data", metavar="DIR", help="data root (vifb/, sequences/, reference/)")
    _model_options(s, out="outputs/scorecard")
    return p


def _normalise_argv(argv: list[str]) -> list[str]:
    """Old form ``dstfuse-eval --pairs ... [--deblur|--temporal]`` -> the sub-command form."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return argv
    command = next((_LEGACY[a] for a in argv if a in _LEGACY), "fusion")
    return [command, *(a for a in argv if a not in _LEGACY)]


def _check(args: argparse.Namespace) -> None:
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigError(f"--limit: expected >= 1, got {args.limit}")
    if getattr(args, "max_size", None) is not None and args.max_size < 64:
        raise ConfigError(f"--max-size: expected >= 64 (VIF needs 41 px a side), got {args.max_size}")
    if args.threads < 1:
        raise ConfigError(f"--threads: expected >= 1, got {args.threads}")
    if getattr(args, "stride", 1) < 1:
        raise ConfigError(f"--stride: expected >= 1, got {args.stride}")
    unknown = [m for m in getattr(args, "best_of", ()) if m not in METRIC_NAMES]
    if unknown:
        raise ConfigError(f"--best-of {unknown}: unknown; expected names from {list(METRIC_NAMES)}")
    if args.command == "temporal" and not args.pairs and not args.video:
        raise ConfigError("temporal: expected --pairs DIR... and/or --video IR VIS")


def _run(args: argparse.Namespace, out: Path) -> str:
    spec = MethodSpec(tuple(getattr(args, "methods", ())), parse_fused_dirs(getattr(args, "fused_dir", [])),
                      weights=args.weights, device=args.device, threads=args.threads, work_scale=args.work_scale)
    if args.command == "scorecard":
        run_scorecard(out, data_root=args.data, spec=spec)
        return (out / "scorecard.md").read_text()
    data = {"spec": spec, "limit": args.limit, "max_size": args.max_size}
    if args.command == "attention":
        kernel = MotionKernel(args.kernel_length, args.kernel_angle)
        run_attention_eval(args.pairs, out, kernel=kernel, stride=args.stride, **data)
        return (out / "attention.md").read_text()
    if args.command == "blur":
        kernels = motion_kernels(args.kernel_lengths, args.kernel_angles)
        run_blur_eval(args.pairs, out, kernels=kernels, real=not args.no_real, include_sharp=not args.no_sharp,
                      stride=args.stride, save_inputs=args.save_inputs, **data)
        return (out / "blur.md").read_text()
    if args.command == "temporal":
        run_temporal_eval(args.pairs, out, videos=args.video, stride=args.stride, **data)
        return (out / "temporal.md").read_text()
    run_fusion_eval(args.pairs, out, best_of=args.best_of, save_fused=args.save_fused, plot=not args.no_plot,
                    halo_crops=args.halo_crops, **data)
    return (out / "summary.md").read_text()


def main(argv: Sequence[str] | None = None) -> int:
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        _check(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_config.json").write_text(json.dumps({"argv": argv, **vars(args)}, indent=2, default=str))
        print(_run(args, out))
        print(f"results in {out}")
    except DSTFuseError as exc:
        print(f"dstfuse-eval: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
