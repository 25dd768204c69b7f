"""Fusion metrics on hand-made images with known answers, plus independent numpy cross-checks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dstfuse_stream import metrics as M
from dstfuse_stream.errors import InputShapeError


def _rand_u8(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ---------------------------------------------------------------- identical / constant images
def test_identical_images_give_the_ideal_values():
    a = _rand_u8((48, 48), 0)
    r = M.compute_all(a, a, a)
    assert r["SSIM"] == pytest.approx(2.0, abs=1e-12)
    assert r["MSE"] == 0.0
    assert r["PSNR"] == math.inf  # documented: not capped
    assert r["CC"] == pytest.approx(1.0, abs=1e-12)
    assert r["MI"] == pytest.approx(2.0 * r["EN"], abs=1e-9)
    assert r["VIF"] == pytest.approx(2.0, abs=1e-8)
    assert r["Qabf"] == pytest.approx(M.QABF_MAX, abs=1e-12)
    assert math.isnan(r["SCD"])  # F - B = 0 is constant: correlation undefined


def test_qabf_max_is_the_product_of_the_two_sigmoids_at_one():
    q_g = 0.9994 / (1 + math.exp(-15 * (1 - 0.5)))
    q_a = 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    assert M.QABF_MAX == pytest.approx(q_g * q_a, rel=1e-15)
    assert M.QABF_MAX == pytest.approx(0.974794, abs=1e-6)


def test_constant_image_has_zero_sf_ag_sd_en():
    c = np.full((20, 24), 137, dtype=np.uint8)
    assert M.spatial_frequency(c) == 0.0
    assert M.average_gradient(c) == 0.0
    assert M.standard_deviation(c) == 0.0
    assert M.entropy(c) == 0.0


def test_constant_fused_scores_zero_vif_near_zero_qabf_and_zero_mi():
    a, b = _rand_u8((48, 48), 1), _rand_u8((48, 48), 2)
    f = np.full((48, 48), 0.5)
    assert M.fusion_vif(a, b, f) == 0.0
    assert 0.0 <= M.qabf(a, b, f) < 1e-3
    assert M.mutual_information(a, b, f) == 0.0
    assert math.isnan(M.correlation_coefficient(a, b, f))


# ---------------------------------------------------------------- ramps, two levels, negative
@pytest.mark.parametrize("offset", [0, 40])
def test_shifted_horizontal_ramp_sf_and_ag_by_hand(offset):
    h, w, step = 12, 20, 3
    f = (offset + step * np.arange(w)[None, :] * np.ones((h, 1))).astype(np.uint8)
    # RF^2 = h (w-1) step^2 / (h w), CF = 0; AG: dx = step, dy = 0 everywhere
    assert M.spatial_frequency(f) == pytest.approx(step * math.sqrt((w - 1) / w), rel=1e-12)
    assert M.average_gradient(f) == pytest.approx(step / math.sqrt(2.0), rel=1e-12)
    # the same ramp as float in [0, 1] gives the same numbers (converted to 0-255)
    assert M.spatial_frequency(f.astype(np.float64) / 255.0) == pytest.approx(M.spatial_frequency(f), rel=1e-12)


def test_diagonal_ramp_sf_and_ag_by_hand():
    h, w = 10, 15
    i, j = np.mgrid[0:h, 0:w]
    f = (2 * i + 5 * j).astype(np.uint8)
    sf = math.sqrt((h * (w - 1) * 25 + (h - 1) * w * 4) / (h * w))
    assert M.spatial_frequency(f) == pytest.approx(sf, rel=1e-12)
    assert M.average_gradient(f) == pytest.approx(math.sqrt((25 + 4) / 2), rel=1e-12)


def test_two_level_image_has_exactly_one_bit_and_known_sd():
    f = np.zeros((8, 8), dtype=np.uint8)
    f[:, 4:] = 255
    assert M.entropy(f) == 1.0
    assert M.standard_deviation(f) == 127.5
    four = np.repeat(np.array([0, 85, 170, 255], dtype=np.uint8), 16).reshape(8, 8)
    assert M.entropy(four) == 2.0


def test_negative_image_correlation_minus_one_and_mi_preserved():
    a = _rand_u8((32, 32), 3)
    neg = 255 - a
    assert M.correlation_coefficient(a, a, neg) == pytest.approx(-1.0, abs=1e-12)
    # F - B = 255 - 2A is perfectly anti-correlated with A (both terms)
    assert M.scd(a, a, neg) == pytest.approx(-2.0, abs=1e-12)
    # a bijection of grey levels keeps all the information
    assert M.mutual_information(a, a, neg) == pytest.approx(2.0 * M.entropy(a), abs=1e-9)


def test_mse_and_psnr_hand_values_on_unit_scale():
    a = np.zeros((16, 16))
    b = np.ones((16, 16))
    f = np.full((16, 16), 0.5)
    assert M.fusion_mse(a, b, f) == 0.25
    assert M.fusion_psnr(a, b, f) == pytest.approx(10 * math.log10(4.0), rel=1e-12)
    # uint8 input is read as 0-255 and converted to [0, 1]
    assert M.fusion_mse((a * 255).astype(np.uint8), (b * 255).astype(np.uint8), f) == 0.25


def test_scd_matches_corrcoef_for_a_half_mix():
    a, b = _rand_u8((32, 32), 4), _rand_u8((32, 32), 5)
    f = (a.astype(np.float64) + b) / 510.0  # F = (A + B) / 2 on [0, 1]
    # F - B = (A - B)/2 and F - A = (B - A)/2
    expected = np.corrcoef((a - b.astype(float)).ravel(), a.ravel())[0, 1] + np.corrcoef(
        (b - a.astype(float)).ravel(), b.ravel()
    )[0, 1]
    assert M.scd(a, b, f) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- independent cross-checks
def test_cc_matches_numpy_corrcoef():
    a, b, f = _rand_u8((24, 30), 6), _rand_u8((24, 30), 7), _rand_u8((24, 30), 8)
    want = 0.5 * (np.corrcoef(f.ravel(), a.ravel())[0, 1] + np.corrcoef(f.ravel(), b.ravel())[0, 1])
    assert M.correlation_coefficient(a, b, f) == pytest.approx(want, abs=1e-12)


def _mi_histogram2d(x, y):
    joint, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[0, 256], [0, 256]])
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    h = lambda q: -np.sum(q[q > 0] * np.log2(q[q > 0]))  # noqa: E731
    return h(px) + h(py) - h(p)


def test_mi_matches_histogram2d_entropies_and_is_symmetric_in_sources():
    a, b = _rand_u8((32, 32), 9), _rand_u8((32, 32), 10)
    f = ((a.astype(np.uint16) + b) // 2).astype(np.uint8)
    want = _mi_histogram2d(f, a) + _mi_histogram2d(f, b)
    assert M.mutual_information(a, b, f) == pytest.approx(want, abs=1e-9)
    assert M.mutual_information(b, a, f) == pytest.approx(M.mutual_information(a, b, f), abs=1e-12)


def _ssim_naive(x, y, data_range):
    x, y = x.astype(np.float64), y.astype(np.float64)
    ax = np.arange(11) - 5
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = np.sum(g * px), np.sum(g * py)
            vx, vy = np.sum(g * (px - mx) ** 2), np.sum(g * (py - my) ** 2)
            cxy = np.sum(g * (px - mx) * (py - my))
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_a_naive_window_loop():
    a, b = _rand_u8((18, 20), 11), _rand_u8((18, 20), 12)
    f = ((a.astype(np.uint16) * 3 + b) // 4).astype(np.uint8)
    want = _ssim_naive(f, a, 255.0) + _ssim_naive(f, b, 255.0)
    assert M.fusion_ssim(a, b, f) == pytest.approx(want, abs=1e-9)
    # single-image SSIM on [0, 1] equals the 0-255 one (C1, C2 scale with L^2)
    assert M.ssim(f, a) == pytest.approx(_ssim_naive(f, a, 255.0), abs=1e-9)


def _qabf_naive(a, b, f):
    def sobel(x):
        p = np.pad(x.astype(np.float64), 1, mode="edge")
        gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
        gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
        g = np.hypot(gx, gy)
        with np.errstate(divide="ignore", invalid="ignore"):
            ang = np.where(gx == 0, np.pi / 2, np.arctan(gy / gx))
        return g, ang

    def q(gs, as_, gf, af):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(np.maximum(gs, gf) == 0, 1.0, np.minimum(gs, gf) / np.maximum(gs, gf))
        orient = np.abs(np.abs(as_ - af) - np.pi / 2) / (np.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * (orient - 0.8)))

    ga, aa = sobel(a)
    gb, ab = sobel(b)
    gf, af = sobel(f)
    return float(np.sum(q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb) / np.sum(ga + gb))


def test_qabf_matches_a_naive_implementation():
    a, b = _rand_u8((20, 22), 13), _rand_u8((20, 22), 14)
    f = np.maximum(a, b)
    assert M.qabf(a, b, f) == pytest.approx(_qabf_naive(a, b, f), abs=1e-12)


# ---------------------------------------------------------------- VIF
def _vifp_naive(ref, dist):
    """vifp_mscale.m transcribed with sliding windows (no OpenCV)."""

    def filt(x, n):
        ax = np.arange(n) - (n - 1) / 2
        w = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * (n / 5) ** 2))
        w /= w.sum()
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(x, (n, n)), w)

    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        if scale > 1:
            ref, dist = filt(ref, n)[::2, ::2], filt(dist, n)[::2, ::2]
        mu1, mu2 = filt(ref, n), filt(dist, n)
        s1 = np.maximum(filt(ref * ref, n) - mu1**2, 0)
        s2 = np.maximum(filt(dist * dist, n) - mu2**2, 0)
        s12 = filt(ref * dist, n) - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10], sv[s1 < 1e-10] = 0, s2[s1 < 1e-10]
        s1[s1 < 1e-10] = 0
        g[s2 < 1e-10], sv[s2 < 1e-10] = 0, 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g**2 * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    return num / den


def test_vif_matches_a_sliding_window_transcription():
    a, b = _rand_u8((50, 56), 60), _rand_u8((50, 56), 61)
    f = cv2.GaussianBlur(((a.astype(np.uint16) + b) // 2).astype(np.uint8), (3, 3), 0)
    assert M.vifp(a, f) == pytest.approx(_vifp_naive(a, f), rel=1e-9)
    assert M.fusion_vif(a, b, f) == pytest.approx(_vifp_naive(a, f) + _vifp_naive(b, f), rel=1e-9)


def test_vif_offset_invariant_and_rewards_contrast_gain():
    a = 0.3 + 0.4 * np.random.default_rng(15).random((48, 48))
    assert M.vifp(a, a + 0.1) == pytest.approx(1.0, abs=1e-8)
    assert M.vifp(a, 1.5 * a - 0.25) > 1.0
    noisy = np.clip(a + 0.1 * np.random.default_rng(16).standard_normal(a.shape), 0, 1)
    assert 0.0 < M.vifp(a, noisy) < 1.0
    b = _rand_u8((48, 48), 17)
    assert M.fusion_vif(a, b, noisy) == pytest.approx(M.vifp(a, noisy) + M.vifp(b, noisy), rel=1e-12)


def test_vif_and_ssim_reject_too_small_images():
    small = np.zeros((40, 60))
    with pytest.raises(InputShapeError, match="41x41"):
        M.vifp(small, small)
    with pytest.raises(InputShapeError, match="11x11"):
        M.ssim(np.zeros((10, 30)), np.zeros((10, 30)))


# ---------------------------------------------------------------- ranges and invariants
def test_ranges_on_random_triples():
    for seed in range(3):
        a, b, f = (_rand_u8((48, 48), 100 + 3 * seed + k) for k in range(3))
        r = M.compute_all(a, b, f)
        assert -2.0 <= r["SSIM"] <= 2.0
        assert -1.0 <= r["CC"] <= 1.0
        assert 0.0 <= r["Qabf"] <= M.QABF_MAX
        assert 0.0 <= r["MI"] <= 2 * r["EN"] + 1e-9
        assert 0.0 <= r["EN"] <= 8.0
        assert r["VIF"] >= 0.0
        assert r["PSNR"] == pytest.approx(10 * math.log10(1 / r["MSE"]), rel=1e-12)


def test_source_symmetric_metrics_do_not_depend_on_source_order():
    a, b = _rand_u8((48, 48), 20), _rand_u8((48, 48), 21)
    f = ((a.astype(np.uint16) + b) // 2).astype(np.uint8)
    r1, r2 = M.compute_all(a, b, f), M.compute_all(b, a, f)
    for name in M.METRIC_NAMES:
        assert r1[name] == pytest.approx(r2[name], rel=1e-12, abs=1e-12), name


def test_uint8_and_float_inputs_agree():
    a, b, f = (_rand_u8((48, 48), 30 + k) for k in range(3))
    r_u8 = M.compute_all(a, b, f)
    r_fl = M.compute_all(*(x.astype(np.float32) / np.float32(255.0) for x in (a, b, f)))
    for name in M.METRIC_NAMES:
        assert r_fl[name] == pytest.approx(r_u8[name], rel=1e-5, abs=1e-6), name


def test_single_image_psnr_and_ssim():
    ref = 0.2 + 0.5 * np.random.default_rng(40).random((16, 16))
    assert M.psnr(ref, ref) == math.inf
    assert M.psnr(ref + 0.1, ref) == pytest.approx(20.0, abs=1e-9)
    assert M.ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- registry and errors
def test_registry_and_compute_all():
    assert M.METRIC_NAMES == ("SF", "AG", "MSE", "PSNR", "MI", "VIF", "CC", "SSIM", "EN", "SD", "Qabf", "SCD")
    assert set(M.PAPER_METRICS) <= set(M.METRIC_NAMES)
    assert [n for n in M.METRIC_NAMES if not M.METRICS[n].higher_is_better] == ["MSE"]
    a, b, f = (_rand_u8((48, 48), 50 + k) for k in range(3))
    r = M.compute_all(a, b, f)
    assert list(r) == list(M.METRIC_NAMES)
    assert r["SF"] == M.spatial_frequency(f)
    assert r["MI"] == M.mutual_information(a, b, f)
    assert M.compute_all(a, b, f, names=["EN", "CC"]) == {"EN": r["EN"], "CC": r["CC"]}
    with pytest.raises(InputShapeError, match="unknown"):
        M.compute_all(a, b, f, names=["FOO"])


def test_input_errors_name_the_input():
    ok = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(InputShapeError, match=r"fused: expected a 2-D"):
        M.compute_all(ok, ok, np.zeros((16, 16, 3), dtype=np.uint8))
    with pytest.raises(InputShapeError, match=r"vis: expected the same shape as fused"):
        M.mutual_information(ok, np.zeros((16, 17), dtype=np.uint8), ok)
    with pytest.raises(InputShapeError, match=r"ir: expected float values in \[0, 1\]"):
        M.fusion_ssim(np.full((16, 16), 2.0), ok, ok)
    with pytest.raises(InputShapeError, match="dtype int32"):
        M.entropy(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(InputShapeError, match="numpy array"):
        M.spatial_frequency([[0, 1], [1, 0]])


# ---------------------------------------------------------------- temporal stability
def test_temporal_stability_hand_values():
    ts = M.TemporalStability()
    for t in range(4):
        ir = np.full((4, 4), 0.1 * t)
        vis = np.full((4, 4), 0.05 * t)
        fused = np.full((4, 4), 0.15 * t)
        ts.update(ir, vis, fused)
    r = ts.result()
    assert r["steps"] == 3
    assert r["fused_mad"] == pytest.approx(0.15)
    assert r["source_mad"] == pytest.approx(0.075)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["explained_ratio"] == pytest.approx(1.5)  # 0.15 / max(0.1, 0.05)


def test_temporal_explained_ratio_is_at_most_one_for_a_fixed_blend_and_flags_switching():
    rng = np.random.default_rng(7)
    irs, viss = rng.random((6, 8, 8)), rng.random((6, 8, 8))
    w = rng.random((8, 8))  # a fixed per-pixel blend: never more change than the sources'
    fixed, switching = M.TemporalStability(), M.TemporalStability()
    for t in range(6):
        fixed.update(irs[t], viss[t], w * irs[t] + (1 - w) * viss[t])
        switching.update(irs[t], viss[t], irs[t] if t % 2 else viss[t])  # flips source every frame
    assert fixed.result()["explained_ratio"] <= 1.0
    # following the more dynamic source is not flicker: the old ratio exceeds 1, the explained one does not
    follow = M.TemporalStability()
    for t in range(6):
        follow.update(np.full((4, 4), 0.2 * t), np.zeros((4, 4)), np.full((4, 4), 0.2 * t))
    assert follow.result()["ratio"] == pytest.approx(2.0) and follow.result()["explained_ratio"] == pytest.approx(1.0)
    assert switching.result()["explained_ratio"] > fixed.result()["explained_ratio"]


# ---------------------------------------------------------------- pearson, grain, halo
def test_pearson_matches_corrcoef_and_is_nan_for_a_constant():
    a, b = _rand_u8((20, 30), 60).astype(np.float64), _rand_u8((20, 30), 61).astype(np.float64)
    assert M.pearson(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    assert M.pearson(a, 3 * a + 7) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(M.pearson(a, np.full_like(a, 5.0)))
    with pytest.raises(InputShapeError, match="one shape"):
        M.pearson(a, b[:, :10])


def _textured_pair(seed=70, shape=(64, 64)):
    """IR: a bright square on flat grey; visible: texture on its left half, flat grey + faint noise right."""
    rng = np.random.default_rng(seed)
    ir = np.full(shape, 90, np.uint8)
    ir[20:40, 20:40] = 220
    vis = np.full(shape, 120.0)
    vis[:, : shape[1] // 2] += rng.normal(0, 30, (shape[0], shape[1] // 2))
    vis += rng.normal(0, 2, shape)
    return ir, np.clip(np.rint(vis), 0, 255).astype(np.uint8)


def test_flat_region_mask_is_flat_in_both_sources():
    ir, vis = _textured_pair()
    mask = M.flat_region_mask(ir, vis)
    assert mask.shape == ir.shape and mask.dtype == bool
    assert 0 < mask.mean() <= 0.25 + 1e-9  # at most the visible's own 25 %
    assert not mask[:, :26].any()  # the textured half (and the 7 px window around it) is never flat
    assert not mask[17:43, 17:43].any()  # nor the IR square's edges
    const = np.full((16, 16), 7, np.uint8)
    assert M.flat_region_mask(const, const).all()  # percentile 0, every gradient 0


def test_flat_hf_ratio_is_one_for_the_visible_above_one_with_noise_below_with_smoothing():
    ir, vis = _textured_pair()
    assert M.flat_hf_energy_ratio(ir, vis, vis) == 1.0
    noisy = np.clip(vis + np.random.default_rng(71).normal(0, 6, vis.shape), 0, 255).astype(np.uint8)
    assert M.flat_hf_energy_ratio(ir, vis, noisy) > 4.0  # 6 levels of noise over ~2 levels of grain
    smooth = cv2.GaussianBlur(vis, (7, 7), 2.0)
    assert M.flat_hf_energy_ratio(ir, vis, smooth) < 0.5
    # the sources decide the mask, the fused image only the numerator: IR as fused sees no visible grain
    assert M.flat_hf_energy_ratio(ir, vis, ir) < 0.05
    f = vis.astype(np.float32) / np.float32(255.0)
    assert M.flat_hf_energy_ratio(ir, vis, f) == pytest.approx(1.0, rel=1e-6)  # float input, same scale
    const = np.full((16, 16), 7, np.uint8)
    assert math.isnan(M.flat_hf_energy_ratio(const, const, _rand_u8((16, 16), 72)))


def _step(lo=50, hi=200, shape=(24, 32), col=16):
    img = np.full(shape, lo, np.uint8)
    img[:, col:] = hi
    return img


def test_strong_edge_band_around_a_step():
    step = _step()
    band = M.strong_edge_band(step, step)
    # Sobel responds on columns 15 and 16; the band adds HALO_RADIUS = 3 columns each side
    assert np.array_equal(np.flatnonzero(band.all(axis=0)), np.arange(12, 20))
    assert band.sum() == 24 * 8


def test_halo_overshoot_hand_values():
    step = _step()
    flat = np.full_like(step, 120)
    # any per-pixel blend of the sources stays inside their local range: exactly 0
    avg = ((step.astype(np.uint16) + flat) // 2).astype(np.uint8)
    assert M.halo_overshoot(step, flat, avg) == 0.0
    assert M.halo_overshoot(step, flat, np.maximum(step, flat)) == 0.0
    assert M.halo_overshoot(step, flat, step) == 0.0
    # a bright rim (+40 over 200) right of the edge and a dark rim (30 under 50) left of it, one column
    # each, inside a band of 8 columns: (40 + 30) / 8
    ringing = step.astype(np.int16)
    ringing[:, 16] += 40
    ringing[:, 15] -= 30
    assert M.halo_overshoot(step, step, ringing.astype(np.uint8)) == pytest.approx(70 / 8, abs=1e-12)
    const = np.full((16, 16), 9, np.uint8)
    assert math.isnan(M.halo_overshoot(const, const, const))
