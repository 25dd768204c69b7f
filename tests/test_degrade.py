"""Degradations: the one motion-blur kernel and low light."""

from __future__ import annotations

import numpy as np
import pytest

from dstfuse_stream.degrade import low_light, motion_blur, motion_blur_kernel
from dstfuse_stream.errors import ConfigError


def test_motion_blur_kernel_sums_to_one_and_blurs_along_its_direction():
    k = motion_blur_kernel(7, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(k[3], 1 / 7) and k.sum() - k[3].sum() == pytest.approx(0.0, abs=1e-6)  # one row
    assert motion_blur_kernel(1, 33.0).tolist() == [[1.0]]
    assert np.allclose(motion_blur_kernel(9, 90.0), motion_blur_kernel(9, 0.0).T, atol=1e-6)
    for angle in (17.0, 45.0, 120.0):
        assert motion_blur_kernel(9, angle).sum() == pytest.approx(1.0, abs=1e-6)
    img = np.zeros((16, 16), np.float32)
    img[:, 8:] = 1.0  # vertical edge: a horizontal blur spreads it, a vertical blur leaves it
    blurred = motion_blur(img, 7, 0.0)
    assert np.allclose(blurred[0, 4:11], [0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7], atol=1e-6)
    assert np.allclose(motion_blur(img, 7, 90.0), img, atol=1e-6)
    with pytest.raises(ConfigError):
        motion_blur_kernel(4, 0.0)


def test_low_light_scales_and_adds_seeded_noise():
    img = np.full((8, 8), 0.5, np.float32)
    assert np.allclose(low_light(img, 0.4, 0.0, np.random.default_rng(0)), 0.2)
    a = low_light(img, 0.5, 0.05, np.random.default_rng(3))
    b = low_light(img, 0.5, 0.05, np.random.default_rng(3))
    assert np.array_equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0
    assert abs(float(a.mean()) - 0.25) < 0.03 and float(a.std()) > 0.02
    with pytest.raises(ConfigError):
        low_light(img, 0.0, 0.0, np.random.default_rng(0))
