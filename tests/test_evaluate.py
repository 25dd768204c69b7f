"""dstfuse-eval: helpers, the three modes on tiny hand-made folders, CLI errors."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest

from dstfuse_stream import evaluate as E
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.imageio import resize_max_side
from dstfuse_stream.metrics import METRIC_NAMES, compute_all, psnr, ssim


def _write_pairs(root, n, *, shape=(48, 64), seed=0, blur=False):
    rng = np.random.default_rng(seed)
    for sub in ("ir", "vi") + (("vi_blur",) if blur else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ir = rng.integers(0, 256, shape, dtype=np.uint8)
        vis = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:04d}.png"), vis)
        if blur:
            cv2.imwrite(str(root / "vi_blur" / f"{i:04d}.png"), cv2.blur(vis, (5, 1)))
    return root


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- helpers
def test_select_evenly_and_resize_max_side():
    assert E.select_evenly(range(10), 4) == [0, 3, 6, 9]
    assert E.select_evenly(range(10), None) == list(range(10))
    assert E.select_evenly(range(3), 5) == [0, 1, 2]
    assert E.select_evenly(range(10), 1) == [0]
    img = np.zeros((50, 100), dtype=np.float32)
    assert resize_max_side(img, 40).shape == (20, 40)
    assert resize_max_side(img, 200) is img  # never enlarges


def test_motion_kernels_are_exact_lines():
    k0 = E.MotionKernel(9, 0).array()
    assert k0.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k0[4], np.full(9, 1 / 9))
    assert np.count_nonzero(k0) == 9
    k90 = E.MotionKernel(9, 90).array()
    np.testing.assert_allclose(k90[:, 4], np.full(9, 1 / 9))
    k45 = E.MotionKernel(5, 45).array()  # the up-right diagonal, nothing off it
    assert np.count_nonzero(k45) == np.count_nonzero(np.fliplr(k45).diagonal()) == 5
    assert k45.sum() == pytest.approx(1.0)
    k30 = E.MotionKernel(7, 30).array()  # every tap within half a pixel of the 30-degree line
    ys, xs = np.nonzero(k30)
    assert np.all(np.abs((3 - ys) - (xs - 3) * np.tan(np.radians(30))) <= 0.5 + 1e-6 + 0.5 * np.tan(np.radians(30)))
    assert k30[3, 3] > 0 and k30[5, 0] > 0 and k30[1, 6] > 0
    assert len(E.motion_kernels()) == 9
    const = np.full((20, 20), 0.4, dtype=np.float32)
    np.testing.assert_allclose(E.motion_blur(const, E.MotionKernel(15, 45)), 102 / 255, atol=1e-7)


# ---------------------------------------------------------------- fusion mode
def test_fusion_eval_writes_csv_tables_plot_and_exact_values(tmp_path):
    data = _write_pairs(tmp_path / "toy", 3)
    out = tmp_path / "out"
    rc = E.main(["--pairs", str(data), "--methods", "average", "max", "--out", str(out), "--save-fused"])
    assert rc == 0
    rows = _read_csv(out / "metrics.csv")
    assert [(r["pair"], r["method"]) for r in rows] == [
        (f"{i:04d}.png", m) for i in range(3) for m in ("average", "max")
    ]
    # recompute pair 0001 / max by hand from the files
    ir = cv2.imread(str(data / "ir" / "0001.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(data / "vi" / "0001.png"), cv2.IMREAD_GRAYSCALE)
    want = compute_all(ir, vis, np.maximum(ir, vis))
    got = rows[3]
    for name in METRIC_NAMES:
        assert float(got[name]) == pytest.approx(want[name], rel=1e-9), name
    table = (out / "toy.md").read_text()
    assert "| average | 3 |" in table and "| max | 3 |" in table and "mean over 3 pairs" in table
    assert (out / "toy.png").stat().st_size > 1000
    assert (out / "fused" / "toy" / "max" / "0001.png").is_file()
    assert (out / "eval_config.json").is_file()

    # the saved fused images read back through --fused-dir give the same metrics
    out2 = tmp_path / "out2"
    rc = E.main(
        ["--pairs", str(data), "--methods", "max", "--fused-dir", f"saved={out / 'fused' / 'toy' / 'max'}",
         "--out", str(out2), "--no-plot"]
    )
    assert rc == 0
    rows2 = _read_csv(out2 / "metrics.csv")
    by = {(r["pair"], r["method"]): r for r in rows2}
    for i in range(3):
        for name in METRIC_NAMES:
            assert by[(f"{i:04d}.png", "saved")][name] == by[(f"{i:04d}.png", "max")][name]


def test_fusion_eval_limit_max_size_and_dstfuse_checkpoint(tmp_path, lite_model):
    data = _write_pairs(tmp_path / "toy", 5, shape=(90, 120))
    ckpt = save_checkpoint(tmp_path / "rand.pt", lite_model, epoch=0)
    summary = E.run_fusion_eval(
        [data], tmp_path / "out", methods=["dstfuse", "average"], weights=str(ckpt), limit=2, max_size=64, plot=False
    )
    rows = _read_csv(tmp_path / "out" / "metrics.csv")
    assert sorted({r["pair"] for r in rows}) == ["0000.png", "0004.png"]  # evenly spaced: first and last
    assert {(r["height"], r["width"]) for r in rows} == {("48", "64")}
    assert summary["toy"]["dstfuse"]["n"] == 2
    assert 0.0 < summary["toy"]["dstfuse"]["SSIM"] <= 2.0


def test_fusion_eval_skips_missing_fused_images(tmp_path):
    data = _write_pairs(tmp_path / "toy", 3)
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "0000.jpg"), np.zeros((48, 64), np.uint8))  # matched by stem
    summary = E.run_fusion_eval([data], tmp_path / "out", methods=["average"], fused_dirs={"other": other}, plot=False)
    assert summary["toy"]["other"]["n"] == 1
    assert summary["toy"]["average"]["n"] == 3
    assert summary["toy"]["other"]["SD"] == 0.0


# ---------------------------------------------------------------- deblur mode
def test_deblur_eval_rows_and_values(tmp_path, lite_model):
    data = _write_pairs(tmp_path / "seq", 2, blur=True)
    kernels = [E.MotionKernel(3, 0), E.MotionKernel(5, 90)]
    summary = E.run_deblur_eval([data], tmp_path / "out", model=lite_model, kernels=kernels)
    rows = _read_csv(tmp_path / "out" / "deblur.csv")
    assert [(r["pair"], r["input"]) for r in rows] == [
        (f"{i:04d}.png", x) for i in range(2) for x in ("L3/0deg", "L5/90deg", "real vi_blur")
    ]
    sharp = cv2.imread(str(data / "vi" / "0001.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    blurred = E.motion_blur(sharp, kernels[1])
    assert float(rows[4]["psnr_blurred"]) == pytest.approx(psnr(blurred, sharp), rel=1e-9)
    assert float(rows[4]["ssim_blurred"]) == pytest.approx(ssim(blurred, sharp), rel=1e-9)
    ir = cv2.imread(str(data / "ir" / "0001.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    _, stage2 = E._run_cst(lite_model, ir, blurred[None])
    assert float(rows[4]["psnr_cst"]) == pytest.approx(psnr(stage2[0], sharp), rel=1e-6)
    assert float(rows[4]["corr_cst_ir"]) == pytest.approx(np.corrcoef(stage2[0].ravel(), ir.ravel())[0, 1], abs=1e-6)
    real = cv2.imread(str(data / "vi_blur" / "0001.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    assert float(rows[5]["psnr_blurred"]) == pytest.approx(psnr(real, sharp), rel=1e-9)
    assert list(summary["seq"]) == ["L3", "L5", "synthetic", "real vi_blur"]
    assert summary["seq"]["synthetic"]["n"] == 4 and summary["seq"]["real vi_blur"]["n"] == 2
    report = (tmp_path / "out" / "deblur.md").read_text()
    assert "real vi_blur: CST stage2 vs blurred input" in report


# ---------------------------------------------------------------- temporal mode
def test_temporal_eval_ratio_is_one_for_linear_baselines_on_a_brightening_sequence(tmp_path):
    rng = np.random.default_rng(0)
    base_ir = 2 * rng.integers(0, 50, (16, 16))
    base_vis = 2 * rng.integers(0, 50, (16, 16))
    for sub in ("ir", "vi"):
        (tmp_path / "seq" / sub).mkdir(parents=True)
    for t in range(5):
        cv2.imwrite(str(tmp_path / "seq" / "ir" / f"{t:04d}.png"), (base_ir + 10 * t).astype(np.uint8))
        cv2.imwrite(str(tmp_path / "seq" / "vi" / f"{t:04d}.png"), (base_vis + 20 * t).astype(np.uint8))
    summary = E.run_temporal_eval([tmp_path / "seq"], tmp_path / "out", methods=["average"], limit=4)
    r = summary["seq"]["average"]
    assert r["frames"] == 4 and r["steps"] == 3
    assert r["source_mad"] == pytest.approx(15.0)  # (10 + 20) / 2 levels per frame
    assert r["fused_mad"] == pytest.approx(15.0)
    assert r["ratio"] == pytest.approx(1.0)
    assert "| average | 4 |" in (tmp_path / "out" / "temporal.md").read_text()


# ---------------------------------------------------------------- CLI errors
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    data = _write_pairs(tmp_path / "toy", 1)
    cases = [
        ["--pairs", str(tmp_path / "missing"), "--methods", "average"],
        ["--pairs", str(data), "--methods", "dstfuse", "--weights", str(tmp_path / "none.pt")],
        ["--pairs", str(data), "--methods", "average", "--fused-dir", "nodir"],
        ["--pairs", str(data), "--methods", "average", "--limit", "0"],
    ]
    for argv in cases:
        assert E.main([*argv, "--out", str(tmp_path / "out"), "--no-plot"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dstfuse-eval: error:") and "\n" not in err


def test_fusion_eval_on_real_pairs(shared_data, tmp_path):
    summary = E.run_fusion_eval(
        [shared_data / "tno"], tmp_path, methods=["average", "laplacian"], limit=2, max_size=96, plot=False
    )
    assert summary["tno"]["average"]["n"] == 2
    lap, avg = summary["tno"]["laplacian"], summary["tno"]["average"]
    assert lap["SF"] > avg["SF"] and lap["AG"] > avg["AG"]  # pyramid fusion keeps more detail
    assert math.isfinite(avg["PSNR"])
