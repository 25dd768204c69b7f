"""Pair listing (both layouts), gray reading, and the Y/CrCb colour path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dstfuse_stream.colour import float_to_uint8, merge_luma, split_luma
from dstfuse_stream.errors import InputShapeError, SourceError
from dstfuse_stream.imageio import list_pairs, read_gray, to_gray
from dstfuse_stream.visualize import side_by_side


def _write(path, value, shape=(6, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_paired_folders_match_by_name(tmp_path):
    for name, v in [("b.png", 20), ("a.png", 10), ("only_ir.png", 5)]:
        _write(tmp_path / "ir" / name, v)
    for name, v in [("a.png", 110), ("b.png", 120), ("only_vis.png", 7)]:
        _write(tmp_path / "vi" / name, v)
    (tmp_path / "vi" / "notes.txt").write_text("not an image")
    pairs = list_pairs(tmp_path)
    assert [(p.name, q.name) for p, q in pairs] == [("a.png", "a.png"), ("b.png", "b.png")]
    assert read_gray(pairs[1][0])[0, 0] == pytest.approx(20 / 255)


def test_llvip_layout_and_split(tmp_path):
    for split in ("train", "test"):
        _write(tmp_path / "infrared" / split / f"{split}1.jpg", 1)
        _write(tmp_path / "visible" / split / f"{split}1.jpg", 2)
    assert [p.name for p, _ in list_pairs(tmp_path)] == ["train1.jpg", "test1.jpg"]
    assert [p.name for p, _ in list_pairs(tmp_path, split="test")] == ["test1.jpg"]
    with pytest.raises(SourceError, match="split 'val' not found"):
        list_pairs(tmp_path, split="val")


def test_bad_roots(tmp_path):
    with pytest.raises(SourceError, match="expected sub-folders ir/ and vi/"):
        list_pairs(tmp_path)
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    with pytest.raises(SourceError, match="no image has the same name"):
        list_pairs(tmp_path)
    (tmp_path / "bad.png").write_text("x")
    with pytest.raises(SourceError, match="not a readable image"):
        read_gray(tmp_path / "bad.png")


def test_colour_roundtrip_and_gray_identity():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    y, crcb = split_luma(bgr)
    assert np.array_equal(y, to_gray(bgr))  # the model's input plane is the plane put back
    back = merge_luma(y, crcb)
    assert np.abs(back.astype(int) - bgr.astype(int)).max() <= 3  # YCrCb 8-bit quantisation
    gray = np.dstack([np.arange(63, dtype=np.uint8).reshape(9, 7)] * 3)
    gy, gcrcb = split_luma(gray)
    assert np.array_equal(merge_luma(gy, gcrcb), gray)  # gray visible: fused Y is shown exactly
    with pytest.raises(InputShapeError, match=r"visible image: expected a non-empty uint8 image \(H, W, 3\) BGR, got shape \(9, 7\)"):
        split_luma(bgr[..., 0])


def test_merge_luma_view_of_split_equals_generic_merge_and_keeps_input():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)  # wide enough for the SIMD paths
    _, crcb = split_luma(bgr)
    kept = crcb.copy()
    fused_y = rng.integers(0, 256, (40, 70), dtype=np.uint8)
    expected = cv2.cvtColor(cv2.merge([fused_y, np.ascontiguousarray(crcb)]), cv2.COLOR_YCrCb2BGR)
    assert np.array_equal(merge_luma(fused_y, crcb), expected)  # the view of split_luma's array (fast path)
    assert np.array_equal(merge_luma(fused_y, kept), expected)  # a standalone CrCb array (cv2.merge)
    assert np.array_equal(merge_luma(fused_y, crcb[:, :]), expected)  # a view of the view: still exact
    assert np.array_equal(crcb, kept)  # the prepared chroma is not overwritten
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    for part, y in ((ycrcb[2:, :, 1:], fused_y[2:]), (ycrcb[..., :2], fused_y)):  # not channels 1-2 of a whole array
        generic = cv2.cvtColor(cv2.merge([y, np.ascontiguousarray(part)]), cv2.COLOR_YCrCb2BGR)
        assert np.array_equal(merge_luma(y, part), generic)

def test_float_to_uint8_is_a_fixed_mapping():
    assert float_to_uint8(np.array([0.0, 0.5, 1.0, 1.2, -0.1])).tolist() == [0, 128, 255, 255, 0]
    dark = np.full((2, 2), 0.1)
    assert float_to_uint8(dark).max() == 26  # no per-frame stretching


def test_side_by_side_layout_does_not_touch_inputs():
    ir = np.zeros((10, 12), np.uint8)
    vis = np.full((10, 12, 3), 100, np.uint8)
    fused = np.full((10, 12), 1.0, np.float32)
    panel = side_by_side(ir, vis, fused)
    assert panel.shape == (10, 36, 3)
    assert (vis == 100).all()
    plain = side_by_side(ir, vis, fused, labels=False)
    assert (plain[:, :12] == 0).all() and (plain[:, 12:24] == 100).all() and (plain[:, 24:] == 255).all()
