"""Calibration crops for int8 quantization: random (IR, visible) luma crops from training folders.

Each root is a paired folder (``ir/`` + ``vi/``, or LLVIP's layout) or a video pair (``ir.mp4`` +
``vi.mp4``). Crops are spread evenly over the roots; within a root, frames are taken at an even
stride and crops at random positions (``seed``). Luma is what the pipeline fuses: IR decoded to
gray, the visible frame's Y plane.

Validation data never calibrates: a root named like :data:`VALIDATION_NAMES` (VIFB, the M3SVD
frame clips used as held-out sequences: :data:`VALIDATION_PREFIXES`) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dstfuse_stream.errors import ConfigError
from dstfuse_stream.imageio import to_gray
from dstfuse_stream.sources import FrameSource, open_source_pair

__all__ = ["DATA_ROOT", "TRAINING_ROOTS", "VALIDATION_NAMES", "VALIDATION_PREFIXES", "CalibrationSet", "check_training_root", "calibration_crops"]

logger = logging.getLogger(__name__)

#: ``../shared/data`` beside the repository.
DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Training folders of ``DATA_ROOT`` (the shipped weights' training data), the default calibration set.
TRAINING_ROOTS = (
    "flir_train", "roadscene", "tno", "llvip", "msrs", "m3fd",
    "sequences/m3svd_0111_1716", "sequences/m3svd_0113_1714", "sequences/m3svd_0117_1605",
    "sequences/m3svd_0117_1620", "sequences/m3svd_1230_1202",
)
#: Folder names and name prefixes of validation data, refused as calibration roots.
VALIDATION_NAMES = ("vifb",)
VALIDATION_PREFIXES = ("m3svd_frames_",)


@dataclass
class CalibrationSet:
    """Crops and where they came from (stored in the int8 file's metadata)."""

    pairs: list[tuple[np.ndarray, np.ndarray]]
    roots: list[str]
    crop_size: int
    seed: int

    def info(self) -> dict[str, object]:
        h = hashlib.sha256()
        for ir, vis in self.pairs:
            h.update(ir.tobytes())
            h.update(vis.tobytes())
        return {"roots": self.roots, "crops": len(self.pairs), "crop_size": self.crop_size, "seed": self.seed, "sha256": h.hexdigest()}


def check_training_root(root: str | os.PathLike[str]) -> Path:
    """``root`` as a path, refusing validation folders (:data:`VALIDATION_NAMES`) and missing ones."""
    path = Path(root)
    parts = path.resolve().parts
    if any(part in VALIDATION_NAMES or part.startswith(VALIDATION_PREFIXES) for part in parts):
        raise ConfigError(f"calibration root {str(path)!r}: validation data (vifb, m3svd_frames_*) must not calibrate")
    if not path.exists():
        raise ConfigError(f"calibration root {str(path)!r}: not found")
    return path


def _open(root: Path) -> tuple[FrameSource, FrameSource]:
    if (root / "ir.mp4").is_file() and (root / "vi.mp4").is_file():
        return open_source_pair(root / "ir.mp4", root / "vi.mp4")
    return open_source_pair(pairs=root)


def _crop(ir: np.ndarray, vis: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = ir.shape
    ch, cw = min(size, h), min(size, w)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(ir[y : y + ch, x : x + cw]), np.ascontiguousarray(vis[y : y + ch, x : x + cw])


def _root_crops(root: Path, count: int, size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    ir_src, vis_src = _open(root)
    with ir_src, vis_src:
        known = [n for n in (ir_src.frame_count, vis_src.frame_count) if n is not None]
        total = min(known) if known else count
        frames = max(1, min(count, total))
        stride, per_frame = max(1, total // frames), math.ceil(count / frames)
        crops: list[tuple[np.ndarray, np.ndarray]] = []
        for (ir, vis) in zip(ir_src.frames(), vis_src.frames()):
            if ir.index % stride:
                continue
            ir_y, vis_y = to_gray(ir.image), to_gray(vis.image)
            if ir_y.shape != vis_y.shape:
                logger.debug("%s frame %d: IR %s and visible %s differ in size; skipped", root, ir.index, ir_y.shape, vis_y.shape)
                continue
            for _ in range(per_frame):
                crops.append(_crop(ir_y, vis_y, size, rng))
            if len(crops) >= count:
                break
    return crops[:count]


def calibration_crops(
    roots: list[str | os.PathLike[str]] | None = None, *, count: int = 300, crop_size: int = 256, seed: int = 0
) -> CalibrationSet:
    """``count`` crops (at most ``crop_size`` square) spread over ``roots`` (default: :data:`TRAINING_ROOTS`
    under :data:`DATA_ROOT`, those present)."""
    if count < 1 or crop_size < 16:
        raise ConfigError(f"calibration: expected count >= 1 and crop_size >= 16, got {count} and {crop_size}")
    if roots is None:
        paths = [DATA_ROOT / name for name in TRAINING_ROOTS if (DATA_ROOT / name).exists()]
        if not paths:
            raise ConfigError(f"calibration: none of the training folders {list(TRAINING_ROOTS)} is under {DATA_ROOT}; pass --data")
    else:
        paths = [check_training_root(r) for r in roots]
    rng = np.random.default_rng(seed)
    share = [count // len(paths) + (i < count % len(paths)) for i in range(len(paths))]
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for path, n in zip(paths, share):
        if n:
            got = _root_crops(path, n, crop_size, rng)
            logger.info("calibration: %d crops from %s", len(got), path)
            pairs.extend(got)
    return CalibrationSet(pairs, [str(p) for p in paths], crop_size, seed)
