"""Homography files, estimation from point pairs, and the warp."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dstfuse_stream import cli, registration
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.registration import (
    check_homography,
    estimate_homography,
    load_homography,
    read_point_pairs,
    reprojection_errors,
    save_homography,
    warp_to,
)

H_TRUE = np.array([[1.02, 0.03, 12.5], [-0.02, 0.98, -7.25], [1e-4, -5e-5, 1.0]])


def project(h, pts):
    return cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(-1, 1, 2), h).reshape(-1, 2)


IR_PTS = np.array([[10, 10], [300, 15], [290, 230], [20, 220], [160, 120], [80, 200]], dtype=np.float64)


def test_estimate_recovers_a_known_homography():
    h, inliers = estimate_homography(IR_PTS, project(H_TRUE, IR_PTS), method="lsq")
    assert np.allclose(h, H_TRUE, rtol=1e-6, atol=1e-8)
    assert inliers.all()


def test_ransac_rejects_a_wrong_pair():
    vis = project(H_TRUE, IR_PTS)
    vis_bad = vis.copy()
    vis_bad[2] += (40.0, -30.0)
    extra_ir = np.array([[200, 60], [60, 100], [250, 180]], dtype=np.float64)
    ir_all = np.vstack([IR_PTS, extra_ir])
    vis_all = np.vstack([vis_bad, project(H_TRUE, extra_ir)])
    h, inliers = estimate_homography(ir_all, vis_all, method="ransac", ransac_threshold_px=1.0)
    assert not inliers[2] and inliers.sum() == len(ir_all) - 1
    assert reprojection_errors(h, ir_all[inliers], vis_all[inliers]).max() < 1e-3


def test_estimate_needs_four_pairs():
    with pytest.raises(ConfigError, match="at least 4"):
        estimate_homography(IR_PTS[:3], IR_PTS[:3])


@pytest.mark.parametrize("suffix", [".txt", ".npy", ".json"])
def test_save_load_roundtrip(tmp_path, suffix):
    path = save_homography(tmp_path / f"H{suffix}", H_TRUE * 3.0)  # scale is normalised away
    assert np.allclose(load_homography(path), H_TRUE, rtol=1e-10)


def test_load_json_variants_and_errors(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"H": H_TRUE.tolist()}))
    assert np.allclose(load_homography(tmp_path / "a.json"), H_TRUE)
    (tmp_path / "b.json").write_text(json.dumps(H_TRUE.tolist()))
    assert np.allclose(load_homography(tmp_path / "b.json"), H_TRUE)
    (tmp_path / "c.json").write_text(json.dumps({"matrix": 1}))
    with pytest.raises(ConfigError, match="'homography' or 'H'"):
        load_homography(tmp_path / "c.json")
    (tmp_path / "d.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ConfigError, match="3x3"):
        load_homography(tmp_path / "d.txt")
    (tmp_path / "e.txt").write_text("not numbers")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_homography(tmp_path / "e.txt")
    with pytest.raises(ConfigError, match="not found"):
        load_homography(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="singular"):
        check_homography(np.zeros((3, 3)))


def test_warp_integer_translation_is_exact():
    img = np.zeros((10, 12), dtype=np.uint8)
    img[4, 3] = 200
    h = np.array([[1.0, 0, 2], [0, 1.0, 1], [0, 0, 1.0]])
    out = warp_to(img, h, (12, 10))
    assert out[5, 5] == 200 and int(out.sum()) == 200


def test_read_point_pairs_with_header_and_comments(tmp_path):
    path = tmp_path / "pts.csv"
    path.write_text("ir_x,ir_y,vis_x,vis_y\n# corners\n1,2,3,4\n5, 6, 7, 8\n")
    ir, vis = read_point_pairs(path)
    assert ir.tolist() == [[1, 2], [5, 6]] and vis.tolist() == [[3, 4], [7, 8]]
    path.write_text("1,2,3\n")
    with pytest.raises(ConfigError, match="4 numbers"):
        read_point_pairs(path)


def _write_points(path, ir, vis):
    rows = ["ir_x,ir_y,vis_x,vis_y"] + [",".join(f"{v:.9f}" for v in (*a, *b)) for a, b in zip(ir, vis)]
    path.write_text("\n".join(rows) + "\n")


def test_module_cli_and_register_subcommand(tmp_path, capsys):
    pts = tmp_path / "pts.csv"
    _write_points(pts, IR_PTS, project(H_TRUE, IR_PTS))
    assert registration.main(["--points", str(pts), "--out", str(tmp_path / "H.txt")]) == 0
    assert np.allclose(load_homography(tmp_path / "H.txt"), H_TRUE, rtol=1e-5, atol=1e-7)
    assert cli.main(["register", "--points", str(pts), "--out", str(tmp_path / "H.json"), "--method", "lsq"]) == 0
    assert np.allclose(load_homography(tmp_path / "H.json"), H_TRUE, rtol=1e-5, atol=1e-7)
    assert "inlier pairs" in capsys.readouterr().out
    _write_points(pts, IR_PTS[:2], IR_PTS[:2])
    assert cli.main(["register", "--points", str(pts), "--out", str(tmp_path / "H2.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dstfuse-stream register: error:")
