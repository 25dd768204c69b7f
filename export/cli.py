"""``dstfuse-export``: checkpoints to ONNX / TensorRT, and the CPU runtime comparison.

Sub-commands::

    dstfuse-export onnx [--weights PATH | --preset lite] [--out-dir DIR] [--precision fp32 fp16] [--parity-data DIR]
    dstfuse-export tensorrt --onnx FILE | --weights PATH  [--method ort|torch-tensorrt] [--min/--opt/--max WxH or BxCxHxW]
    dstfuse-export triton [--onnx FILE | --weights PATH] [--repo DIR] [--max-batch-size 8] [--kind KIND_GPU]
    dstfuse-export compare-cpu [--weights PATH | --preset lite] [--size WxH]

User errors (missing file, bad shape, no GPU) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from dstfuse_stream.cliutil import arg_type, run_command
from dstfuse_stream.geometry import parse_size_wh

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dstfuse-export", description="Export DSTFuse to ONNX / TensorRT.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    onnx_p = sub.add_parser("onnx", help="export fp32/fp16 ONNX files with a parity check")
    onnx_src = onnx_p.add_mutually_exclusive_group()
    onnx_src.add_argument("--weights", type=Path, default=None, help="checkpoint (default: shipped weights)")
    onnx_src.add_argument("--preset", default=None, help="export a randomly initialised preset (seed 0) instead")
    onnx_p.add_argument("--out-dir", type=Path, default=Path("exported"), help="output folder (default: exported)")
    onnx_p.add_argument("--stem", default=None, help="file name stem (default: checkpoint name)")
    onnx_p.add_argument("--precision", nargs="+", choices=("fp32", "fp16"), default=["fp32", "fp16"])
    onnx_p.add_argument("--opset", type=int, default=None, help="17 (default) or 18")
    onnx_p.add_argument("--no-simplify", action="store_true", help="keep the traced graph as is")
    onnx_p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    onnx_p.add_argument("--parity-data", type=Path, default=None, help="folder with ir/ and vi/: real pairs checked at native size")
    onnx_p.add_argument("--parity-pairs", type=int, default=1, help="how many real pairs from --parity-data (default 1)")

    trt_p = sub.add_parser("tensorrt", help="build a TensorRT engine (needs a CUDA GPU)")
    src = trt_p.add_mutually_exclusive_group()
    src.add_argument("--onnx", type=Path, default=None, help="exported .onnx (for --method ort)")
    src.add_argument("--weights", type=Path, default=None, help="checkpoint (default: shipped weights)")
    trt_p.add_argument("--method", choices=("ort", "torch-tensorrt"), default="ort")
    trt_p.add_argument("--min", dest="min_shape", default="1x1x32x32", help="profile min: WxH, or BxCxHxW")
    trt_p.add_argument("--opt", dest="opt_shape", default="1x1x480x640", help="profile opt shape")
    trt_p.add_argument("--max", dest="max_shape", default="1x1x1080x1920", help="profile max shape")
    trt_p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    trt_p.add_argument("--cache-dir", type=Path, default=None, help="engine cache (ort) (default: user cache)")
    trt_p.add_argument("--out", type=Path, default=Path("exported/dstfuse_trt.ep"), help="engine file (torch-tensorrt)")

    tri_p = sub.add_parser("triton", help="an NVIDIA Triton model repository: ONNX + config.pbtxt (dynamic H/W)")
    tri_src = tri_p.add_mutually_exclusive_group()
    tri_src.add_argument("--onnx", type=Path, default=None, help="exported .onnx (default: export --weights, cached)")
    tri_src.add_argument("--weights", type=Path, default=None, help="checkpoint (default: shipped weights)")
    tri_p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="of the export (default fp32)")
    tri_p.add_argument("--repo", type=Path, default=Path("exported/triton"), help="repository folder")
    tri_p.add_argument("--name", default="dstfuse", help="model name (default dstfuse)")
    tri_p.add_argument("--max-batch-size", type=int, default=8)
    tri_p.add_argument("--instances", type=int, default=1, help="model instances per device")
    tri_p.add_argument("--kind", choices=("KIND_GPU", "KIND_CPU"), default="KIND_GPU")

    cmp_p = sub.add_parser("compare-cpu", help="time ORT CPU vs torch CPU (decides backend 'auto' on CPU)")
    model_src = cmp_p.add_mutually_exclusive_group()
    model_src.add_argument("--weights", type=Path, default=None, help="checkpoint")
    model_src.add_argument("--preset", default=None, help="randomly initialised preset instead (lite, paper)")
    cmp_p.add_argument("--size", type=arg_type(parse_size_wh), default=(320, 256), metavar="WxH",
                       help="frame size (default 320x256)")
    cmp_p.add_argument("--rounds", type=int, default=5)
    cmp_p.add_argument("--per-round", type=int, default=5)
    cmp_p.add_argument("--threads", type=int, default=None, help="threads for both (default: torch's)")
    cmp_p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return parser


def _cmd_onnx(args: argparse.Namespace) -> int:
    from dstfuse_stream.backends.onnx_export import DEFAULT_OPSET
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256, load_model
    from .onnx_export import export_variants
    from .parity import load_real_pairs

    if args.preset is not None:
        import torch

        from dstfuse_stream.config import get_config
        from dstfuse_stream.model import DSTFuse

        torch.manual_seed(0)
        model, weights, sha = DSTFuse(get_config(args.preset)).eval(), None, None
        stem = f"{args.preset}_random"
    else:
        weights = args.weights if args.weights is not None else default_weights_path()
        model = load_model(weights)
        sha, stem = file_sha256(weights), Path(weights).stem
    real = load_real_pairs(args.parity_data, limit=args.parity_pairs) if args.parity_data is not None else []
    t0 = time.perf_counter()
    results = export_variants(
        model,
        args.out_dir,
        stem=args.stem or stem,
        precisions=args.precision,
        opset=args.opset or DEFAULT_OPSET,
        simplify=not args.no_simplify,
        checkpoint_sha256=sha,
        checkpoint_name=None if weights is None else Path(weights).name,
        check=not args.no_check,
        real_pairs=real,
    )
    graph = results[0].graph
    print(f"traced {graph.nodes_traced} nodes in {graph.trace_s:.1f} s (opset {graph.opset})", end="")
    if graph.nodes_simplified is not None:
        kept = "kept" if graph.simplified else "NOT kept (ORT output changed)"
        print(f"; simplified to {graph.nodes_simplified} nodes in {graph.simplify_s:.1f} s, {kept}")
    else:
        print()
    for r in results:
        print(f"{r.path}: {r.precision}, {r.nodes} nodes")
        if r.parity is not None:
            print(r.parity.summary())
            print(f"  report: {r.parity_path}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_tensorrt(args: argparse.Namespace) -> int:
    from dstfuse_stream.backends.tensorrt_options import ShapeProfile
    from .tensorrt_build import build_ort_tensorrt_engine, build_torch_tensorrt_engine

    profile = ShapeProfile.parse(args.min_shape, args.opt_shape, args.max_shape)
    if args.method == "ort":
        if args.onnx is None:
            from dstfuse_stream.backends.onnx_cache import get_or_export_onnx

            args.onnx = get_or_export_onnx(args.weights, precision="fp32")
        cache = build_ort_tensorrt_engine(args.onnx, profile, cache_dir=args.cache_dir, precision=args.precision)
        print(f"TensorRT engine for {args.onnx} cached in {cache} (profile {profile.to_dict()})")
    else:
        path = build_torch_tensorrt_engine(args.weights, profile, out=args.out, precision=args.precision)
        print(f"TensorRT engine written to {path} (profile {profile.to_dict()})")
    return 0


def _cmd_triton(args: argparse.Namespace) -> int:
    from .triton import write_triton_repository

    if args.onnx is None:
        from dstfuse_stream.backends.onnx_cache import get_or_export_onnx

        args.onnx = get_or_export_onnx(args.weights, precision=args.precision)
    model_dir = write_triton_repository(args.onnx, args.repo, name=args.name, max_batch_size=args.max_batch_size,
                                        instances=args.instances, kind=args.kind)
    print(f"Triton model repository {args.repo}: {model_dir / 'config.pbtxt'}, {model_dir / '1' / 'model.onnx'}")
    print(f"serve it with: tritonserver --model-repository {args.repo}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from dstfuse_stream.checkpoint import load_model
    from dstfuse_stream.config import get_config
    from dstfuse_stream.model import DSTFuse
    from .compare import compare_cpu_backends

    if args.preset is not None:
        torch.manual_seed(0)
        model = DSTFuse(get_config(args.preset)).eval()
    else:
        model = load_model(args.weights)
    width, height = args.size
    result = compare_cpu_backends(
        model, size_wh=args.size, rounds=args.rounds, per_round=args.per_round, threads=args.threads
    )
    print(f"model {model.config.name}, {width}x{height}, {result['threads']} threads, "
          f"{result['frames_per_backend']} frames each, load avg {result['load_average_1min']}")
    for label, ms in result["ms"].items():
        print(f"  {label:<12} median {ms['median']:8.1f} ms   min {ms['min']:8.1f} ms")
    print(f"fastest: {result['fastest']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        for name in ("dstfuse_export", "dstfuse_stream"):
            logging.getLogger(name).setLevel(logging.INFO)
    commands = {"onnx": _cmd_onnx, "tensorrt": _cmd_tensorrt, "triton": _cmd_triton, "compare-cpu": _cmd_compare}
    return run_command("dstfuse-export", commands[args.command], args)
