"""Fused IR + visible video into a person detector: OpenCV's built-in HOG people detector runs on each
fused frame of ``dstfuse_stream.stream(...)``, and the boxes are drawn onto the frames, written as MP4.

    python examples/detect_people.py --pairs ../shared/data/sequences/m3svd_frames_0111_1753 --out outputs/people.mp4
    python examples/detect_people.py --ir cam0 --vis cam1 --out people.mp4 --max-size 640

Any source pair ``dstfuse-stream`` accepts works (cameras, files, folders, URLs). HOG needs people at
least ~64x128 pixels tall; swap :func:`detect_people` for a real detector in production. The HOG
detector is in OpenCV 4 (it left the main package in OpenCV 5): ``pip install "dstfuse-stream[examples]"``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

import dstfuse_stream as ds
from dstfuse_stream.cliutil import run_command
from dstfuse_stream.sinks import VideoSink

BOX_COLOUR = (0, 255, 0)  # BGR green


def people_detector() -> cv2.HOGDescriptor:
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs), no download needed."""
    if not hasattr(cv2, "HOGDescriptor"):
        raise ds.ConfigError(
            f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 moved it out); "
            "pip install 'opencv-python-headless>=4.8,<5' (the [examples] extra)"
        )
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def detect_people(image: np.ndarray, detector: Any) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` boxes of the people ``detector`` finds in a BGR or gray uint8 image."""
    boxes, _weights = detector.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    return [tuple(int(v) for v in box) for box in boxes]


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """A BGR copy of ``image`` with each ``(x, y, w, h)`` box drawn in :data:`BOX_COLOUR`."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    for x, y, w, h in boxes:
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOUR, 2)
    return out


def run(args: argparse.Namespace, detector: Any = None) -> int:
    detector = detector or people_detector()
    sources = {"pairs": args.pairs} if args.pairs else {"ir": args.ir, "vis": args.vis}
    frames = ds.stream(**sources, backend=args.backend, max_size=args.max_size, max_frames=args.max_frames)
    fps = frames.sources["vis"].fps or 30.0
    total = 0
    with frames, VideoSink(args.out, fps=fps) as sink:
        for frame in frames:
            boxes = detect_people(frame.fused, detector)
            total += len(boxes)
            sink.write(draw_boxes(frame.fused, boxes), index=frame.index, timestamp_s=frame.timestamp)
    print(f"{frames.summary.frames_written} fused frames, {total} people boxes; wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None, *, detector: Any = None) -> int:
    p = argparse.ArgumentParser(prog="detect_people", description=__doc__.splitlines()[0])
    p.add_argument("--ir", help="IR source (camera, file, folder, URL)")
    p.add_argument("--vis", help="visible source")
    p.add_argument("--pairs", help="recorded pairs root (ir/ + vi/) instead of --ir/--vis")
    p.add_argument("--out", required=True, help="output video with the boxes drawn (.mp4)")
    p.add_argument("--backend", default="auto", help="auto | torch | onnx | tensorrt")
    p.add_argument("--max-size", type=int, default=None, help="fuse at most this many pixels on the longer side")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    args = p.parse_args(argv)
    if not args.pairs and not (args.ir and args.vis):
        p.error("give --ir and --vis, or --pairs")
    return run_command("detect_people", run, args, detector)


if __name__ == "__main__":
    sys.exit(main())
