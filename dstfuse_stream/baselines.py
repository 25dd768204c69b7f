"""Classic (training-free) fusion methods behind the same interface as the network.

Each baseline is a :class:`~dstfuse_stream.backends.base.FusionBackend` running on the CPU in
numpy/OpenCV, so ``baseline.fuse(ir, vis)`` accepts exactly what a DSTFuse backend accepts
(``(H, W)`` or ``(B, 1, H, W)``, uint8 or float in [0, 1]) and returns float32 in [0, 1] in the
input's layout::

    with create_baseline("gff") as method:
        fused = method.fuse(ir, vis)

Methods (:data:`BASELINE_NAMES`):

* ``average``: ``(I + V) / 2``.
* ``max``: pixel-wise ``max(I, V)``.
* ``laplacian``: Laplacian-pyramid fusion (Burt & Adelson): choose-max-abs on every detail
  level, average of the two base (coarsest Gaussian) levels, collapse, clip to [0, 1].
* ``gff``: guided-filtering fusion (Li, Kang & Hu, IEEE TIP 2013): two-scale decomposition with a
  31x31 mean filter, saliency = gaussian(11x11, sigma 5) of |3x3 Laplacian|, binary argmax weight
  maps refined by guided filters (base: r=45, eps=0.3; detail: r=7, eps=1e-6), normalised.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import cv2
import numpy as np

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.errors import BackendError, ConfigError

__all__ = [
    "BASELINE_NAMES",
    "AverageFusion",
    "MaxFusion",
    "LaplacianPyramidFusion",
    "GuidedFilterFusion",
    "create_baseline",
    "laplacian_pyramid",
    "collapse_laplacian_pyramid",
    "guided_filter",
]

class _BaselineBackend(FusionBackend):
    """A numpy baseline: fuses each ``(H, W)`` image of a validated batch with :meth:`fuse_image`."""

    def __init__(self) -> None:
        super().__init__(device="cpu", precision="fp32")

    @abstractmethod
    def fuse_image(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse one float32 ``(H, W)`` pair in [0, 1]; return float32 ``(H, W)`` in [0, 1]."""

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        out = np.empty_like(ir, dtype=np.float32)
        for i in range(ir.shape[0]):
            out[i, 0] = self.fuse_image(ir[i, 0], vis[i, 0])
        return out

    def describe(self) -> str:
        return f"{self.name} baseline on cpu (numpy)"


class AverageFusion(_BaselineBackend):
    """``F = (I + V) / 2``."""

    name = "average"

    def fuse_image(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return (ir + vis) * np.float32(0.5)


class MaxFusion(_BaselineBackend):
    """``F = max(I, V)`` per pixel."""

    name = "max"

    def fuse_image(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return np.maximum(ir, vis)


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` detail images (fine to coarse) followed by the base (coarsest Gaussian level).

    Uses OpenCV's 5x5 ``pyrDown``/``pyrUp``; :func:`collapse_laplacian_pyramid` inverts it exactly
    up to float rounding.
    """
    current = np.ascontiguousarray(image, dtype=np.float32)
    pyramid: list[np.ndarray] = []
    for _ in range(levels):
        down = cv2.pyrDown(current)
        up = cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - up)
        current = down
    pyramid.append(current)
    return pyramid


def collapse_laplacian_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Rebuild the image from :func:`laplacian_pyramid` output."""
    current = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        current = cv2.pyrUp(current, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return current


class LaplacianPyramidFusion(_BaselineBackend):
    """Laplacian-pyramid fusion: max-abs on detail levels, average on the base, clipped to [0, 1].

    Args:
        levels: detail levels; reduced for small images so the base keeps at least 2 pixels a side.
    """

    name = "laplacian"

    def __init__(self, *, levels: int = 4) -> None:
        if levels < 1:
            raise ConfigError(f"levels: expected >= 1, got {levels}")
        super().__init__()
        self.levels = int(levels)

    def _levels_for(self, shape: tuple[int, int]) -> int:
        return max(0, min(self.levels, int(np.floor(np.log2(min(shape)))) - 1))

    def fuse_image(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        levels = self._levels_for(ir.shape)
        p_ir, p_vis = laplacian_pyramid(ir, levels), laplacian_pyramid(vis, levels)
        fused = [np.where(np.abs(di) >= np.abs(dv), di, dv) for di, dv in zip(p_ir[:-1], p_vis[:-1])]
        fused.append((p_ir[-1] + p_vis[-1]) * np.float32(0.5))
        return np.clip(collapse_laplacian_pyramid(fused), 0.0, 1.0)

    def describe(self) -> str:
        return f"laplacian baseline on cpu (numpy, {self.levels} levels)"


def _box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2r+1)^2`` window clipped to the image (He et al.'s ``boxfilter(x) / N``)."""
    k = (2 * radius + 1, 2 * radius + 1)
    total = cv2.boxFilter(x, cv2.CV_64F, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    h, w = x.shape
    rows = np.minimum(np.arange(h) + radius, h - 1) - np.maximum(np.arange(h) - radius, 0) + 1
    cols = np.minimum(np.arange(w) + radius, w - 1) - np.maximum(np.arange(w) - radius, 0) + 1
    return total / np.outer(rows, cols)


def guided_filter(guide: np.ndarray, src: np.ndarray, *, radius: int, eps: float) -> np.ndarray:
    """Gray guided filter (He, Sun & Tang 2010) with windows clipped at the border; float64 out."""
    guide = guide.astype(np.float64)
    src = src.astype(np.float64)
    mean_i = _box_mean(guide, radius)
    mean_p = _box_mean(src, radius)
    cov_ip = _box_mean(guide * src, radius) - mean_i * mean_p
    var_i = _box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box_mean(a, radius) * guide + _box_mean(b, radius)


class GuidedFilterFusion(_BaselineBackend):
    """GFF (Li, Kang & Hu 2013) for two gray images in [0, 1].

    Where the two saliencies tie exactly (flat regions, identical inputs) both weight maps are 0.5
    (the reference MATLAB code gives the tie to the first image); refined weights are clipped at 0
    and normalised to sum to 1, so identical inputs return the input and two constants their mean.
    """

    name = "gff"

    def __init__(
        self,
        *,
        base_radius: int = 45,
        base_eps: float = 0.3,
        detail_radius: int = 7,
        detail_eps: float = 1e-6,
        mean_size: int = 31,
    ) -> None:
        if min(base_radius, detail_radius) < 1 or min(base_eps, detail_eps) <= 0 or mean_size < 1:
            raise ConfigError("gff: expected radii >= 1, eps > 0 and mean_size >= 1")
        super().__init__()
        self.base_radius, self.base_eps = int(base_radius), float(base_eps)
        self.detail_radius, self.detail_eps = int(detail_radius), float(detail_eps)
        self.mean_size = int(mean_size)

    @staticmethod
    def _saliency(x: np.ndarray) -> np.ndarray:
        lap = cv2.Laplacian(x, cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REPLICATE)
        return cv2.GaussianBlur(np.abs(lap), (11, 11), 5.0, borderType=cv2.BORDER_REPLICATE)

    def fuse_image(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        sources = (ir.astype(np.float64), vis.astype(np.float64))
        k = (self.mean_size, self.mean_size)
        bases = [cv2.blur(s, k, borderType=cv2.BORDER_REPLICATE) for s in sources]
        details = [s - b for s, b in zip(sources, bases)]
        sal_ir, sal_vis = (self._saliency(s) for s in sources)
        p_ir = np.where(sal_ir > sal_vis, 1.0, np.where(sal_ir < sal_vis, 0.0, 0.5))
        masks = (p_ir, 1.0 - p_ir)
        w_base = [guided_filter(s, p, radius=self.base_radius, eps=self.base_eps) for s, p in zip(sources, masks)]
        w_detail = [guided_filter(s, p, radius=self.detail_radius, eps=self.detail_eps) for s, p in zip(sources, masks)]
        fused = np.zeros_like(sources[0])
        for weights, layers in ((w_base, bases), (w_detail, details)):
            w = [np.maximum(x, 0.0) + 1e-12 for x in weights]
            total = w[0] + w[1]
            fused += (w[0] * layers[0] + w[1] * layers[1]) / total
        return np.clip(fused, 0.0, 1.0).astype(np.float32)

    def describe(self) -> str:
        return (
            f"gff baseline on cpu (numpy, base r={self.base_radius} eps={self.base_eps:g}, "
            f"detail r={self.detail_radius} eps={self.detail_eps:g})"
        )


_BASELINES: dict[str, type[_BaselineBackend]] = {
    "average": AverageFusion,
    "max": MaxFusion,
    "laplacian": LaplacianPyramidFusion,
    "gff": GuidedFilterFusion,
}
BASELINE_NAMES: tuple[str, ...] = tuple(_BASELINES)


def create_baseline(name: str, **kwargs: Any) -> FusionBackend:
    """Create a baseline by name (:data:`BASELINE_NAMES`); ``kwargs`` go to its constructor."""
    try:
        cls = _BASELINES[name]
    except KeyError:
        raise BackendError(f"baseline {name!r}: expected one of {list(BASELINE_NAMES)}") from None
    return cls(**kwargs)
