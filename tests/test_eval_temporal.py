"""dstfuse-eval temporal: frame folders, video pairs, stride, folder methods of another size or incomplete."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from synthetic import write_pair_folders, write_pair_videos

from dstfuse_stream.evaluation.data import read_video_pair
from dstfuse_stream.evaluation.methods import MethodSpec
from dstfuse_stream.evaluation.temporal_eval import run_temporal_eval

AVERAGE = MethodSpec(["average"])


def _brightening(root, n=5):
    rng = np.random.default_rng(0)
    base_ir, base_vis = 2 * rng.integers(0, 50, (48, 48)), 2 * rng.integers(0, 50, (48, 48))
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True)
    for t in range(n):
        cv2.imwrite(str(root / "ir" / f"{t:04d}.png"), (base_ir + 10 * t).astype(np.uint8))
        cv2.imwrite(str(root / "vi" / f"{t:04d}.png"), (base_vis + 20 * t).astype(np.uint8))
    return root


def test_temporal_ratio_is_one_for_averaging_a_brightening_sequence(tmp_path):
    seq = _brightening(tmp_path / "seq")
    r = run_temporal_eval([seq], tmp_path / "out", spec=AVERAGE, limit=4)["seq"]["average"]
    assert (r["frames"], r["steps"]) == (4, 3)
    assert r["source_mad"] == pytest.approx(15.0) and r["fused_mad"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert r["ratio"] == pytest.approx(1.0)
    r2 = run_temporal_eval([seq], tmp_path / "out2", spec=AVERAGE, stride=2)["seq"]["average"]
    assert (r2["frames"], r2["steps"]) == (3, 2) and r2["source_mad"] == pytest.approx(30.0)
    assert "every k-th frame, k = 2" in (tmp_path / "out2" / "temporal.md").read_text()


def test_temporal_folder_method_resized_and_missing_frames(tmp_path):
    seq = _brightening(tmp_path / "seq")
    half, holes = tmp_path / "half" / "seq", tmp_path / "holes" / "seq"
    half.mkdir(parents=True)
    holes.mkdir(parents=True)
    for t in range(5):
        ir = cv2.imread(str(seq / "ir" / f"{t:04d}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(half / f"{t:04d}.png"), cv2.resize(ir, (24, 24), interpolation=cv2.INTER_AREA))
        if t != 2:
            cv2.imwrite(str(holes / f"{t:04d}.png"), ir)
    spec = MethodSpec([], {"half": tmp_path / "half", "holes": tmp_path / "holes"})
    res = run_temporal_eval([seq], tmp_path / "out", spec=spec)
    assert res["seq"]["half"]["ratio"] == pytest.approx(10.0 / 15.0, rel=1e-3)  # IR only: 10 of the sources' 15
    assert math.isnan(res["seq"]["holes"]["ratio"])


def test_video_pair_reads_like_the_frame_folder(tmp_path):
    write_pair_folders(tmp_path / "frames", 6)
    (tmp_path / "video").mkdir()
    ir_video, vis_video = write_pair_videos(tmp_path / "video", 6)
    frames = list(read_video_pair(ir_video, vis_video, stride=2, limit=2))
    assert [i for i, _, _ in frames] == [0, 2]
    res = run_temporal_eval([tmp_path / "frames"], tmp_path / "out", videos=[(ir_video, vis_video)],
                            spec=MethodSpec(["max", "average"]))
    assert set(res) == {"frames", "video"}
    for m in ("max", "average"):  # lossless video, same luma: the same numbers
        for key in ("frames", "steps", "fused_mad", "source_mad", "ratio"):
            assert res["video"][m][key] == res["frames"][m][key]
        assert math.isnan(res["video"][m]["attention_mean"])  # baselines have no attention
    assert res["video"]["max"]["frames"] == 6


def test_detail_ratio_and_qabf_of_a_method_that_returns_the_textured_source(tmp_path):
    """IR textured, visible flat: a method returning the IR carries twice the sources' mean average
    gradient and keeps every edge there is (Qabf at its ceiling, 0.9748); averaging carries the mean."""
    seq, ir_only = tmp_path / "seq", tmp_path / "ir_only" / "seq"
    for folder in (seq / "ir", seq / "vi", ir_only):
        folder.mkdir(parents=True)
    x = np.arange(32, dtype=np.float64)
    for t in range(3):
        ir = (100 + 60 * np.sin((x[None, :] + 3 * t) / 3.0) * np.cos(x[:, None] / 4.0)).round().astype(np.uint8)
        cv2.imwrite(str(seq / "ir" / f"{t:04d}.png"), ir)
        cv2.imwrite(str(seq / "vi" / f"{t:04d}.png"), np.full((32, 32), 90 + 5 * t, np.uint8))
        cv2.imwrite(str(ir_only / f"{t:04d}.png"), ir)
    res = run_temporal_eval([seq], tmp_path / "out", spec=MethodSpec(["average"], {"ir_only": tmp_path / "ir_only"}))["seq"]
    assert res["ir_only"]["detail_ratio"] == pytest.approx(2.0)
    ceiling = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))  # Qabf of a perfectly kept edge
    assert res["ir_only"]["qabf"] == pytest.approx(ceiling, abs=1e-4)
    assert res["average"]["detail_ratio"] == pytest.approx(1.0, abs=0.02)  # (ir + flat) / 2: half the IR's gradients, rounded to 8 bits
    table = (tmp_path / "out" / "temporal.md").read_text()
    assert "| method | frames | MAD fused | MAD sources | ratio | explained | detail | Qabf |" in table
