"""Classic fusion baselines on hand-made inputs, behind the FusionBackend interface."""

from __future__ import annotations

import numpy as np
import pytest

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.baselines import (
    BASELINE_NAMES,
    GuidedFilterFusion,
    LaplacianPyramidFusion,
    collapse_laplacian_pyramid,
    create_baseline,
    guided_filter,
    laplacian_pyramid,
)
from dstfuse_stream.errors import BackendError, ConfigError, InputShapeError


def _rand(shape, seed, lo=0.0, hi=1.0):
    return (lo + (hi - lo) * np.random.default_rng(seed).random(shape)).astype(np.float32)


def test_names_and_interface():
    assert BASELINE_NAMES == ("average", "max", "laplacian", "gff")
    for name in BASELINE_NAMES:
        with create_baseline(name) as method:
            assert isinstance(method, FusionBackend)
            assert method.name == name
            assert method.device == "cpu"
            assert name in method.describe()
    with pytest.raises(BackendError, match="expected one of"):
        create_baseline("wavelet")


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_two_constants_fuse_to_their_mean_or_max(name):
    ir = np.full((24, 20), 0.2, dtype=np.float32)
    vis = np.full((24, 20), 0.6, dtype=np.float32)
    fused = create_baseline(name).fuse(ir, vis)
    assert fused.dtype == np.float32 and fused.shape == ir.shape
    np.testing.assert_allclose(fused, 0.6 if name == "max" else 0.4, atol=1e-6)


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_identical_inputs_return_the_image(name):
    img = _rand((32, 40), 0)
    np.testing.assert_allclose(create_baseline(name).fuse(img, img), img, atol=1e-5)


def test_average_and_max_exact_values():
    ir, vis = _rand((16, 16), 1), _rand((16, 16), 2)
    np.testing.assert_array_equal(create_baseline("average").fuse(ir, vis), (ir + vis) * np.float32(0.5))
    fused = create_baseline("max").fuse(ir, vis)
    np.testing.assert_array_equal(fused, np.maximum(ir, vis))
    brighter_ir = ir > vis
    np.testing.assert_array_equal(fused[brighter_ir], ir[brighter_ir])


def test_uint8_input_and_batch_layout():
    rng = np.random.default_rng(3)
    ir_u8 = rng.integers(0, 256, (2, 1, 24, 24), dtype=np.uint8)
    vis_u8 = rng.integers(0, 256, (2, 1, 24, 24), dtype=np.uint8)
    for name in BASELINE_NAMES:
        method = create_baseline(name)
        batch = method.fuse(ir_u8, vis_u8)
        assert batch.shape == (2, 1, 24, 24) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        single = method.fuse(ir_u8[1, 0].astype(np.float32) / np.float32(255), vis_u8[1, 0].astype(np.float32) / np.float32(255))
        np.testing.assert_allclose(batch[1, 0], single, atol=1e-6)
    with pytest.raises(InputShapeError, match="same shape"):
        create_baseline("average").fuse(ir_u8[0, 0], vis_u8[0, 0, :, :20])


def test_laplacian_pyramid_round_trip_and_level_cap():
    img = _rand((30, 44), 4)
    pyr = laplacian_pyramid(img, 3)
    assert [p.shape for p in pyr] == [(30, 44), (15, 22), (8, 11), (4, 6)]
    np.testing.assert_allclose(collapse_laplacian_pyramid(pyr), img, atol=1e-5)
    # 8x8 image: asking for 6 levels is capped so the base keeps >= 2 px per side
    small = _rand((8, 8), 5)
    np.testing.assert_allclose(LaplacianPyramidFusion(levels=6).fuse(small, small), small, atol=1e-5)
    with pytest.raises(ConfigError):
        LaplacianPyramidFusion(levels=0)


def test_laplacian_keeps_the_strong_detail_of_either_source():
    flat = np.full((32, 32), 0.5, dtype=np.float32)
    ir = flat.copy()
    ir[10:12, 10:12] = 1.0  # hot spot only in IR
    vis = flat.copy()
    vis[20:22, 20:22] = 0.0  # dark spot only in visible
    lp = create_baseline("laplacian").fuse(ir, vis)
    avg = create_baseline("average").fuse(ir, vis)
    assert lp[10:12, 10:12].mean() > avg[10:12, 10:12].mean() + 0.1
    assert lp[20:22, 20:22].mean() < avg[20:22, 20:22].mean() - 0.1
    assert abs(lp[0:4, 28:32].mean() - 0.5) < 0.01  # far from both spots: unchanged


def test_guided_filter_basic_properties():
    guide = _rand((20, 24), 6)
    const = np.full((20, 24), 0.7)
    np.testing.assert_allclose(guided_filter(guide, const, radius=3, eps=1e-3), const, atol=1e-12)
    # very large eps: a -> 0, so the output is the 5x5 box mean of the 5x5 box mean of src
    src = _rand((20, 24), 7)
    out = guided_filter(guide, src, radius=2, eps=1e9)
    inner = np.array([[src[i - 2 : i + 3, j - 2 : j + 3].mean() for j in range(10, 15)] for i in range(8, 13)])
    assert out.shape == src.shape
    assert out[10, 12] == pytest.approx(inner.mean(), abs=1e-6)
    # eps -> 0 on the guide itself reproduces the guide (edge-preserving identity)
    np.testing.assert_allclose(guided_filter(guide, guide, radius=2, eps=1e-12), guide, atol=1e-5)


def test_gff_takes_texture_from_the_textured_source():
    y, x = np.mgrid[0:48, 0:48]
    texture = (0.5 + 0.2 * np.sign(np.sin(x * np.pi / 3) * np.sin(y * np.pi / 3))).astype(np.float32)
    flat = np.full((48, 48), 0.5, dtype=np.float32)
    fused = GuidedFilterFusion().fuse(flat, texture)
    fd, td = fused - fused.mean(), texture - texture.mean()
    corr = float(np.sum(fd * td) / np.sqrt(np.sum(fd * fd) * np.sum(td * td)))
    assert corr > 0.95
    assert fused.std() > 0.8 * texture.std()  # the average would keep only half
    with pytest.raises(ConfigError):
        GuidedFilterFusion(base_eps=0.0)
