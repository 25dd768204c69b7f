"""Training data: IR/visible pairs held in memory, random aligned crops, flips and motion blur.

Roots are read with :func:`dstfuse_stream.imageio.list_pairs` (paired ``ir/`` + ``vi/`` folders or the
LLVIP ``infrared/{train,test}`` + ``visible/{train,test}`` layout). Several roots are combined and
deduplicated by a hash of the IR pixels (``flir_train/`` repeats RoadScene under other names).

A sample is ``(ir, vis_input, vis_sharp)``, float32 ``(1, S, S)`` in [0, 1]: ``vis_input`` is the
visible crop, motion-blurred with probability ``blur_prob``; ``vis_sharp`` is the same crop unblurred.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError, StreamMismatchError
from dstfuse_stream.degrade import motion_blur
from dstfuse_stream.imageio import list_pairs, read_bgr, resize_max_side, to_gray

__all__ = ["PairImage", "load_pairs", "random_crop_pair", "CropSampler"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairImage:
    """One registered pair, luma uint8 ``(H, W)`` each, and where it came from."""

    name: str
    ir: np.ndarray
    vis: np.ndarray


def load_pairs(
    roots: Sequence[str | os.PathLike[str]], *, max_side: int | None = None, split: str | None = None
) -> tuple[list[PairImage], int]:
    """Read every pair under ``roots`` into memory as uint8 luma; return ``(pairs, n_duplicates)``.

    Pairs whose IR pixels (after resizing) hash equal to an earlier pair's are dropped and counted.
    ``max_side`` downsizes (INTER_AREA) images whose longer side exceeds it. Raises
    :class:`~dstfuse_stream.errors.SourceError` for a root without pairs and
    :class:`~dstfuse_stream.errors.StreamMismatchError` for a pair whose IR and visible sizes differ.
    """
    pairs: list[PairImage] = []
    seen: set[str] = set()
    dropped = 0
    for root in roots:
        for ir_path, vis_path in list_pairs(root, split=split):
            ir = to_gray(read_bgr(ir_path))
            vis = to_gray(read_bgr(vis_path))
            if ir.shape != vis.shape:
                raise StreamMismatchError(
                    f"pair {str(ir_path)!r}: IR is {ir.shape[1]}x{ir.shape[0]}, visible is {vis.shape[1]}x{vis.shape[0]}; "
                    "expected registered images of one size"
                )
            ir, vis = resize_max_side(ir, max_side), resize_max_side(vis, max_side)
            digest = hashlib.sha1(np.ascontiguousarray(ir).tobytes() + str(ir.shape).encode()).hexdigest()
            if digest in seen:
                dropped += 1
                continue
            seen.add(digest)
            pairs.append(PairImage(name=f"{Path(root).name}/{ir_path.name}", ir=ir, vis=vis))
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


class CropSampler:
    """Deterministic epoch-wise batches of augmented crops drawn from in-memory pairs.

    ``batches(epoch)`` yields ``(ir, vis_input, vis_sharp)`` float32 arrays ``(B, 1, S, S)``. The RNG
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
        blur_prob: float = 0.5,
        blur_lengths: tuple[int, int] = (3, 15),
        seed: int = 0,
    ) -> None:
        if not pairs:
            raise ConfigError("training data: expected at least one pair, got none")
        if crop_size < 1 or batch_size < 1 or crops_per_image < 1:
            raise ConfigError(
                f"crop_size, batch_size, crops_per_image: expected >= 1, got {crop_size}, {batch_size}, {crops_per_image}"
            )
        if not 0.0 <= blur_prob <= 1.0:
            raise ConfigError(f"blur_prob: expected a probability in [0, 1], got {blur_prob}")
        self.pairs = list(pairs)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.crops_per_image = crops_per_image
        self.blur_prob = blur_prob
        self.blur_lengths = blur_lengths
        self.seed = seed

    def steps_per_epoch(self) -> int:
        n = len(self.pairs) * self.crops_per_image
        return max(1, n // self.batch_size)

    def sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented crop of pair ``index``: ``(ir, vis_input, vis_sharp)`` float32 ``(S, S)``."""
        pair = self.pairs[index]
        ir, vis = random_crop_pair(pair.ir, pair.vis, self.crop_size, rng)
        if rng.random() < 0.5:
            ir, vis = ir[:, ::-1], vis[:, ::-1]
        if rng.random() < 0.5:
            ir, vis = ir[::-1], vis[::-1]
        ir = np.ascontiguousarray(ir, dtype=np.float32) / np.float32(255.0)
        sharp = np.ascontiguousarray(vis, dtype=np.float32) / np.float32(255.0)
        vis_in = sharp
        if rng.random() < self.blur_prob:
            lo, hi = self.blur_lengths
            length = 2 * int(rng.integers(lo // 2, hi // 2 + 1)) + 1
            vis_in = np.clip(motion_blur(sharp, length, float(rng.uniform(0.0, 180.0))), 0.0, 1.0)
        return ir, vis_in, sharp

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = np.repeat(np.arange(len(self.pairs)), self.crops_per_image)
        rng.shuffle(order)
        steps = self.steps_per_epoch()
        for s in range(steps):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            samples = [self.sample(int(i), rng) for i in idx]
            yield tuple(np.stack([smp[k] for smp in samples])[:, None] for k in range(3))  # type: ignore[misc]
