"""Geometry: the one WxH parser, max-side fitting, processing size, IR onto the visible grid."""

from __future__ import annotations

import numpy as np
import pytest

from dstfuse_stream.errors import ConfigError
from dstfuse_stream.geometry import align_ir, fit_max_side_wh, parse_size_wh, processing_size_wh, resize_to
from dstfuse_stream.imageio import resize_max_side
from dstfuse_stream.registration import warp_to


def test_parse_size_wh_is_width_first():
    assert parse_size_wh("640x480") == (640, 480)
    assert parse_size_wh(" 32X16 ") == (32, 16)
    for bad in ("640", "640x", "ax4", "0x4", "4x-1", "1x2x3"):
        with pytest.raises(ConfigError, match="WIDTHxHEIGHT|positive"):
            parse_size_wh(bad)


def test_fit_max_side_keeps_aspect_and_never_enlarges():
    assert fit_max_side_wh((640, 480), 320) == (320, 240)
    assert fit_max_side_wh((480, 640), 320) == (240, 320)
    assert fit_max_side_wh((100, 50), 1000) == (100, 50)
    assert fit_max_side_wh((100, 50), None) == (100, 50)
    assert fit_max_side_wh((641, 481), 101, multiple=2) == (100, 76)
    assert fit_max_side_wh((1000, 3), 10) == (10, 1)  # a side never reaches 0
    img = np.zeros((480, 640, 3), np.uint8)
    assert resize_max_side(img, 320).shape == (240, 320, 3)
    assert resize_max_side(img, 1000) is img


def test_processing_size():
    assert processing_size_wh((640, 480), max_size=320) == (320, 240)
    assert processing_size_wh((640, 480), max_size=1000) == (640, 480)
    assert processing_size_wh((641, 481), max_size=101) == (100, 76)
    assert processing_size_wh((640, 480), resize_wh=(99, 51), max_size=10) == (99, 51)


def test_ir_is_resized_to_the_visible_size():
    ir = np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))
    out = align_ir(ir, (80, 60))
    assert out.shape == (60, 80)
    assert np.array_equal(out, resize_to(ir, (80, 60)))


def _blob(size_wh, centre_xy, sigma=3.0):
    w, h = size_wh
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2) / (2 * sigma**2))
    return np.rint(g * 250).astype(np.uint8)


def _centroid(img):
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    w = img.astype(np.float64)
    return float((x * w).sum() / w.sum()), float((y * w).sum() / w.sum())


def test_homography_warp_folds_the_processing_resize_exactly():
    ir = _blob((120, 90), (40.0, 30.0))
    h = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 10.0], [0.0, 0.0, 1.0]])  # IR (x, y) -> visible (x+20, y+10)
    full = align_ir(ir, (160, 120), homography=h)
    assert _centroid(full) == pytest.approx((60.0, 40.0), abs=0.02)
    half = align_ir(ir, (160, 120), size_wh=(80, 60), homography=h)
    # pixel-centre mapping of a 2x downscale: x' = (x + 0.5) / 2 - 0.5
    assert _centroid(half) == pytest.approx((29.75, 19.75), abs=0.05)
    assert np.array_equal(full, warp_to(ir, h, (160, 120)))
