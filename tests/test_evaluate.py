"""dstfuse-eval: data helpers, methods and folder layouts, tables and best-counts, fusion mode, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from eval_helpers import read_csv, read_gray, textured, write_pairs

from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.errors import ConfigError, StreamMismatchError
from dstfuse_stream.evaluation import cli
from dstfuse_stream.evaluation.data import select_evenly, select_stride
from dstfuse_stream.evaluation.fusion_eval import run_fusion_eval
from dstfuse_stream.evaluation.methods import BLUR, SHARP, FolderMethod, MethodSpec, PairKey, align_sizes, parse_fused_dirs
from dstfuse_stream.evaluation.tables import best_counts, fmt, write_json
from dstfuse_stream.metrics import METRIC_NAMES, compute_all, flat_hf_energy_ratio, halo_overshoot


# ---------------------------------------------------------------- data and tables
def test_select_evenly_and_stride():
    assert select_evenly(range(10), 4) == [0, 3, 6, 9]
    assert select_evenly(range(10), None) == list(range(10))
    assert select_evenly(range(3), 5) == [0, 1, 2]
    assert select_evenly(range(10), 1) == [0]
    assert select_stride(range(10), stride=3) == [0, 3, 6, 9]
    assert select_stride(range(10), stride=2, limit=3) == [0, 2, 4]
    with pytest.raises(ConfigError):
        select_stride(range(3), stride=0)


def test_best_counts_ties_direction_and_eligibility():
    table = {
        "a": {"SF": 10.0004, "MSE": 0.02, "CC": 0.5},
        "b": {"SF": 10.0001, "MSE": 0.01, "CC": float("nan")},  # SF ties a after rounding to 3 decimals
        "c": {"SF": 99.0, "MSE": 0.001, "CC": 0.9},  # best everywhere but not eligible (partial)
    }
    won = best_counts(table, ("SF", "MSE", "CC"), eligible=["a", "b"])
    assert won == {"a": ["SF", "CC"], "b": ["SF", "MSE"], "c": []}
    assert best_counts(table, ("SF", "MSE", "CC"))["c"] == ["SF", "MSE", "CC"]


def test_write_json_is_strict_and_fmt_spells_non_finite(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), np.float32(0.5)], "c": np.int64(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 0.5], "c": 3}
    assert (fmt(float("nan")), fmt(float("-inf")), fmt(0.12345), fmt(3)) == ("nan", "-inf", "0.123", "3")


# ---------------------------------------------------------------- methods
def test_folder_layouts_first_existing_wins(tmp_path):
    for sub in ("vifb", "clip/sharp", "clip/blur", "clip/L15_a0"):
        (tmp_path / sub).mkdir(parents=True)
    m = FolderMethod("x", tmp_path)
    assert m.folder_for("vifb", SHARP) == tmp_path / "vifb"
    assert m.folder_for("clip", SHARP) == tmp_path / "clip" / "sharp"
    assert m.folder_for("clip", BLUR) == tmp_path / "clip" / "blur"
    assert m.folder_for("clip", "L15_a0") == tmp_path / "clip" / "L15_a0"
    assert m.folder_for("other", SHARP) == tmp_path  # a flat folder of fused images
    assert m.folder_for("vifb", BLUR) is None  # no blur outputs: never the sharp ones
    assert m.folder_for("vifb", "L9_a0") is None
    cv2.imwrite(str(tmp_path / "vifb" / "a.JPG"), np.full((8, 8), 9, np.uint8))
    res = m.fuse(None, None, PairKey("vifb", "a.png"))  # matched by stem, any suffix case
    assert res.fused.shape == (8, 8) and res.fused[0, 0] == 9
    assert m.fuse(None, None, PairKey("vifb", "b.png")) is None and m.missing == [PairKey("vifb", "b.png")]


def test_align_sizes_shrinks_the_larger_side_and_rejects_other_aspects():
    src = textured((276, 768), 1)
    ref = np.zeros((230, 640), np.uint8)  # SeAFusion's carShadow
    f, (s,), note = align_sizes(ref, src)
    assert f is ref and s.shape == (230, 640) and note == "sources 768x276 -> 640x230"
    np.testing.assert_array_equal(s, cv2.resize(src, (640, 230), interpolation=cv2.INTER_AREA))
    f, (s,), note = align_sizes(src, ref)
    assert f.shape == (230, 640) and s is ref and note == "fused 768x276 -> 640x230"
    f, (s,), note = align_sizes(ref, ref)
    assert note is None
    with pytest.raises(StreamMismatchError, match="aspect"):
        align_sizes(np.zeros((240, 640), np.uint8), src)


def test_parse_fused_dirs(tmp_path):
    assert parse_fused_dirs([f"mine={tmp_path}"]) == {"mine": tmp_path}
    for bad in ("mine", f"gff={tmp_path}", "x=/no/such/dir"):
        with pytest.raises(Exception, match="--fused-dir"):
            parse_fused_dirs([bad])


# ---------------------------------------------------------------- fusion mode
def test_fusion_eval_exact_values_best_counts_and_artefacts(tmp_path):
    data = write_pairs(tmp_path / "toy", 3)
    out = tmp_path / "out"
    assert cli.main(["fusion", "--pairs", str(data), "--methods", "average", "max", "--out", str(out),
                     "--save-fused", "--halo-crops", "1"]) == 0
    rows = read_csv(out / "metrics.csv")
    assert [(r["pair"], r["method"]) for r in rows] == [(f"{i:04d}.png", m) for i in range(3) for m in ("average", "max")]
    ir, vis = read_gray(data / "ir" / "0001.png"), read_gray(data / "vi" / "0001.png")
    want = compute_all(ir, vis, np.maximum(ir, vis))
    for name in METRIC_NAMES:
        assert float(rows[3][name]) == want[name], name
    assert float(rows[3]["halo"]) == 0.0  # max never leaves the sources' range
    assert float(rows[3]["flat_hf_ratio"]) == flat_hf_energy_ratio(ir, vis, np.maximum(ir, vis))
    assert rows[3]["attention_mean"] == "nan"
    report = (out / "toy.md").read_text()
    assert "| average | 3 |" in report and "#### Best of 8 (VIF, Qabf, MI, SF, AG, CC, EN, SSIM)" in report
    # best-count column = number of the eight metrics where the method's mean is the larger
    means = {m: {k: np.mean([float(r[k]) for r in rows if r["method"] == m]) for k in METRIC_NAMES} for m in ("average", "max")}
    wins = {m: sum(means[m][k] > means[o][k] for k in ("VIF", "Qabf", "MI", "SF", "AG", "CC", "EN", "SSIM"))
            for m, o in (("average", "max"), ("max", "average"))}
    assert wins["average"] + wins["max"] == 8
    best_table = report.split("#### Best of 8")[1]
    for m in ("average", "max"):
        line = next(x for x in best_table.splitlines() if x.startswith(f"| {m} |"))
        assert line.split(" | ")[10] == str(wins[m])
    assert (out / "toy.png").stat().st_size > 1000
    assert (out / "halo_toy_0000.png").is_file()
    assert (out / "fused" / "toy" / "max" / "0001.png").is_file()
    # the saved fused images, read back as a (flat) folder method, score exactly the same
    out2 = tmp_path / "out2"
    assert cli.main(["fusion", "--pairs", str(data), "--methods", "max", "--fused-dir",
                     f"saved={out / 'fused' / 'toy' / 'max'}", "--out", str(out2), "--no-plot"]) == 0
    by = {(r["pair"], r["method"]): r for r in read_csv(out2 / "metrics.csv")}
    for i in range(3):
        for name in (*METRIC_NAMES, "flat_hf_ratio", "halo"):
            assert by[(f"{i:04d}.png", "saved")][name] == by[(f"{i:04d}.png", "max")][name]


def test_fusion_eval_folder_method_nested_layout_and_resized_reference(tmp_path):
    data = write_pairs(tmp_path / "toy", 3, shape=(96, 128))
    ref = tmp_path / "ref" / "toy"
    ref.mkdir(parents=True)
    ir0, vis0 = read_gray(data / "ir" / "0000.png"), read_gray(data / "vi" / "0000.png")
    half = cv2.resize(np.maximum(ir0, vis0), (64, 48), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(ref / "0000.jpg"), half)  # a reference at half size, as a lossy JPEG: matched by stem
    cv2.imwrite(str(ref / "0002.png"), np.maximum(read_gray(data / "ir" / "0002.png"), read_gray(data / "vi" / "0002.png")))
    spec = MethodSpec(["average"], {"ref": tmp_path / "ref"})
    res = run_fusion_eval([data], tmp_path / "out", spec=spec, plot=False)
    table = res["toy"]["table"]
    assert table["ref"]["n"] == 2 and table["average"]["n"] == 3
    assert res["toy"]["eligible"] == ["average"]  # partial methods are not ranked
    rows = {(r["pair"], r["method"]): r for r in read_csv(tmp_path / "out" / "metrics.csv")}
    assert rows[("0000.png", "ref")]["note"] == "sources 128x96 -> 64x48"
    small = [cv2.resize(x, (64, 48), interpolation=cv2.INTER_AREA) for x in (ir0, vis0)]
    fused = read_gray(ref / "0000.jpg")
    assert float(rows[("0000.png", "ref")]["SSIM"]) == compute_all(*small, fused)["SSIM"]
    assert float(rows[("0000.png", "ref")]["halo"]) == halo_overshoot(*small, fused)
    report = (tmp_path / "out" / "toy.md").read_text()
    assert "0000 (sources 128x96 -> 64x48)" in report and "no fused image for 1 pair(s) (0001.png); not counted" in report
    assert "n/a (partial)" in report


def test_fusion_eval_limit_max_size_and_dstfuse_checkpoint(tmp_path, lite_model):
    data = write_pairs(tmp_path / "toy", 5, shape=(90, 120))
    ckpt = save_checkpoint(tmp_path / "rand.pt", lite_model, epoch=0)
    spec = MethodSpec(["dstfuse", "average"], weights=str(ckpt))
    res = run_fusion_eval([data], tmp_path / "out", spec=spec, limit=2, max_size=64, plot=False)
    rows = read_csv(tmp_path / "out" / "metrics.csv")
    assert sorted({r["pair"] for r in rows}) == ["0000.png", "0004.png"]
    assert {(r["height"], r["width"]) for r in rows} == {("48", "64")}
    dst = res["toy"]["table"]["dstfuse"]
    assert dst["n"] == 2 and 0.0 < dst["attention_mean"] < 1.0 and 0.0 < dst["SSIM"] <= 2.0


# ---------------------------------------------------------------- CLI
def test_old_flag_forms_still_select_the_mode():
    assert cli._normalise_argv(["--pairs", "d"]) == ["fusion", "--pairs", "d"]
    assert cli._normalise_argv(["--deblur", "--pairs", "d"]) == ["blur", "--pairs", "d"]
    assert cli._normalise_argv(["--pairs", "d", "--temporal"]) == ["temporal", "--pairs", "d"]
    assert cli._normalise_argv(["scorecard", "--out", "o"]) == ["scorecard", "--out", "o"]


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    data = write_pairs(tmp_path / "toy", 1)
    out = ["--out", str(tmp_path / "out")]
    cases = [
        ["fusion", "--pairs", str(tmp_path / "missing"), "--methods", "average", "--no-plot"],
        ["fusion", "--pairs", str(data), "--methods", "dstfuse", "--weights", str(tmp_path / "none.pt")],
        ["fusion", "--pairs", str(data), "--methods", "average", "--fused-dir", "nodir"],
        ["fusion", "--pairs", str(data), "--methods", "average", "--limit", "0"],
        ["blur", "--pairs", str(data), "--methods", "average", "--threads", "0"],
        ["blur", "--pairs", str(data), "--methods", "average", "--kernel-lengths", "4"],
        ["temporal", "--methods", "average"],
        ["fusion", "--pairs", str(data), "--methods", "average", "--best-of", "FOO"],
        ["scorecard", "--data", str(tmp_path / "nodata")],
    ]
    for argv in cases:
        assert cli.main([*argv, *out]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("dstfuse-eval: error:") and "\n" not in err, argv


def test_numpy_only_modules_do_not_import_torch():
    """metrics, baselines and the evaluation package import torch only when the network runs."""
    code = (
        "import sys, types, pathlib, importlib.util\n"
        "spec = importlib.util.find_spec('dstfuse_stream')\n"
        "pkg = types.ModuleType('dstfuse_stream'); pkg.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['dstfuse_stream'] = pkg  # skip the package __init__ (not this module's concern)\n"
        "import dstfuse_stream.metrics, dstfuse_stream.baselines, dstfuse_stream.evaluation.cli\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert res.stdout.strip() == "False"


# ---------------------------------------------------------------- real data (skipped without ../shared/data)
def test_seafusion_carshadow_is_scored_at_its_reference_size(shared_data, tmp_path):
    pairs = tmp_path / "vifb"
    for sub in ("ir", "vi"):
        (pairs / sub).mkdir(parents=True)
        os.symlink(shared_data / "vifb" / sub / "carShadow.jpg", pairs / sub / "carShadow.jpg")
    ref = shared_data / "reference" / "seafusion"
    res = run_fusion_eval([pairs], tmp_path / "out", spec=MethodSpec(["average"], {"seafusion": ref}), plot=False)
    assert res["vifb"]["table"]["seafusion"]["n"] == 1
    assert res["vifb"]["notes"][0].startswith("seafusion: scored at its own size") and "768x276 -> 640x230" in res["vifb"]["notes"][0]
    row = [r for r in read_csv(tmp_path / "out" / "metrics.csv") if r["method"] == "seafusion"][0]
    assert (row["width"], row["height"]) == ("640", "230")
    assert math.isfinite(float(row["Qabf"])) and 0.3 < float(row["Qabf"]) < 0.9


def test_halo_crops_centre_on_the_overshoot_then_on_strong_edges():
    from dstfuse_stream.evaluation.figures import halo_crop_centres, halo_crop_panel

    ir = np.full((120, 160), 60, np.uint8)
    ir[:, 80:] = 180  # one vertical edge at x = 80
    vis = ir.copy()
    fused = ir.astype(np.int16)
    fused[90:100, 80] += 50  # a bright rim on the edge, rows 90-99 only
    fused = fused.astype(np.uint8)
    (y, x), *_ = halo_crop_centres(ir, vis, fused, 2, crop=24)
    assert 88 <= y <= 101 and abs(x - 80) <= 4
    assert len(halo_crop_centres(ir, vis, ir, 2, crop=24)) == 2  # no overshoot: strongest edges instead
    panel = halo_crop_panel(ir, vis, {"ringing": fused, "plain": ir}, count=2, crop=24)
    assert panel.shape[1] == 4 * 48 + 3 * 2 and panel.ndim == 3  # IR, visible, 2 methods; 2x enlarged


def test_network_method_runs_at_the_requested_work_scale(tmp_path):
    """``--work-scale 0.5`` scores what ``Fuser()`` runs: the model's half-scale path, not full scale."""
    import torch

    from dstfuse_stream import DSTFuse, get_config
    from dstfuse_stream.evaluation.methods import DSTFuseMethod

    torch.manual_seed(0)
    model = DSTFuse(get_config("stream")).eval()
    with torch.no_grad():
        for p in model.parameters():  # the blend head starts at zero: give the networks something to decide
            p.add_(0.1 * torch.randn_like(p))
    weights = save_checkpoint(tmp_path / "s.pt", model, epoch=0)
    ir, vis = textured((48, 64), 1), textured((48, 64), 2)
    full = DSTFuseMethod(weights=str(weights)).fuse(ir, vis).fused
    half = MethodSpec(("dstfuse",), weights=str(weights), work_scale=0.5).network().fuse(ir, vis).fused
    with torch.inference_mode():
        x = [torch.from_numpy(a.astype(np.float32) / 255.0)[None, None] for a in (ir, vis)]
        expected = model.set_work_scale(0.5)(*x)[0, 0].numpy()
    np.testing.assert_allclose(half.astype(np.float32) / 255.0, expected, atol=1 / 255 + 1e-6)
    assert np.abs(half.astype(int) - full.astype(int)).max() > 0
    DSTFuseMethod(model, work_scale=0.25)
    assert model.work_scale == 0.5  # the model passed in keeps its own scale
    with pytest.raises(ConfigError):
        DSTFuseMethod(DSTFuse(get_config("lite")), work_scale=0.5)
