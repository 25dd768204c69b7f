"""Training data: IR/visible pairs held in memory, random aligned crops, flips and motion blur.

Roots are read with :func:`dstfuse_stream.imageio.list_pairs` (paired ``ir/`` + ``vi/`` folders or the
LLVIP ``infrared/{train,test}`` + ``visible/{train,test}`` layout). Several roots are combined and
deduplicated by a hash of the IR pixels (``flir_train/`` repeats RoadScene under other names).

Video roots (a folder holding ``ir.mp4`` + ``vi.mp4``, frame i of one registered to frame i of the
other, as the M3SVD sequences) contribute every ``frame_step``-th frame pair.

A sample is ``(ir, vis_input, vis_sharp)``, float32 ``(1, S, S)`` in [0, 1]: ``vis_input`` is the
visible crop degraded as a :class:`Degradation` says (motion blur of a random length and angle, over
the whole crop or a soft random region; optionally low light: gain < 1 plus noise); ``vis_sharp`` is
the same crop undegraded, the target of every loss in the degradation-aware recipe.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError, SourceError, StreamMismatchError
from dstfuse_stream.degrade import low_light, motion_blur
from dstfuse_stream.imageio import list_pairs, read_bgr, resize_max_side, to_gray

__all__ = ["PairImage", "load_pairs", "load_video_pairs", "random_crop_pair", "Degradation", "CropSampler"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairImage:
    """One registered pair, luma uint8 ``(H, W)`` each, and where it came from."""

    name: str
    ir: np.ndarray
    vis: np.ndarray


def load_video_pairs(root: str | os.PathLike[str], *, frame_step: int = 1) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every ``frame_step``-th frame pair of ``root/ir.mp4`` + ``root/vi.mp4`` as ``(name, ir_bgr, vis_bgr)``.

    Reads both files to the end of the shorter one (OpenCV's FFmpeg reader). Raises
    :class:`~dstfuse_stream.errors.SourceError` when a file is missing or yields no frame.
    """
    root = Path(root)
    caps = []
    for name in ("ir.mp4", "vi.mp4"):
        if not (root / name).is_file():
            raise SourceError(f"video pair {str(root)!r}: {name} not found")
        caps.append(cv2.VideoCapture(str(root / name)))
    frames = []
    try:
        index = 0
        while True:
            (ok_ir, ir), (ok_vis, vis) = caps[0].read(), caps[1].read()
            if not (ok_ir and ok_vis):
                break
            if index % frame_step == 0:
                frames.append((f"{index:05d}", ir, vis))
            index += 1
    finally:
        for cap in caps:
            cap.release()
    if not frames:
        raise SourceError(f"video pair {str(root)!r}: no decodable frames")
    return frames


def _is_video_root(root: Path) -> bool:
    return (root / "ir.mp4").is_file() and (root / "vi.mp4").is_file()


def load_pairs(
    roots: Sequence[str | os.PathLike[str]], *, max_side: int | None = None, split: str | None = None, frame_step: int = 1
) -> tuple[list[PairImage], int]:
    """Read every pair under ``roots`` into memory as uint8 luma; return ``(pairs, n_duplicates)``.

    A root is a pairs folder (see :func:`~dstfuse_stream.imageio.list_pairs`) or a video-pair folder
    (``ir.mp4`` + ``vi.mp4``, every ``frame_step``-th frame). Pairs whose IR pixels (after resizing)
    hash equal to an earlier pair's are dropped and counted. ``max_side`` downsizes (INTER_AREA)
    images whose longer side exceeds it. Raises :class:`~dstfuse_stream.errors.SourceError` for a
    root without pairs and :class:`~dstfuse_stream.errors.StreamMismatchError` for a pair whose IR
    and visible sizes differ.
    """
    pairs: list[PairImage] = []
    seen: set[str] = set()
    dropped = 0
    for root in roots:
        root = Path(root)
        if _is_video_root(root):
            items = [(f"{root.name}/{n}", ir, vis) for n, ir, vis in load_video_pairs(root, frame_step=frame_step)]
        else:
            items = ((f"{root.name}/{i.name}", read_bgr(i), read_bgr(v)) for i, v in list_pairs(root, split=split))
        for name, ir_bgr, vis_bgr in items:
            ir, vis = to_gray(ir_bgr), to_gray(vis_bgr)
            if ir.shape != vis.shape:
                raise StreamMismatchError(
                    f"pair {name!r}: IR is {ir.shape[1]}x{ir.shape[0]}, visible is {vis.shape[1]}x{vis.shape[0]}; "
                    "expected registered images of one size"
                )
            ir, vis = resize_max_side(ir, max_side), resize_max_side(vis, max_side)
            digest = hashlib.sha1(np.ascontiguousarray(ir).tobytes() + str(ir.shape).encode()).hexdigest()
            if digest in seen:
                dropped += 1
                continue
            seen.add(digest)
            pairs.append(PairImage(name=name, ir=ir, vis=vis))
    logger.info("loaded %d pairs from %d root(s); dropped %d duplicate(s) (same IR pixels)", len(pairs), len(roots), dropped)
    return pairs, dropped


def random_crop_pair(
    ir: np.ndarray, vis: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Same random ``size x size`` crop of both images; images smaller than ``size`` are edge-padded."""
    h, w = ir.shape
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        ir = np.pad(ir, ((0, pad_h), (0, pad_w)), mode="edge")
        vis = np.pad(vis, ((0, pad_h), (0, pad_w)), mode="edge")
        h, w = ir.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return ir[y : y + size, x : x + size], vis[y : y + size, x : x + size]


@dataclass(frozen=True)
class Degradation:
    """How the visible input of a training sample is degraded (the targets stay sharp).

    Attributes:
        blur_prob: probability that a sample is motion-blurred.
        blur_lengths: ``(min, max)`` kernel length in pixels (odd lengths are drawn uniformly).
        curriculum_epochs: the longest length grows linearly from ``min`` to ``max`` over these
            epochs (0 = the full range from the start); short blur first, long blur later.
        angles: blur directions in degrees to draw from (``None`` = uniform in [0, 180)); a
            curriculum over directions runs with few angles first (see ``docs/training.md``).
        partial_prob: share of blurred samples blurred only inside a random soft ellipse (the rest of
            the crop stays sharp), so the mapping attention learns *where* the input is blurred.
        dark_prob: probability of a low-light exposure: gain drawn from ``dark_gain`` plus Gaussian
            noise with a std drawn from ``[0, noise_std]``.
    """

    blur_prob: float = 0.5
    blur_lengths: tuple[int, int] = (3, 15)
    curriculum_epochs: int = 0
    angles: tuple[float, ...] | None = None
    partial_prob: float = 0.0
    dark_prob: float = 0.0
    dark_gain: tuple[float, float] = (0.5, 1.0)
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        for name in ("blur_prob", "partial_prob", "dark_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        lo, hi = (int(v) for v in self.blur_lengths)
        object.__setattr__(self, "blur_lengths", (lo, hi))
        if not 1 <= lo <= hi:
            raise ConfigError(f"blur_lengths: expected 1 <= min <= max, got {self.blur_lengths}")
        g_lo, g_hi = (float(v) for v in self.dark_gain)
        object.__setattr__(self, "dark_gain", (g_lo, g_hi))
        if not 0.0 < g_lo <= g_hi <= 1.0:
            raise ConfigError(f"dark_gain: expected 0 < low <= high <= 1, got {self.dark_gain}")
        if self.angles is not None:
            object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
            if not self.angles:
                raise ConfigError("angles: expected at least one angle or None (uniform)")
        if self.curriculum_epochs < 0 or self.noise_std < 0:
            raise ConfigError("curriculum_epochs and noise_std: expected >= 0")

    def max_length(self, epoch: int) -> int:
        """Longest blur length drawn in ``epoch`` (the curriculum)."""
        lo, hi = self.blur_lengths
        if self.curriculum_epochs <= 0:
            return hi
        return int(round(lo + (hi - lo) * min(1.0, (epoch + 1) / self.curriculum_epochs)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blur_lengths"], d["dark_gain"] = list(self.blur_lengths), list(self.dark_gain)
        d["angles"] = None if self.angles is None else list(self.angles)
        return d


def soft_ellipse_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ellipse covering roughly 15-60 % of a ``size x size`` crop, feathered; float32 in [0, 1]."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    ry, rx = rng.uniform(0.25, 0.5, 2) * size
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float32)
    return np.clip(cv2.GaussianBlur(mask, (0, 0), size / 24.0), 0.0, 1.0)


class CropSampler:
    """Deterministic epoch-wise batches of augmented crops drawn from in-memory pairs.

    ``batches(epoch)`` yields ``(ir, vis_input, vis_sharp, blur_mask)`` float32 arrays ``(B, 1, S, S)``. The RNG
    is seeded by ``(seed, epoch)`` only, so an epoch replays identically (exact ``--resume``).
    Each epoch draws ``crops_per_image`` crops from every pair, shuffled, in batches of
    ``batch_size`` (the last, smaller batch is dropped unless it is the only one).
    """

    def __init__(
        self,
        pairs: Sequence[PairImage],
        *,
        crop_size: int,
        batch_size: int,
        crops_per_image: int = 1,
        degradation: Degradation | None = None,
        seed: int = 0,
    ) -> None:
        if not pairs:
            raise ConfigError("training data: expected at least one pair, got none")
        if crop_size < 1 or batch_size < 1 or crops_per_image < 1:
            raise ConfigError(
                f"crop_size, batch_size, crops_per_image: expected >= 1, got {crop_size}, {batch_size}, {crops_per_image}"
            )
        self.pairs = list(pairs)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.crops_per_image = crops_per_image
        self.degradation = degradation if degradation is not None else Degradation()
        self.seed = seed

    def steps_per_epoch(self) -> int:
        n = len(self.pairs) * self.crops_per_image
        return max(1, n // self.batch_size)

    def degrade(self, sharp: np.ndarray, rng: np.random.Generator, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(vis_input, blur_mask)`` made from a sharp float32 crop, as :attr:`degradation` says.

        ``blur_mask`` (float32, same shape) is 1 where the input is motion-blurred, 0 where it is
        sharp, soft at the edge of a partial blur: the target of the mapping attention.
        """
        d = self.degradation
        vis_in = sharp
        mask = np.zeros_like(sharp)
        if rng.random() < d.blur_prob:
            lo = d.blur_lengths[0]
            hi = max(lo, d.max_length(epoch))
            length = 2 * int(rng.integers(lo // 2, hi // 2 + 1)) + 1
            angle = float(rng.uniform(0.0, 180.0)) if d.angles is None else float(d.angles[rng.integers(len(d.angles))])
            blurred = motion_blur(sharp, length, angle)
            mask = np.ones_like(sharp)
            if rng.random() < d.partial_prob:
                mask = soft_ellipse_mask(sharp.shape[0], rng)
                blurred = mask * blurred + (1.0 - mask) * sharp
            vis_in = np.clip(blurred, 0.0, 1.0)
        if rng.random() < d.dark_prob:
            gain = float(rng.uniform(*d.dark_gain))
            vis_in = low_light(vis_in, gain, float(rng.uniform(0.0, d.noise_std)), rng)
        return np.ascontiguousarray(vis_in, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.float32)

    def sample(self, index: int, rng: np.random.Generator, epoch: int = 0) -> tuple[np.ndarray, ...]:
        """One augmented crop of pair ``index``: ``(ir, vis_input, vis_sharp, blur_mask)`` float32 ``(S, S)``."""
        pair = self.pairs[index]
        ir, vis = random_crop_pair(pair.ir, pair.vis, self.crop_size, rng)
        if rng.random() < 0.5:
            ir, vis = ir[:, ::-1], vis[:, ::-1]
        if rng.random() < 0.5:
            ir, vis = ir[::-1], vis[::-1]
        ir = np.ascontiguousarray(ir, dtype=np.float32) / np.float32(255.0)
        sharp = np.ascontiguousarray(vis, dtype=np.float32) / np.float32(255.0)
        vis_in, mask = self.degrade(sharp, rng, epoch)
        return ir, vis_in, sharp, mask

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches ``(ir, vis_input, vis_sharp, blur_mask)``, each float32 ``(B, 1, S, S)``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = np.repeat(np.arange(len(self.pairs)), self.crops_per_image)
        rng.shuffle(order)
        steps = self.steps_per_epoch()
        for s in range(steps):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            samples = [self.sample(int(i), rng, epoch) for i in idx]
            yield tuple(np.stack([smp[k] for smp in samples])[:, None] for k in range(4))
