"""``dstfuse-stream``: fuse synchronized IR and visible streams into a video.

Examples::

    dstfuse-stream --ir cam0 --vis cam1 --out live.mp4 --max-size 320
    dstfuse-stream --ir ir.mp4 --vis vi.mp4 --out fused.mp4 --preview preview.mp4 --timing-log t.csv
    dstfuse-stream --pairs ../shared/data/llvip --fps 2 --out outputs/llvip_fused.mp4
    dstfuse-stream register --points pts.csv --out H.txt

Exit codes (docs/reliability.md): 0 done; 1 a bug (traceback); 2 a user error (bad source or
argument, mismatch, an output that is an input, a full disk, bad weights: one line ``dstfuse-stream:
error: ...`` on stderr; what was fused before the error is kept); 3 a live source was lost (and not
reconnected, see ``--reconnect``); 130/143 stopped by SIGINT/SIGTERM after finishing the current
frame and closing the outputs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dstfuse_stream.cliutil import OneLineArgumentParser, arg_type, import_deferring_sigint, one_line, run_command, say
from dstfuse_stream.errors import DSTFuseError, StreamMismatchError

# Only the standard library and two small modules above are imported with this module (numpy, cv2
# and torch come later, inside functions), so a Ctrl-C in the first moments already finds main()
# running and is one line, not a traceback from the import.

__all__ = ["main", "run_cli", "build_parser", "run_config"]

PROG = "dstfuse-stream"
logger = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _auto_or_positive_int(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _out_fps(text: str) -> float:
    from dstfuse_stream.sinks import MAX_FPS

    value = _positive_float(text)
    if value > MAX_FPS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_FPS:g} fps, got {text}")
    return value


def _ir_range(text: str) -> str | tuple[float, float]:
    from dstfuse_stream.colour import parse_ir_range

    return parse_ir_range(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (the ``register`` subcommand is dispatched before it)."""
    import dstfuse_stream
    from dstfuse_stream.backends.precision import PRECISIONS
    from dstfuse_stream.geometry import parse_size_wh

    p = OneLineArgumentParser(
        prog=PROG,
        description="Fuse synchronized infrared and visible streams with DSTFuse and write fused video. "
        f"Estimate a homography with '{PROG} register --points pts.csv --out H.txt'. Exit codes: 0 done, "
        "2 user error (one line on stderr), 3 live source lost, 130/143 stopped by SIGINT/SIGTERM.",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {dstfuse_stream.__version__}")
    src = p.add_argument_group("inputs")
    src.add_argument("--ir", help="IR source: camN, /dev/videoN, rtsp/http URL, video file, or image folder")
    src.add_argument("--vis", help="visible source (same kinds as --ir)")
    src.add_argument("--pairs", help="recorded pairs root: ROOT/ir + ROOT/vi, or LLVIP infrared/ + visible/")
    src.add_argument("--split", choices=("train", "test"), help="LLVIP split of --pairs (default: both)")
    src.add_argument("--fps", type=_positive_float, help="frame rate of image-folder sources (default 30)")
    src.add_argument("--timeout-s", type=_positive_float, default=10.0,
                     help="camera/stream open and read timeout (default %(default)s)")
    src.add_argument("--reconnect", type=_count, default=0, metavar="N",
                     help="reopen a lost camera or stream up to N times in a row, waiting 0.5 s, 1 s, 2 s ... "
                     "(default %(default)s: a lost live source ends the run with exit code 3)")
    src.add_argument("--ir-range", type=_ir_range, default="auto", metavar="auto|frame|LO,HI",
                     help="16-bit IR to 8 bits: auto = automatic gain (running 1st-99th percentile stretch), "
                     "frame = each frame's own percentiles, LO,HI = fixed raw range (default %(default)s)")
    out = p.add_argument_group("outputs (an existing file is replaced; an output may not be an input or another output)")
    out.add_argument("--out", help="fused video (out.mp4), or an image folder (a path ending in '/' or without suffix)")
    out.add_argument("--out-frames", help="also write fused frames as PNG images into this folder")
    out.add_argument("--preview", help="side-by-side 'IR | visible | fused' preview video")
    out.add_argument("--timing-log", help="per-frame timings: .csv, or .jsonl for JSON lines")
    out.add_argument("--summary-json", help="summary + resolved config (default: next to the first output)")
    out.add_argument("--out-fps", type=_out_fps,
                     help="write at this constant frame rate (default: the sources' own timestamps, so the video "
                     "lasts as long as its input)")
    out.add_argument("--codec", default="auto",
                     help="video encoder; auto = libx264 (VP9 for .webm), mpeg4 when missing (default %(default)s)")
    out.add_argument("--crf", type=int, default=20, help="libx264 quality, lower is better (default %(default)s)")
    out.add_argument("--tune", choices=("zerolatency", "none"), default="zerolatency",
                     help="libx264 tuning: zerolatency = each frame encoded as it comes (nothing held back; larger "
                     "files at the same CRF), none = x264 defaults (smaller files) (default %(default)s)")
    out.add_argument("--gray", action="store_true", help="write the fused luma only (default: keep visible colour)")
    model = p.add_argument_group("model")
    model.add_argument("--backend", default="auto", help="auto | torch | onnx | tensorrt (default %(default)s)")
    model.add_argument("--weights", help="checkpoint (.pt), or an exported model (.onnx, for --backend auto/onnx/tensorrt) "
                       "(default: the shipped weights)")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default %(default)s)")
    model.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto (default): fp16 on CUDA/TensorRT; on CPU the fastest of fp32/int8/bf16 within 35 dB of fp32, "
                       "measured on the first frame; int8 needs 'dstfuse-export int8' once")
    model.add_argument("--work-scale", default="auto", choices=("auto", "1", "0.5", "0.25"),
                       help="resolution the networks run at, relative to the frame; their decisions are applied to the "
                       "full-resolution frames (auto: 0.5 where the model supports it, else 1; default %(default)s)")
    model.add_argument("--threads", type=_positive_int, help="CPU threads of the backend (default: the usable cores)")
    model.add_argument("--concurrent-frames", type=_auto_or_positive_int, default="auto",
                       help="frames fused at once, each on its own backend with threads/N threads; auto: 2 for recorded "
                       "sources on a CPU (throughput), 1 for live sources (lowest latency) and on a GPU (default %(default)s)")
    run = p.add_argument_group("pipeline")
    run.add_argument("--sync", choices=("auto", "lossless", "latest"), default="auto",
                     help="lossless: block, keep every frame; latest: drop oldest (live); auto: latest for live sources "
                     "(default %(default)s)")
    run.add_argument("--pairing", choices=("auto", "index", "timestamp"), default="auto",
                     help="index: frame i with frame i; timestamp: nearest within tolerance; auto: timestamp if live "
                     "or the frame rates differ (default %(default)s)")
    run.add_argument("--tolerance-ms", type=_non_negative_float,
                     help="timestamp pairing tolerance (default half the slower frame interval)")
    run.add_argument("--queue-size", type=_positive_int, default=4, help="capacity of each queue (default %(default)s)")
    run.add_argument("--max-frames", type=_positive_int, help="stop after this many fused frames")
    run.add_argument("--max-size", type=_positive_int, help="fuse at most this many pixels on the longer side")
    run.add_argument("--resize", type=arg_type(parse_size_wh), metavar="WxH", help="fuse at exactly this size")
    run.add_argument("--writer-priority", choices=("idle", "normal"), default="idle",
                     help="CPU priority of the output-encoding thread: idle = it uses the cores the fusion leaves "
                     "free (Linux SCHED_IDLE), normal = it competes with the fusion (default %(default)s)")
    run.add_argument("--reader-priority", choices=("idle", "normal"), default="idle",
                     help="CPU priority of the threads reading recorded files and folders: idle = they use the cores "
                     "the fusion leaves free, with single-threaded video decoding; live sources always read at "
                     "normal priority (default %(default)s)")
    run.add_argument("--homography", help="3x3 IR->visible homography (.txt, .npy, .json) to warp IR onto visible")
    misc = p.add_argument_group("misc")
    misc.add_argument("--no-progress", action="store_true", help="no progress bar")
    misc.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                      help="(default %(default)s)")
    return p


def _is_folder_output(path: str) -> bool:
    """``--out``: a path ending in a separator, an existing folder, or a name without suffix is a folder."""
    return path.endswith(("/", os.sep)) or Path(path).is_dir() or not Path(path).suffix


def _default_summary_path(args: argparse.Namespace) -> Path | None:
    if args.summary_json:
        return Path(args.summary_json)
    if args.out:
        out = Path(args.out)
        return out / "summary.json" if _is_folder_output(args.out) else out.with_name(out.stem + ".summary.json")
    if args.out_frames:
        return Path(args.out_frames) / "summary.json"
    if args.preview:
        p = Path(args.preview)
        return p.with_name(p.stem + ".summary.json")
    return None


def _planned_outputs(args: argparse.Namespace) -> list[Any]:
    """Every path this run will write, for :func:`~dstfuse_stream.outputs.check_outputs`."""
    from dstfuse_stream.outputs import OutputPath

    planned = [("--out", args.out, args.out and _is_folder_output(args.out)), ("--out-frames", args.out_frames, True),
               ("--preview", args.preview, False), ("--timing-log", args.timing_log, False),
               ("summary", _default_summary_path(args), False)]
    return [OutputPath(label, Path(path), folder=bool(folder)) for label, path, folder in planned if path is not None]


def _make_sinks(args: argparse.Namespace, *, fps: float) -> list[Any]:
    from dstfuse_stream.sinks import ImageFolderSink, VideoSink

    video = {"fps": fps, "codec": args.codec, "crf": args.crf, "tune": None if args.tune == "none" else args.tune,
             "vfr": args.out_fps is None}
    sinks: list[Any] = []
    try:
        if args.out:
            sinks.append(ImageFolderSink(args.out) if _is_folder_output(args.out) else VideoSink(args.out, **video))
        if args.out_frames:
            sinks.append(ImageFolderSink(args.out_frames))
        if args.preview:
            sinks.append(VideoSink(args.preview, content="preview", **video))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _install_signal_handlers(request_stop: Callable[[], None], received: list[int]) -> Callable[[], None]:
    """SIGINT/SIGTERM: first one asks the pipeline to stop gracefully, a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _resolved_config(args: argparse.Namespace, argv: list[str], pipeline: Any, sinks: list[Any]) -> dict:
    return {"command": [PROG, *argv], "args": vars(args), **run_config(pipeline, sinks)}


def run_config(pipeline: Any, sinks: list[Any]) -> dict:
    """The resolved configuration of a finished pipeline run, as written into its summary JSON
    (pipeline settings, sources, backend, model config, outputs, version)."""
    import dstfuse_stream

    fuser = pipeline.fuser
    model_config = fuser.model_config
    return {
        "pipeline": pipeline.config.to_dict(),
        "resolved": {"sync": pipeline.sync, "pairing": pipeline.pairing, "tolerance_s": pipeline.tolerance_s},
        "sources": {role: src.describe() for role, src in pipeline.sources.items()},
        "backend": fuser.backend.describe(),
        "backend_selection": fuser.backend.selection_reason,
        "output": fuser.output,
        "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
        "homography": None if fuser.homography is None else fuser.homography.tolist(),
        "ir_range": fuser.ir_gain.ir_range,
        "outputs": [s.describe() for s in sinks],
        "version": dstfuse_stream.__version__,
    }


def run_cli(argv: list[str] | None = None, *, fuser: Any = None) -> int:
    """:func:`main` with an optional ready-made ``fuser`` (a backend object) replacing ``--backend``
    (tests, embedding)."""
    try:
        import_deferring_sigint("numpy", "cv2", "av")  # a Ctrl-C inside their C start-up would be an ImportError
        return _run_cli(list(sys.argv[1:] if argv is None else argv), fuser)
    except KeyboardInterrupt:  # Ctrl-C before the graceful handlers are installed, or a second one
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _run_cli(argv: list[str], fuser: Any) -> int:
    if argv[:1] == ["register"]:
        from dstfuse_stream.registration import main as register_main

        return register_main(argv[1:], prog=f"{PROG} register")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pairs and (args.ir or args.vis):
        parser.error("use either --pairs or --ir/--vis, not both")
    if not args.pairs and not (args.ir and args.vis):
        parser.error("give both --ir and --vis, or --pairs ROOT")
    if args.split and not args.pairs:
        parser.error("--split selects a split of --pairs ROOT (LLVIP layout); it does nothing with --ir/--vis")
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("dstfuse_stream").setLevel(getattr(logging, args.log_level))  # this project, not every library

    import cv2

    cv_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # one line per error, not OpenCV's warnings
    try:
        return run_command(PROG, _run, args, argv, fuser=fuser)
    finally:
        cv2.utils.logging.setLogLevel(cv_level)


def _pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~dstfuse_stream.pipeline_config.PipelineConfig` fields set by the flags."""
    return {
        "sync": args.sync, "pairing": args.pairing,
        "tolerance_s": None if args.tolerance_ms is None else args.tolerance_ms / 1000.0,
        "queue_size": args.queue_size, "max_frames": args.max_frames, "resize_wh": args.resize, "max_size": args.max_size,
        "reconnect": args.reconnect, "progress": not args.no_progress and sys.stderr.isatty(),
        "background_writer": args.writer_priority == "idle", "background_readers": args.reader_priority == "idle",
    }


def _open(args: argparse.Namespace, backend: Any) -> tuple[Any, list[Any], Any]:
    """Settings checked, sources opened, outputs checked against them, sinks and timing log made
    (nothing is written before the pipeline runs), then the fuser -> the pipeline via :func:`stream`."""
    from dstfuse_stream.fuser import Fuser
    from dstfuse_stream.outputs import check_outputs
    from dstfuse_stream.pipeline_config import PipelineConfig
    from dstfuse_stream.sinks import TimingLog
    from dstfuse_stream.sources import open_source_pair
    from dstfuse_stream.streaming import auto_concurrent_frames, stream

    options = _pipeline_options(args)
    PipelineConfig(**options)  # every bad setting is an error before a camera or file is opened
    homography = None
    if args.homography:
        from dstfuse_stream.registration import load_homography

        homography = load_homography(args.homography)
    ir_src, vis_src = open_source_pair(args.ir, args.vis, pairs=args.pairs, split=args.split, fps=args.fps, timeout_s=args.timeout_s)
    if not (args.out or args.out_frames or args.preview or args.timing_log):
        logger.warning("no output given (--out, --out-frames, --preview, --timing-log): fusing without writing")
    owned: list[Any] = [ir_src, vis_src]
    try:
        check_outputs(_planned_outputs(args), [ir_src, vis_src])
        sinks = _make_sinks(args, fps=args.out_fps or vis_src.fps or ir_src.fps or 30.0)  # codec checked here
        owned.extend(sinks)
        timing_log = TimingLog(args.timing_log) if args.timing_log else None
        owned.append(timing_log)
        settings = {"homography": homography, "output": "gray" if args.gray else "bgr", "ir_range": args.ir_range}
        if backend is None:
            import_deferring_sigint("torch", *(("onnxruntime",) if args.backend != "torch" else ()))
            concurrent = args.concurrent_frames
            if concurrent == "auto":
                concurrent = auto_concurrent_frames(ir_src, vis_src, backend=args.backend, device=args.device, threads=args.threads)
            fuser = Fuser(args.weights, args.backend, args.device, args.precision, work_scale=args.work_scale,
                          threads=args.threads, concurrent_frames=concurrent, **settings)
        else:
            fuser = Fuser(backend=backend, **settings)
        owned.append(fuser)
        logger.info("fuser: %s", fuser.describe())
        pipeline = stream(ir_src, vis_src, fuser=fuser, sinks=sinks, timing_log=timing_log, **options)
    except BaseException:
        for item in reversed(owned):
            if item is not None:
                item.close()
        raise
    return pipeline, sinks, fuser


def _run(args: argparse.Namespace, argv: list[str], *, fuser: Any) -> int:
    from dstfuse_stream.sinks import write_json

    pipeline, sinks, fuser = _open(args, fuser)
    received: list[int] = []
    restore = _install_signal_handlers(pipeline.request_stop, received)
    error: BaseException | None = None
    try:
        with pipeline:
            pipeline.run()
    except (DSTFuseError, KeyboardInterrupt) as exc:
        error = exc
    finally:
        restore()
        fuser.close()

    summary = pipeline.summary
    if summary is not None:
        summary.extra["signal"] = signal.Signals(received[0]).name if received else None
        if summary.frames_written or error is None:
            say(summary.format())
        outputs = ", ".join(str(s.describe().get("path")) for s in sinks)
        if outputs and error is None:
            say(f"wrote {summary.frames_written} frames to {outputs}")
        summary_path = _default_summary_path(args)
        if summary_path is not None:
            data = {"summary": summary.to_dict(), "config": _resolved_config(args, argv, pipeline, sinks)}
            try:
                write_json(summary_path, data)
            except DSTFuseError as exc:
                if error is None:
                    error = exc
                elif isinstance(error, DSTFuseError):  # one line: the first error, and why there is no summary
                    error = type(error)(f"{one_line(str(error))}; and no summary: {exc}")
            else:
                if error is None:
                    say(f"summary: {summary_path}")
    if error is not None:
        raise error
    if summary is not None and summary.length_mismatch:
        longer = summary.length_mismatch
        shorter = "vis" if longer == "ir" else "ir"
        raise StreamMismatchError(
            f"streams differ in length: {shorter} ended after {summary.frames_paired} frames but {longer} has more; "
            f"stopped at the shorter ({summary.frames_written} frames written)"
        )
    if received:
        return 128 + received[0]
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``dstfuse-stream``; returns the exit code."""
    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
