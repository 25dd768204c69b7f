"""dstfuse-eval scorecard on a hand-made data root: every criterion present, strict JSON, deterministic,
robust to a network whose CST is the identity and whose attention is 0."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from eval_helpers import StubNet, read_gray, write_pairs

from dstfuse_stream.evaluation import cli
from dstfuse_stream.evaluation.methods import MethodSpec
from dstfuse_stream.evaluation.scorecard import CLIPS, run_scorecard


@pytest.fixture()
def data_root(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "vifb", 3, seed=100, name="p{}.jpg")
    for i, clip in enumerate(CLIPS):
        write_pairs(root / "sequences" / clip, 4, seed=10 * i, blur=True)
    ref = root / "reference" / "seafusion"
    (ref / "vifb").mkdir(parents=True)
    for p in sorted((root / "vifb" / "ir").iterdir()):
        fused = np.maximum(read_gray(p), read_gray(root / "vifb" / "vi" / p.name))
        cv2.imwrite(str(ref / "vifb" / f"{p.stem}.png"), fused)
    for clip in CLIPS:
        for cond, vis_dir in (("sharp", "vi"), ("blur", "vi_blur")):
            (ref / clip / cond).mkdir(parents=True)
            for p in sorted((root / "sequences" / clip / "ir").iterdir()):
                fused = np.maximum(read_gray(p), read_gray(root / "sequences" / clip / vis_dir / p.name))
                cv2.imwrite(str(ref / clip / cond / p.name), fused)
    return root


def _rows(result):
    return {r["name"]: r for r in result["rows"]}


def test_scorecard_identity_cst_and_blur_aware_attention(data_root, tmp_path):
    result = run_scorecard(tmp_path / "sc", data_root=data_root, spec=MethodSpec(model=StubNet("blur")))
    rows = _rows(result)
    assert result["criteria"] == sum(r["kind"] == "criterion" for r in result["rows"]) == 17
    gains = [r for n, r in rows.items() if n.startswith("CST deblur gain,")]
    assert len(gains) == 5 and all(r["value"] == 0.0 and r["pass"] is False for r in gains)  # identity CST
    regions = rows["attention on blurred / sharp regions (half-blurred clip frames)"]
    assert regions["pass"] is True and regions["value"] > 1.25
    assert rows["vifb: best of 8 (VIF, Qabf, MI, SF, AG, CC, EN, SSIM)"]["detail"].startswith("dstfuse wins")
    assert result["all_pass"] is False and result["passed"] < result["criteria"]
    assert result["reports"]["temporal_video"] == {}  # no video under this data root: left out
    # strict JSON on disk, the Markdown verdict, the figures
    on_disk = json.loads((tmp_path / "sc" / "scorecard.json").read_text())
    assert on_disk["criteria"] == 17 and on_disk["sha256"] is None
    md = (tmp_path / "sc" / "scorecard.md").read_text()
    assert md.startswith("## Scorecard: FAIL") and "| criterion | CST deblur gain, vifb L15 (dB) | 0 | > 0 | FAIL |" in md
    assert len(list((tmp_path / "sc" / "fusion").glob("halo_vifb_*.png"))) == 3
    assert len(list((tmp_path / "sc" / "attention").glob("attention_*.png"))) == 3
    # deterministic: a second run gives the same rows
    again = run_scorecard(tmp_path / "sc2", data_root=data_root, spec=MethodSpec(model=StubNet("blur")))
    assert again["rows"] == result["rows"]


def test_scorecard_zero_attention_fails_cleanly_and_cli_runs_a_checkpoint(data_root, tmp_path, lite_model):
    rows = _rows(run_scorecard(tmp_path / "sc", data_root=data_root, spec=MethodSpec(model=StubNet("zero"))))
    att = rows["mapping attention mean on blurred frames (lowest of the three)"]
    assert att["value"] == 0.0 and att["pass"] is False
    regions = rows["attention on blurred / sharp regions (half-blurred clip frames)"]
    assert regions["pass"] is False and np.isnan(regions["value"])
    from dstfuse_stream.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "rand.pt", lite_model, epoch=0)
    assert cli.main(["scorecard", "--weights", str(ckpt), "--data", str(data_root), "--out", str(tmp_path / "cli")]) == 0
    result = json.loads((tmp_path / "cli" / "scorecard.json").read_text())
    assert result["weights"] == str(ckpt) and len(result["sha256"]) == 64 and result["model_config"]["name"] == "lite"


def test_temporal_rows_report_how_the_ratio_follows_the_detail():
    from dstfuse_stream.evaluation.scorecard import _temporal_rows

    def r(ratio, detail, q):
        return {"frames": 20, "ratio": ratio, "explained_ratio": 0.8, "detail_ratio": detail, "qabf": q}

    clips = {"a": {"dstfuse": r(1.4, 1.6, 0.8), "average": r(0.8, 0.9, 0.4), "max": r(1.2, 1.35, 0.7)},
             "b": {"dstfuse": r(1.5, 1.7, 0.75), "average": r(0.9, 1.0, 0.4), "max": r(1.3, 1.5, 0.65)}}
    rows = {row.name: row for row in _temporal_rows(clips, {})}
    row = rows["temporal ratio vs detail (fused AG / sources'), correlation over methods x clips"]
    ratio = [1.4, 0.8, 1.2, 1.5, 0.9, 1.3]
    assert row.value == pytest.approx(np.corrcoef(ratio, [1.6, 0.9, 1.35, 1.7, 1.0, 1.5])[0, 1])
    assert f"vs Qabf {np.corrcoef(ratio, [0.8, 0.4, 0.7, 0.75, 0.4, 0.65])[0, 1]:.3f}" in row.detail
    assert "at or below 1.2 on some clip: average, max" in row.detail and "dstfuse detail 1.600 / 1.700" in row.detail
    assert row.kind == "info" and rows["temporal ratio, a"].kind == "criterion"
