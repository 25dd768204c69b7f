"""Fusion-quality metrics (numpy + OpenCV) and the streaming :class:`TemporalStability`.

Every fusion metric takes the two sources and the fused image as ``(H, W)`` arrays in the house
order ``(ir, vis, fused)``; in the formulas below ``A`` = IR, ``B`` = visible, ``F`` = fused.
Single-image metrics take ``fused`` only. Inputs may be ``uint8`` (0-255) or float in [0, 1]
(values within 1e-3 outside are clipped); they are converted explicitly per metric:

* **gray scale 0-255** (float64, *not* re-quantised) for SF, AG, SD, CC, SCD, SSIM, VIF, Qabf;
* **8-bit levels** (float input ``rint(x * 255)``, as :func:`dstfuse_stream.colour.float_to_uint8`)
  for the histogram metrics EN and MI;
* **[0, 1]** for MSE and PSNR, which reproduces the scale of the DSTFuse paper's tables
  (MSE about 0.03, PSNR about 15 dB).

The paper's eight metrics are SF, AG, MSE, PSNR, MI, VIF, CC, SSIM; EN, SD, Qabf and SCD are the
other common ones. :data:`METRICS` is the registry (name -> :class:`Metric`) and
:func:`compute_all` evaluates all of them on one triple. Conventions, one per metric:

======  ====================================================================================
EN      Shannon entropy of the 256-bin histogram of ``F`` in bits.
SD      population standard deviation (ddof=0) of ``F`` on 0-255.
SF      ``sqrt(RF^2 + CF^2)``, ``RF^2 = sum_{i,j>=1} (F[i,j] - F[i,j-1])^2 / (M N)`` (row frequency,
        horizontal neighbours), ``CF^2`` likewise vertically; normalised by ``M N`` as in VIFB.
AG      ``1/((M-1)(N-1)) sum_{i<M-1, j<N-1} sqrt(((F[i+1,j]-F[i,j])^2 + (F[i,j+1]-F[i,j])^2) / 2)``
        (forward differences).
MSE     ``(mean((F-A)^2) + mean((F-B)^2)) / 2`` on [0, 1].
PSNR    ``10 log10(1 / MSE)`` with that MSE (peak 1); ``inf`` when MSE is 0 (not capped).
MI      ``MI(F, A) + MI(F, B)``, each ``H(X) + H(Y) - H(X, Y)`` from 256x256-bin joint
        histograms of 8-bit levels, in bits.
VIF     ``VIFp(A -> F) + VIFp(B -> F)`` (sum, not mean): pixel-domain multi-scale VIF of Sheikh &
        Bovik (``vifp_mscale``: 4 scales, gaussian windows N = 17/9/5/3 with sigma N/5,
        ``sigma_n^2 = 2``) on 0-255, with the source as *reference* and ``F`` as *distorted*
        image. Each term is 1 for ``F`` = source, 0 for a constant ``F``, > 1 for contrast gain.
CC      ``(corr(F, A) + corr(F, B)) / 2`` (mean of the two Pearson correlations).
SCD     ``corr(F - B, A) + corr(F - A, B)`` (Aslantas & Bendes 2015).
SSIM    ``SSIM(F, A) + SSIM(F, B)`` (sum, so F = A = B gives 2): Wang et al. 2004, 11x11
        gaussian window sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, mean of the SSIM map
        over the 'valid' window positions (as ``ssim_index.m``; no automatic down-sampling).
Qabf    Xydeas & Petrovic 2000 with 3x3 Sobel gradients (replicated border), ``Tg = 0.9994,
        kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8``, weights ``g^L`` with ``L = 1``.
        Strength preservation ``G = min(gS, gF) / max(gS, gF)`` (1 where both are 0; VIFB's
        ``G = gF`` where ``gS == gF`` quirk is not copied); orientation preservation
        ``Aor = | |aS - aF| - pi/2 | / (pi/2)`` with ``a = arctan(gy / gx)`` (VIFB form, treats
        orientations modulo pi). With these constants a perfect ``F`` scores :data:`QABF_MAX`
        = 0.9748, not exactly 1 (the sigmoids never reach 1); a constant ``F`` scores ~5e-4.
======  ====================================================================================

Undefined values (a correlation with a constant image, VIF of a constant source, Qabf when
both sources are constant) are ``nan``.

Two artefact measures (not in :data:`METRICS`; see their docstrings for the exact definitions):
:func:`flat_hf_energy_ratio` (grain: high-frequency energy of ``F`` in regions flat in both sources,
relative to the visible's; 1 = as much as the visible) and :func:`halo_overshoot` (mean overshoot of
``F`` beyond both sources' local max/min in a band around the strongest edges, 0-255 levels).
:func:`pearson` is the one Pearson correlation of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from dstfuse_stream.errors import InputShapeError

__all__ = [
    "Metric",
    "METRICS",
    "METRIC_NAMES",
    "PAPER_METRICS",
    "QABF_MAX",
    "compute_all",
    "entropy",
    "standard_deviation",
    "spatial_frequency",
    "average_gradient",
    "fusion_mse",
    "fusion_psnr",
    "mutual_information",
    "fusion_vif",
    "correlation_coefficient",
    "scd",
    "fusion_ssim",
    "qabf",
    "psnr",
    "ssim",
    "vifp",
    "pearson",
    "flat_region_mask",
    "flat_hf_energy_ratio",
    "strong_edge_band",
    "halo_overshoot",
    "halo_overshoot_map",
    "TemporalStability",
]

_RANGE_TOL = 1e-3

# Xydeas-Petrovic constants
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
_QABF_L = 1.0
#: Qabf of a perfect fusion (``G = 1`` and ``Aor = 1`` everywhere) with the standard constants.
QABF_MAX = (_QABF_TG / (1.0 + math.exp(_QABF_KG * (1.0 - _QABF_DG)))) * (
    _QABF_TA / (1.0 + math.exp(_QABF_KA * (1.0 - _QABF_DA)))
)

_SSIM_WIN, _SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 11, 1.5, 0.01, 0.03
_VIF_SIGMA_NSQ = 2.0
_VIF_MIN_SIZE = 41  # smallest side for which the 4th VIF scale keeps one valid pixel


# --------------------------------------------------------------------------------------------
# input conversion
# --------------------------------------------------------------------------------------------
def _check_2d(x: object, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InputShapeError(f"{name}: expected a numpy array (H, W), got {type(x).__name__}")
    if x.ndim != 2:
        raise InputShapeError(f"{name}: expected a 2-D gray image (H, W), got shape {x.shape}")
    if 0 in x.shape:
        raise InputShapeError(f"{name}: expected a non-empty image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise InputShapeError(f"{name}: expected uint8 (0-255) or float in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise InputShapeError(f"{name}: expected float values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return np.clip(x, 0.0, 1.0)


def _to_255(x: np.ndarray) -> np.ndarray:
    """Checked image -> float64 on 0-255 (no re-quantisation)."""
    return x.astype(np.float64) if x.dtype == np.uint8 else x.astype(np.float64) * 255.0


def _to_levels(x: np.ndarray) -> np.ndarray:
    """Checked image -> int64 8-bit levels 0..255 (float input rounded)."""
    if x.dtype == np.uint8:
        return x.astype(np.int64)
    return np.rint(x.astype(np.float64) * 255.0).astype(np.int64)


def _to_unit(x: np.ndarray) -> np.ndarray:
    """Checked image -> float64 on [0, 1]."""
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def _check_triple(ir: object, vis: object, fused: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = _check_2d(fused, "fused")
    a = _check_2d(ir, "ir")
    b = _check_2d(vis, "vis")
    for name, x in (("ir", a), ("vis", b)):
        if x.shape != f.shape:
            raise InputShapeError(f"{name}: expected the same shape as fused {f.shape}, got {x.shape}")
    return a, b, f


def _check_same(image: object, reference: object) -> tuple[np.ndarray, np.ndarray]:
    x = _check_2d(image, "image")
    r = _check_2d(reference, "reference")
    if x.shape != r.shape:
        raise InputShapeError(f"reference: expected the same shape as image {x.shape}, got {r.shape}")
    return x, r


# --------------------------------------------------------------------------------------------
# kernels on prepared float64 arrays
# --------------------------------------------------------------------------------------------
def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    """1-D factor of the separable window MATLAB ``fspecial('gaussian', size, sigma)`` (normalised)."""
    return cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F)


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(w w^T, x, 'valid')`` for an odd symmetric 1-D factor ``w`` (separable)."""
    r = window.shape[0] // 2
    out = cv2.sepFilter2D(np.ascontiguousarray(x), cv2.CV_64F, window, window, borderType=cv2.BORDER_REFLECT)
    return out[r : x.shape[0] - r, r : x.shape[1] - r]


def _entropy_levels(levels: np.ndarray) -> float:
    p = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    p = p[p > 0] / levels.size
    return float(-np.sum(p * np.log2(p)) + 0.0)


def _mi_levels(x: np.ndarray, y: np.ndarray) -> float:
    joint = np.bincount((x * 256 + y).ravel(), minlength=256 * 256).astype(np.float64) / x.size
    joint = joint.reshape(256, 256)
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    outer = np.outer(px, py)
    return float(np.sum(joint[nz] * np.log2(joint[nz] / outer[nz])) + 0.0)




def _ssim_255(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    if min(x.shape) < _SSIM_WIN:
        raise InputShapeError(f"SSIM: expected images of at least {_SSIM_WIN}x{_SSIM_WIN}, got {x.shape}")
    w = _gaussian_window(_SSIM_WIN, _SSIM_SIGMA)
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mu_x * mu_x
    syy = _filter_valid(y * y, w) - mu_y * mu_y
    sxy = _filter_valid(x * y, w) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def _vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    """``vifp_mscale.m`` (Sheikh & Bovik) on float64 arrays."""
    if min(ref.shape) < _VIF_MIN_SIZE:
        raise InputShapeError(f"VIF: expected images of at least {_VIF_MIN_SIZE}x{_VIF_MIN_SIZE}, got {ref.shape}")
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_window(n, n / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        s1 = np.maximum(_filter_valid(ref * ref, win) - mu1 * mu1, 0.0)
        s2 = np.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0.0)
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat1 = s1 < eps
        g[flat1] = 0.0
        sv[flat1] = s2[flat1]
        s1[flat1] = 0.0
        flat2 = s2 < eps
        g[flat2] = 0.0
        sv[flat2] = 0.0
        neg = g < 0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        sv[sv <= eps] = eps
        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ))))
        den += float(np.sum(np.log10(1.0 + s1 / _VIF_SIGMA_NSQ)))
    return num / den if den > 0 else float("nan")


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and orientation ``arctan(gy/gx)`` (``pi/2`` where ``gx == 0``)."""
    gx = cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(x, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    mag = np.sqrt(gx * gx + gy * gy)
    angle = np.full(x.shape, math.pi / 2)
    nz = gx != 0
    angle[nz] = np.arctan(gy[nz] / gx[nz])
    return mag, angle


def _qabf_edge_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    hi = np.maximum(g_s, g_f)
    strength = np.divide(np.minimum(g_s, g_f), hi, out=np.ones_like(hi), where=hi > 0)
    orient = np.abs(np.abs(a_s - a_f) - math.pi / 2) / (math.pi / 2)
    q_g = _QABF_TG / (1.0 + np.exp(_QABF_KG * (strength - _QABF_DG)))
    q_a = _QABF_TA / (1.0 + np.exp(_QABF_KA * (orient - _QABF_DA)))
    return q_g * q_a


def _qabf_255(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    g_a, ang_a = _sobel(a)
    g_b, ang_b = _sobel(b)
    g_f, ang_f = _sobel(f)
    w_a, w_b = g_a**_QABF_L, g_b**_QABF_L
    den = float(np.sum(w_a + w_b))
    if den == 0.0:
        return float("nan")
    num = np.sum(_qabf_edge_preservation(g_a, ang_a, g_f, ang_f) * w_a) + np.sum(
        _qabf_edge_preservation(g_b, ang_b, g_f, ang_f) * w_b
    )
    return float(num / den)


def _sf_255(f: np.ndarray) -> float:
    rf2 = float(np.sum(np.diff(f, axis=1) ** 2)) / f.size
    cf2 = float(np.sum(np.diff(f, axis=0) ** 2)) / f.size
    return math.sqrt(rf2 + cf2)


def _ag_255(f: np.ndarray) -> float:
    if min(f.shape) < 2:
        raise InputShapeError(f"fused: AG needs at least 2x2 pixels, got {f.shape}")
    dx = f[:-1, 1:] - f[:-1, :-1]
    dy = f[1:, :-1] - f[:-1, :-1]
    return float(np.mean(np.sqrt((dx * dx + dy * dy) / 2.0)))


def _mse_unit(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return 0.5 * (float(np.mean((f - a) ** 2)) + float(np.mean((f - b) ** 2)))


def _psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


# --------------------------------------------------------------------------------------------
# public metric functions
# --------------------------------------------------------------------------------------------
def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two same-size arrays (any scale; float64); ``nan`` if either is constant."""
    xc = np.asarray(x, np.float64) - np.mean(x, dtype=np.float64)
    yc = np.asarray(y, np.float64) - np.mean(y, dtype=np.float64)
    if xc.shape != yc.shape:
        raise InputShapeError(f"pearson: expected two arrays of one shape, got {xc.shape} and {yc.shape}")
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    if den == 0.0:
        return float("nan")
    return float(np.sum(xc * yc) / den)


def entropy(fused: np.ndarray) -> float:
    """EN: Shannon entropy (bits) of the 256-bin histogram of 8-bit levels of ``fused``."""
    return _entropy_levels(_to_levels(_check_2d(fused, "fused")))


def standard_deviation(fused: np.ndarray) -> float:
    """SD: population standard deviation of ``fused`` on 0-255."""
    return float(np.std(_to_255(_check_2d(fused, "fused"))))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) on 0-255, both normalised by M*N (see module docstring)."""
    return _sf_255(_to_255(_check_2d(fused, "fused")))


def average_gradient(fused: np.ndarray) -> float:
    """AG: mean of sqrt((dx^2 + dy^2) / 2) over forward differences, on 0-255."""
    return _ag_255(_to_255(_check_2d(fused, "fused")))


def fusion_mse(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """MSE on [0, 1], averaged over both sources: (MSE(F, A) + MSE(F, B)) / 2."""
    a, b, f = (_to_unit(x) for x in _check_triple(ir, vis, fused))
    return _mse_unit(a, b, f)


def fusion_psnr(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """PSNR = 10 log10(1 / MSE) with :func:`fusion_mse` (peak 1); ``inf`` when MSE = 0."""
    return _psnr_from_mse(fusion_mse(ir, vis, fused))


def mutual_information(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """MI = MI(F, A) + MI(F, B) in bits from 256x256-bin joint histograms of 8-bit levels."""
    a, b, f = (_to_levels(x) for x in _check_triple(ir, vis, fused))
    return _mi_levels(f, a) + _mi_levels(f, b)


def vifp(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain multi-scale VIF (``vifp_mscale``) of ``distorted`` w.r.t. ``reference``, on 0-255.

    Both sides must be at least 41x41 (the 4th scale needs one valid pixel).
    """
    d, r = _check_same(distorted, reference)
    return _vifp(_to_255(r), _to_255(d))


def fusion_vif(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIF = VIFp(reference A, distorted F) + VIFp(reference B, distorted F) (sum)."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    return _vifp(a, f) + _vifp(b, f)


def correlation_coefficient(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """CC = (corr(F, A) + corr(F, B)) / 2, Pearson correlations (mean, not sum)."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    return 0.5 * (pearson(f, a) + pearson(f, b))


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B) (sum of the correlations of differences)."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    return pearson(f - b, a) + pearson(f - a, b)


def fusion_ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """SSIM = SSIM(F, A) + SSIM(F, B) on 0-255 (L = 255, 11x11 gaussian sigma 1.5, valid window)."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    return _ssim_255(f, a, 255.0) + _ssim_255(f, b, 255.0)


def qabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic) on 0-255 with Sobel gradients; at most :data:`QABF_MAX`."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    return _qabf_255(a, b, f)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Standard single-image PSNR of ``image`` vs ``reference`` on [0, 1] (data range 1)."""
    x, r = (_to_unit(v) for v in _check_same(image, reference))
    return _psnr_from_mse(float(np.mean((x - r) ** 2)))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Standard single-image SSIM (Wang et al.: 11x11 gaussian sigma 1.5, K1 0.01, K2 0.03) on [0, 1]."""
    x, r = (_to_unit(v) for v in _check_same(image, reference))
    return _ssim_255(x, r, 1.0)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: short name used in tables (``"SSIM"``).
        fn: the public function; called ``fn(fused)`` when ``uses_sources`` is false, otherwise
            ``fn(ir, vis, fused)``.
        uses_sources: whether the metric compares ``fused`` with the sources.
        higher_is_better: direction for tables (only MSE is lower-is-better).
        description: one line with the convention.
    """

    name: str
    fn: Callable[..., float]
    uses_sources: bool
    higher_is_better: bool
    description: str

    def __call__(self, ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
        return self.fn(ir, vis, fused) if self.uses_sources else self.fn(fused)


_REGISTRY: tuple[Metric, ...] = (
    Metric("SF", spatial_frequency, False, True, "spatial frequency, 0-255"),
    Metric("AG", average_gradient, False, True, "average gradient, 0-255"),
    Metric("MSE", fusion_mse, True, False, "(MSE(F,A)+MSE(F,B))/2 on [0,1]"),
    Metric("PSNR", fusion_psnr, True, True, "10 log10(1/MSE), dB"),
    Metric("MI", mutual_information, True, True, "MI(F,A)+MI(F,B), bits"),
    Metric("VIF", fusion_vif, True, True, "VIFp(A,F)+VIFp(B,F)"),
    Metric("CC", correlation_coefficient, True, True, "(corr(F,A)+corr(F,B))/2"),
    Metric("SSIM", fusion_ssim, True, True, "SSIM(F,A)+SSIM(F,B)"),
    Metric("EN", entropy, False, True, "entropy, bits"),
    Metric("SD", standard_deviation, False, True, "standard deviation, 0-255"),
    Metric("Qabf", qabf, True, True, "Xydeas-Petrovic edge preservation"),
    Metric("SCD", scd, True, True, "corr(F-B,A)+corr(F-A,B)"),
)
#: name -> :class:`Metric`, in table order (the paper's eight first).
METRICS: dict[str, Metric] = {m.name: m for m in _REGISTRY}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
#: the eight metrics reported in the DSTFuse paper
PAPER_METRICS: tuple[str, ...] = ("SF", "AG", "MSE", "PSNR", "MI", "VIF", "CC", "SSIM")


def compute_all(
    ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, names: tuple[str, ...] | list[str] | None = None
) -> dict[str, float]:
    """Evaluate the registered metrics (all, or ``names`` in that order) on one triple."""
    _check_triple(ir, vis, fused)
    selected = METRIC_NAMES if names is None else tuple(names)
    unknown = [n for n in selected if n not in METRICS]
    if unknown:
        raise InputShapeError(f"metrics {unknown}: unknown; expected names from {list(METRIC_NAMES)}")
    return {n: METRICS[n](ir, vis, fused) for n in selected}


# --------------------------------------------------------------------------------------------
# artefacts: grain in flat regions, halos at strong edges
# --------------------------------------------------------------------------------------------
#: window (px) of the box mean that smooths gradient magnitudes before the flat-region threshold
FLAT_WINDOW = 7
#: a pixel is flat when both sources' smoothed gradient is at or below this percentile of their own
FLAT_PERCENTILE = 25.0
#: sigma (px) of the gaussian whose residual ``x - blur(x)`` is the high-frequency (HF) part
HF_SIGMA = 1.0
#: strong edges: the top ``100 - HALO_EDGE_PERCENTILE`` % of ``max(|grad ir|, |grad vis|)``
HALO_EDGE_PERCENTILE = 98.0
#: half-width (px) of the band around strong edges and of the sources' local max/min window
HALO_RADIUS = 3
_HF_FLOOR = 1e-12  # level^2: below it the visible counts as having no HF energy (float rounding of a constant)


def _sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """``sqrt(gx^2 + gy^2)`` of the 3x3 Sobel derivatives (replicated border), as in Qabf."""
    gx = cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(x, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx * gx + gy * gy)


def _flat_mask_255(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = (FLAT_WINDOW, FLAT_WINDOW)
    g_a = cv2.blur(_sobel_magnitude(a), k, borderType=cv2.BORDER_REFLECT_101)
    g_b = cv2.blur(_sobel_magnitude(b), k, borderType=cv2.BORDER_REFLECT_101)
    return (g_a <= np.percentile(g_a, FLAT_PERCENTILE)) & (g_b <= np.percentile(g_b, FLAT_PERCENTILE))


def _high_pass(x: np.ndarray) -> np.ndarray:
    r = int(math.ceil(3 * HF_SIGMA))
    return x - cv2.GaussianBlur(x, (2 * r + 1, 2 * r + 1), HF_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def flat_region_mask(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` mask of regions that are flat in *both* sources.

    The Sobel gradient magnitude of each source (0-255, replicated border) is smoothed with a
    :data:`FLAT_WINDOW` x :data:`FLAT_WINDOW` box mean; a pixel is flat when both smoothed
    magnitudes are at or below their own :data:`FLAT_PERCENTILE`-th percentile (``numpy.percentile``).
    """
    a, b = (_to_255(x) for x in _check_same(ir, vis))
    return _flat_mask_255(a, b)


def flat_hf_energy_ratio(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Grain amplification: high-frequency energy of ``fused`` in flat regions / the visible's.

    ``HF(x) = x - G(x)``, ``G`` a gaussian blur with sigma :data:`HF_SIGMA` (7x7, reflected border),
    on 0-255. Over the mask ``M`` of :func:`flat_region_mask` (flat in IR *and* visible)::

        ratio = mean_M(HF(F)^2) / mean_M(HF(V)^2)

    1.0 exactly when ``fused`` is the visible image; > 1 when the fusion adds fine texture (noise,
    grain) where neither source has structure; < 1 when it smooths. ``nan`` when the visible image has
    no HF energy on the mask (below 1e-12 level^2, e.g. it is constant there). Pass the *sharp* visible image as ``vis``.
    """
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    mask = _flat_mask_255(a, b)
    den = float(np.mean(_high_pass(b)[mask] ** 2))
    if den <= _HF_FLOOR:
        return float("nan")
    return float(np.mean(_high_pass(f)[mask] ** 2)) / den


def _edge_band_255(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    edges = np.maximum(_sobel_magnitude(a), _sobel_magnitude(b))
    strong = (edges >= np.percentile(edges, HALO_EDGE_PERCENTILE)) & (edges > 0)
    k = np.ones((2 * HALO_RADIUS + 1,) * 2, np.uint8)
    return cv2.dilate(strong.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE).astype(bool)


def strong_edge_band(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` band of half-width :data:`HALO_RADIUS` px around the strongest edges.

    Strong edges are the pixels whose ``max(|Sobel ir|, |Sobel vis|)`` (0-255) is at or above its
    :data:`HALO_EDGE_PERCENTILE`-th percentile and non-zero; the band is their square dilation.
    """
    a, b = (_to_255(x) for x in _check_same(ir, vis))
    return _edge_band_255(a, b)


def halo_overshoot_map(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(overshoot, band)``: the per-pixel overshoot of :func:`halo_overshoot` (0-255, float64) and
    the :func:`strong_edge_band` mask it is averaged over."""
    a, b, f = (_to_255(x) for x in _check_triple(ir, vis, fused))
    k = np.ones((2 * HALO_RADIUS + 1,) * 2, np.uint8)
    hi = np.maximum(cv2.dilate(a, k, borderType=cv2.BORDER_REPLICATE), cv2.dilate(b, k, borderType=cv2.BORDER_REPLICATE))
    lo = np.minimum(cv2.erode(a, k, borderType=cv2.BORDER_REPLICATE), cv2.erode(b, k, borderType=cv2.BORDER_REPLICATE))
    return np.maximum(f - hi, 0.0) + np.maximum(lo - f, 0.0), _edge_band_255(a, b)


def halo_overshoot(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Halo score: mean overshoot of ``fused`` beyond both sources' local range near strong edges.

    With ``hi`` / ``lo`` the max / min of *both* sources over the ``(2r+1)^2`` window around each
    pixel (``r`` = :data:`HALO_RADIUS`), the overshoot is ``max(0, F - hi) + max(0, lo - F)`` in
    0-255 levels; the score is its mean over :func:`strong_edge_band`. Any per-pixel convex blend of
    the sources (average, max, ``F`` = a source) scores exactly 0; a bright or dark rim along an edge
    (ringing of a sharpening or pyramid method) scores > 0. A global brightness or contrast gain
    also counts where it leaves the sources' range. ``nan`` when neither source has an edge.
    """
    over, band = halo_overshoot_map(ir, vis, fused)
    return float(np.mean(over[band])) if band.any() else float("nan")


# --------------------------------------------------------------------------------------------
# temporal stability (video)
# --------------------------------------------------------------------------------------------
def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


class TemporalStability:
    """Streaming temporal-stability metric for fused video.

    For consecutive frames ``t-1, t`` it accumulates ``MAD(F)`` = mean |F_t - F_{t-1}| and the
    sources' ``MAD(S)`` = (mean |I_t - I_{t-1}| + mean |V_t - V_{t-1}|) / 2. :meth:`result` reports
    both means over time and ``ratio = mean MAD(F) / mean MAD(S)``: 1 means the fused video changes
    as much as its inputs, > 1 means added flicker. All three inputs must be on the same scale
    (all uint8 or all [0, 1] float); the MADs are reported on that scale.

    ``ratio`` also exceeds 1 for a method that adds no flicker at all but follows the *more dynamic*
    source (a fused video that is the IR video where a warm pedestrian walks changes more than the
    mean of the IR and visible changes). So :meth:`result` also reports ``explained_ratio`` =
    ``mean MAD(F) / mean(max(|I_t - I_{t-1}|, |V_t - V_{t-1}|))`` (pixel-wise max): any fixed per-pixel
    convex blend of the sources has ``|dF| <= max(|dI|, |dV|)`` at every pixel, so
    ``explained_ratio <= 1`` unless the method's own decisions change between frames or it invents
    change: a value above 1 is flicker of its own.
    """

    def __init__(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fused_sum = 0.0
        self._source_sum = 0.0
        self._max_sum = 0.0
        self._steps = 0

    def update(self, ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> None:
        """Add one frame (three same-shape arrays)."""
        if self._prev is not None and self._prev[0].shape == ir.shape:
            p_ir, p_vis, p_fused = self._prev
            self._fused_sum += _mean_abs_diff(fused, p_fused)
            self._source_sum += 0.5 * (_mean_abs_diff(ir, p_ir) + _mean_abs_diff(vis, p_vis))
            d_ir = np.abs(ir.astype(np.float64) - p_ir.astype(np.float64))
            d_vis = np.abs(vis.astype(np.float64) - p_vis.astype(np.float64))
            self._max_sum += float(np.mean(np.maximum(d_ir, d_vis)))
            self._steps += 1
        self._prev = (ir.copy(), vis.copy(), fused.copy())

    def result(self) -> dict[str, float]:
        """``{"steps", "fused_mad", "source_mad", "ratio", "explained_ratio"}`` (NaN where undefined)."""
        nan = float("nan")
        if self._steps == 0:
            return {"steps": 0, "fused_mad": nan, "source_mad": nan, "ratio": nan, "explained_ratio": nan}
        fused_mad = self._fused_sum / self._steps
        source_mad = self._source_sum / self._steps
        max_mad = self._max_sum / self._steps
        return {
            "steps": self._steps,
            "fused_mad": fused_mad,
            "source_mad": source_mad,
            "ratio": fused_mad / source_mad if source_mad > 0 else nan,
            "explained_ratio": fused_mad / max_mad if max_mad > 0 else nan,
        }
