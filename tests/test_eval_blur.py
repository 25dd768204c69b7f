"""dstfuse-eval blur and attention: kernels, scores against the sharp sources, CST gain, attention regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_helpers import StubNet, read_csv, read_gray, textured, write_pairs

from dstfuse_stream.baselines import create_baseline
from dstfuse_stream.colour import float_to_uint8
from dstfuse_stream.degrade import motion_blur
from dstfuse_stream.evaluation.attention_eval import half_blur_attention, run_attention_eval
from dstfuse_stream.evaluation.blur_eval import MotionKernel, blur_u8, motion_kernels, pair_kernels, run_blur_eval
from dstfuse_stream.evaluation.methods import DSTFuseMethod, MethodSpec
from dstfuse_stream.metrics import fusion_ssim, psnr, qabf


def test_motion_kernel_names_and_blur():
    k = MotionKernel(15, 45)
    assert (k.label, k.group, k.key) == ("L15/45deg", "L15", "L15_a45")
    assert k.array().shape == (15, 15) and k.array().sum() == pytest.approx(1.0)
    assert len(motion_kernels()) == 12  # 5, 9, 15, 21 px x 0, 45, 90 deg
    img = textured((40, 50), 3)
    np.testing.assert_array_equal(blur_u8(img, k), float_to_uint8(motion_blur(img / np.float32(255), 15, 45)))
    np.testing.assert_array_equal(blur_u8(np.full((20, 20), 102, np.uint8), k), 102)  # constants stay
    np.testing.assert_array_equal(blur_u8(img, MotionKernel(1, 0)), img)  # a 1-tap kernel is the identity


def test_pair_kernels_cycle_angles_one_per_length():
    ks = motion_kernels((9, 15), (0, 45, 90, 135))
    assert pair_kernels(ks, 5, cycle=False) == ks
    labels = [[k.label for k in pair_kernels(ks, i, cycle=True)] for i in range(4)]
    assert labels == [["L9/0deg", "L15/45deg"], ["L9/45deg", "L15/90deg"], ["L9/90deg", "L15/135deg"],
                      ["L9/135deg", "L15/0deg"]]


def test_blur_eval_scores_against_the_sharp_sources(tmp_path):
    data = write_pairs(tmp_path / "clip", 2, blur=True)
    ref = tmp_path / "ref" / "clip"
    for sub in ("blur", "L5_a90"):
        (ref / sub).mkdir(parents=True)
    import cv2

    cv2.imwrite(str(ref / "blur" / "0001.png"), read_gray(data / "vi" / "0001.png"))  # "fused" = the sharp visible
    cv2.imwrite(str(ref / "L5_a90" / "0000.png"), read_gray(data / "ir" / "0000.png"))
    kernels = [MotionKernel(3, 0), MotionKernel(5, 90)]
    spec = MethodSpec(["average"], {"ref": tmp_path / "ref"})
    res = run_blur_eval([data], tmp_path / "out", spec=spec, kernels=kernels, save_inputs=True)["clip"]
    rows = read_csv(tmp_path / "out" / "blur.csv")
    assert [(r["pair"], r["input"], r["method"]) for r in rows if r["pair"] == "0000.png"] == [
        ("0000.png", "sharp", "average"), ("0000.png", "L3/0deg", "average"),
        ("0000.png", "L5/90deg", "ref"), ("0000.png", "L5/90deg", "average"), ("0000.png", "real vi_blur", "average")]
    ir, sharp = read_gray(data / "ir" / "0001.png"), read_gray(data / "vi" / "0001.png")
    blurred = blur_u8(sharp, kernels[1])
    fused = float_to_uint8(create_baseline("average").fuse(ir, blurred))
    row = next(r for r in rows if (r["pair"], r["input"], r["method"]) == ("0001.png", "L5/90deg", "average"))
    assert float(row["qabf_sharp"]) == qabf(ir, sharp, fused)
    assert float(row["ssim_sharp"]) == fusion_ssim(ir, sharp, fused)
    # the folder method: real-blur outputs from ref/clip/blur, synthetic from ref/clip/L5_a90 only
    assert res["fusion"]["real vi_blur"]["ref"]["n"] == 1 and "ref" not in res["fusion"]["L3"]
    assert res["fusion"]["real vi_blur"]["ref"]["ssim_sharp"] == fusion_ssim(ir, sharp, sharp)
    assert res["fusion"]["L5"]["ref"]["n"] == 1
    assert list(res["fusion"]) == ["sharp (no blur)", "L3", "L5", "real vi_blur"]
    assert res["cst"] == {}  # no network, no CST table
    np.testing.assert_array_equal(read_gray(tmp_path / "out" / "inputs" / "clip" / "L5_a90" / "0001.png"), blurred)


def test_blur_eval_cst_gain_identity_cst_is_exactly_zero(tmp_path):
    data = write_pairs(tmp_path / "clip", 2, blur=True)
    spec = MethodSpec(["dstfuse"], model=StubNet("zero"))
    res = run_blur_eval([data], tmp_path / "out", spec=spec, kernels=[MotionKernel(5, 0)], include_sharp=False)["clip"]
    for group in ("L5", "real vi_blur"):
        r = res["cst"][group]
        assert r["n"] == 2 and r["gain_db"] == 0.0 and r["attention_mean"] == 0.0
        assert r["psnr_cst"] == r["psnr_blurred"] and r["corr_cst_sharp"] < 1.0
    real = res["cst"]["real vi_blur"]
    assert real["mean_blurred"] < real["mean_sharp"]  # the hand-made vi_blur is 10 levels darker
    report = (tmp_path / "out" / "blur.md").read_text()
    assert "| L5 | 2 |" in report and "+0.00" in report and "differ in tone" in report


def test_blur_eval_cst_gain_of_a_real_network_is_psnr_difference(tmp_path, lite_model):
    data = write_pairs(tmp_path / "clip", 1)
    k = MotionKernel(9, 45)
    res = run_blur_eval([data], tmp_path / "out", spec=MethodSpec(["dstfuse"], model=lite_model), kernels=[k],
                        include_sharp=False)
    ir, sharp = read_gray(data / "ir" / "0000.png"), read_gray(data / "vi" / "0000.png")
    blurred = blur_u8(sharp, k)
    out = DSTFuseMethod(lite_model).fuse(ir, blurred)
    want = psnr(float_to_uint8(out.deblurred), sharp) - psnr(blurred, sharp)
    assert res["clip"]["cst"]["L9"]["gain_db"] == pytest.approx(want, abs=1e-9)
    assert res["clip"]["cst"]["L9"]["attention_mean"] == pytest.approx(float(out.attention.mean()), rel=1e-6)


# ---------------------------------------------------------------- attention
def test_half_blur_attention_cancels_content():
    ir, sharp = textured((64, 64), 5), textured((64, 64), 6)
    b, s, att, vis = half_blur_attention(DSTFuseMethod(StubNet("const")), ir, sharp, MotionKernel(15, 0))
    assert b == s  # equal counts of one constant: exactly the same sums
    assert att.shape == (64, 64) and (vis[:, 32:] == sharp[:, 32:]).all() and (vis[:, :32] != sharp[:, :32]).any()
    b, s, *_ = half_blur_attention(DSTFuseMethod(StubNet("blur")), ir, sharp, MotionKernel(15, 0))
    assert b > 1.25 * s and b - s > 0.02  # a blur-aware attention is higher on the blurred halves


def test_attention_eval_report_and_heatmap(tmp_path):
    data = write_pairs(tmp_path / "clip", 3, blur=True)
    res = run_attention_eval([data], tmp_path / "out", spec=MethodSpec(model=StubNet("const")))["clip"]
    assert res["n"] == 3
    for key in ("sharp", "synthetic", "real vi_blur", "blurred_region", "sharp_region"):
        assert res[key] == pytest.approx(0.3, abs=1e-7)
    assert res["region_ratio"] == 1.0 and res["region_difference"] == 0.0
    assert (tmp_path / "out" / "attention_clip_0001.png").is_file()  # the middle pair
    zero = run_attention_eval([data], tmp_path / "out0", spec=MethodSpec(model=StubNet("zero")), limit=1)["clip"]
    assert zero["sharp"] == 0.0 and math.isnan(zero["region_ratio"]) and zero["region_difference"] == 0.0
    blur = run_attention_eval([data], tmp_path / "outb", spec=MethodSpec(model=StubNet("blur")), limit=2)["clip"]
    assert blur["synthetic"] > blur["sharp"] and blur["region_ratio"] > 1.25
    assert "| clip | 2 |" in (tmp_path / "outb" / "attention.md").read_text()
