"""The fusion methods an evaluation compares, behind one small interface.

* :class:`DSTFuseMethod`: the network (any checkpoint :func:`dstfuse_stream.checkpoint.load_model`
  reads); besides the fused image it returns the CST output (``deblurred``) and the mapping
  attention from ``model.intermediates(ir, vis)``. torch is imported only here, and only when used.
* :class:`BaselineMethod`: a classic method of :mod:`dstfuse_stream.baselines` (numpy).
* :class:`FolderMethod`: fused images written by another tool (SeAFusion's reference outputs, a
  user's own method), matched by file stem. Layouts, first existing folder wins::

      DIR/<dataset>/<condition>/   DIR/<dataset>/   DIR/<condition>/   DIR/

  where ``<dataset>`` is the pair folder's name (``vifb``, ``m3svd_frames_0111_1753``) and
  ``<condition>`` is ``sharp`` (fused from the sharp visible) or ``blur`` (from the real blurred
  ``vi_blur`` frames); only ``sharp`` falls back to ``DIR/<dataset>/`` and ``DIR/``. Synthetic blur
  conditions look for ``<dataset>/<kernel key>/`` (e.g. ``vifb/L15_a45/``) only.

A folder image of another size than the sources is scored by :func:`align_sizes`: the larger side
is shrunk (``INTER_AREA``) to the smaller one's size when the aspect ratios agree (to one pixel),
and the evaluation notes it under its table (SeAFusion's carShadow: 640x230 for a 768x276 pair).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from dstfuse_stream.baselines import BASELINE_NAMES, create_baseline
from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.errors import CheckpointError, ConfigError, SourceError, StreamMismatchError

from .data import find_image, load_luma_u8

__all__ = [
    "METHOD_NAMES",
    "SHARP",
    "BLUR",
    "PairKey",
    "FusedResult",
    "Method",
    "DSTFuseMethod",
    "BaselineMethod",
    "FolderMethod",
    "align_sizes",
    "Aligned",
    "fuse_aligned",
    "parse_fused_dirs",
    "MethodSpec",
    "close_all",
]

logger = logging.getLogger(__name__)

METHOD_NAMES: tuple[str, ...] = ("dstfuse", *BASELINE_NAMES)
#: condition of a pair fused from the sharp visible image
SHARP = "sharp"
#: condition of a pair fused from the real blurred visible frames (``vi_blur``)
BLUR = "blur"


@dataclass(frozen=True)
class PairKey:
    """Which input a method is asked to fuse: dataset folder name, IR file name, input condition."""

    dataset: str
    name: str
    condition: str = SHARP


@dataclass
class FusedResult:
    """A fused uint8 ``(H, W)`` luma; the network also gives its CST output and attention (float32)."""

    fused: np.ndarray
    deblurred: np.ndarray | None = None
    attention: np.ndarray | None = None


class Method(ABC):
    """A named way to get a fused image for an ``(ir, vis)`` uint8 pair."""

    name: str
    #: ``"network"``, ``"folder"`` or ``"baseline"`` (tables list them in that order)
    kind: str

    @abstractmethod
    def fuse(self, ir: np.ndarray, vis: np.ndarray, key: PairKey) -> FusedResult | None:
        """Fused result for this pair, or ``None`` when the method has no output for it (folders)."""

    def close(self) -> None:
        """Release what the method holds (models, sessions)."""


class BaselineMethod(Method):
    """A classic training-free method (:data:`dstfuse_stream.baselines.BASELINE_NAMES`)."""

    kind = "baseline"

    def __init__(self, name: str) -> None:
        self.name = name
        self._backend = create_baseline(name)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, key: PairKey) -> FusedResult:
        return FusedResult(float_to_uint8(self._backend.fuse(ir, vis)))

    def close(self) -> None:
        self._backend.close()


class DSTFuseMethod(Method):
    """The network through ``model.intermediates(ir, vis)`` (fused, deblurred, attention), no grad.

    Pass a loaded ``model`` or a checkpoint path ``weights`` (``None``: the shipped default weights).
    ``threads`` sets torch's intra-op threads until :meth:`close` (``None``: leave as is); 1 is the
    fastest on a 2-core machine that also trains (more threads wait on each other). ``work_scale``
    (1, 0.5, 0.25): the resolution the networks run at (:meth:`DSTFuse.set_work_scale`; ``Fuser()``'s
    default on a model with the blend head is 0.5).
    """

    kind = "network"

    def __init__(
        self,
        model=None,
        *,
        weights: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        name: str = "dstfuse",
        work_scale: float = 1.0,
    ) -> None:
        import torch

        self.name = name
        if model is None:
            model = _load_model(weights, device)
        if work_scale != 1.0:  # what Fuser(work_scale=...) runs; raises ConfigError for models without it
            from dstfuse_stream.backends.work_scale import with_work_scale

            model = with_work_scale(model, work_scale)  # a copy: a model passed in is not changed
        self.model = model.eval()
        self._threads_before = torch.get_num_threads()
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads: expected >= 1, got {threads}")
            torch.set_num_threads(threads)

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads_before)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, key: PairKey | None = None) -> FusedResult:
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            ir_t, vis_t = (torch.from_numpy(_unit(x))[None, None].to(device) for x in (ir, vis))
            out = self.model.intermediates(ir_t, vis_t)
            fused, deblurred, attention = (
                _to_image(t, ir.shape) for t in (out.fused, out.deblurred, out.attention)
            )
        return FusedResult(float_to_uint8(fused), deblurred=deblurred, attention=attention)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _to_image(t, shape: tuple[int, int]) -> np.ndarray:
    """``(B, 1, h, w)`` tensor -> float32 ``(H, W)`` clipped to [0, 1] (bilinear resize if h, w differ)."""
    img = t[0, 0].float().cpu().numpy()
    if img.shape != tuple(shape):
        img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0.0, 1.0)


def _load_model(weights: str | None, device: str):
    from dstfuse_stream.checkpoint import default_weights_path, load_model

    if weights is None and not default_weights_path().is_file():
        raise CheckpointError(
            f"shipped weights {str(default_weights_path())!r} not found; pass --weights PATH "
            "or leave 'dstfuse' out of --methods"
        )
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(weights, device=device)
    logger.info("dstfuse: %s on %s", weights or default_weights_path(), device)
    return model


class FolderMethod(Method):
    """Fused images of another tool in ``root`` (layouts in the module docstring), matched by stem."""

    kind = "folder"

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = Path(root)
        self.missing: list[PairKey] = []

    def folder_for(self, dataset: str, condition: str) -> Path | None:
        """The folder holding this dataset's outputs for ``condition``, or ``None``."""
        r = self.root
        if condition == SHARP:
            candidates = [r / dataset / SHARP, r / dataset, r / SHARP, r]
        elif condition == BLUR:
            candidates = [r / dataset / BLUR, r / BLUR]
        else:
            candidates = [r / dataset / condition]
        return next((c for c in candidates if c.is_dir()), None)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, key: PairKey) -> FusedResult | None:
        folder = self.folder_for(key.dataset, key.condition)
        path = None if folder is None else find_image(folder, key.name)
        if path is None:
            self.missing.append(key)
            logger.debug("%s: no fused image for %s (%s) under %s", self.name, key.name, key.condition, self.root)
            return None
        return FusedResult(load_luma_u8(path))


def _same_aspect(small_wh: tuple[int, int], large_wh: tuple[int, int]) -> bool:
    (ws, hs), (wl, hl) = small_wh, large_wh
    return abs(round(wl * hs / hl) - ws) <= 1 or abs(round(hl * ws / wl) - hs) <= 1


def align_sizes(fused: np.ndarray, *images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], str | None]:
    """Bring ``fused`` and the source ``images`` (all one size) to one size for scoring.

    Same size: unchanged, note ``None``. Otherwise, when the aspect ratios agree to one pixel, the
    larger of the two is shrunk to the smaller's size with ``INTER_AREA`` and the note says which
    (``"sources 768x276 -> 640x230"`` or ``"fused 640x480 -> 320x240"``); else
    :class:`StreamMismatchError`.
    """
    fh, fw = fused.shape
    sh, sw = images[0].shape
    if (fh, fw) == (sh, sw):
        return fused, list(images), None
    if fh * fw < sh * sw:
        small, large = (fw, fh), (sw, sh)
    else:
        small, large = (sw, sh), (fw, fh)
    if not _same_aspect(small, large):
        raise StreamMismatchError(
            f"fused image {fw}x{fh} and sources {sw}x{sh}: expected one size or one aspect ratio (to 1 px)"
        )
    if fh * fw < sh * sw:
        resized = [cv2.resize(x, (fw, fh), interpolation=cv2.INTER_AREA) for x in images]
        return fused, resized, f"sources {sw}x{sh} -> {fw}x{fh}"
    return cv2.resize(fused, (sw, sh), interpolation=cv2.INTER_AREA), list(images), f"fused {fw}x{fh} -> {sw}x{sh}"


@dataclass
class Aligned:
    """A method's result and the sources to score it against, at one size (:func:`align_sizes`)."""

    result: FusedResult
    fused: np.ndarray
    sources: list[np.ndarray]
    note: str | None


def fuse_aligned(method: Method, ir: np.ndarray, vis: np.ndarray, key: PairKey, *, sources=None) -> Aligned | None:
    """Fuse ``(ir, vis)`` and align the result with ``sources`` (default ``(ir, vis)``); ``None`` if no output."""
    res = method.fuse(ir, vis, key)
    if res is None:
        return None
    fused, aligned, note = align_sizes(res.fused, *(sources if sources is not None else (ir, vis)))
    return Aligned(res, fused, aligned, note)


def parse_fused_dirs(specs: Iterable[str]) -> dict[str, Path]:
    """``["NAME=DIR", ...]`` -> ``{NAME: Path(DIR)}``; names must be new and folders must exist."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--fused-dir {spec!r}: expected NAME=DIR")
        if name in out or name in METHOD_NAMES:
            raise ConfigError(f"--fused-dir {spec!r}: method name {name!r} is already used")
        if not Path(folder).is_dir():
            raise SourceError(f"--fused-dir {spec!r}: {folder!r} is not a directory")
        out[name] = Path(folder)
    return out


@dataclass(frozen=True)
class MethodSpec:
    """What an evaluation compares, and how it runs the network (every ``run_*_eval`` takes one).

    Attributes:
        names: built-in methods (:data:`METHOD_NAMES`: ``dstfuse`` and the baselines).
        fused_dirs: ``{name: folder}`` of fused images written by other tools (:class:`FolderMethod`).
        weights: checkpoint path for ``dstfuse`` (``None``: the shipped default weights).
        device: torch device for ``dstfuse`` (``cpu``, ``cuda``, ``auto``).
        threads: torch intra-op threads while the evaluation runs (``None``: leave as is).
        model: an already loaded network (used instead of ``weights``).
        work_scale: resolution the network runs at (1, 0.5, 0.25; see :class:`DSTFuseMethod`).
    """

    names: Sequence[str] = METHOD_NAMES
    fused_dirs: Mapping[str, Path] = field(default_factory=dict)
    weights: str | None = None
    device: str = "cpu"
    threads: int | None = 1
    model: Any = None
    work_scale: float = 1.0

    def network(self) -> DSTFuseMethod:
        """The network alone."""
        return DSTFuseMethod(self.model, weights=self.weights, device=self.device, threads=self.threads,
                             work_scale=self.work_scale)

    def create(self) -> list[Method]:
        """The methods, network first, then folders, then baselines (``names`` order within)."""
        unknown = [n for n in self.names if n not in METHOD_NAMES]
        if unknown:
            raise ConfigError(f"methods {unknown}: unknown; expected names from {list(METHOD_NAMES)}")
        if not self.names and not self.fused_dirs:
            raise ConfigError("methods: expected at least one method (--methods or --fused-dir)")
        methods: list[Method] = [self.network()] if "dstfuse" in self.names else []
        methods += [FolderMethod(n, Path(d)) for n, d in self.fused_dirs.items()]
        methods += [BaselineMethod(n) for n in self.names if n != "dstfuse"]
        return methods


def close_all(methods: Iterable[Method]) -> None:
    """Close every method (errors in one do not skip the others)."""
    for m in methods:
        m.close()
