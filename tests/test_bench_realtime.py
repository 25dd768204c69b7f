"""``dstfuse-bench realtime``: interleaved speed-ups, fidelity vs fp32-ref, skipped variants, the stream check."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from test_work_scale import TINY_BLEND, smooth_pair

from dstfuse_bench.cli import main
from dstfuse_bench.realtime import REFERENCE, fidelity, run_stream_check
from dstfuse_stream import DSTFuse
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.fuser import Fuser


def write_clip(root, n, shape=(48, 64)):
    for side in ("ir", "vi"):
        (root / side).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ir, vis = smooth_pair(10 + i, shape)
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:04d}.png"), cv2.merge([vis, ir, vis]))
    return root


class Shift:
    """A fake fuser model: IR plus a constant (0 = the reference)."""

    def __init__(self, offset):
        self.offset = offset

    def fuse(self, ir, vis):
        return np.clip(ir.astype(np.int16) + self.offset, 0, 255).astype(np.uint8)


def test_fidelity_is_psnr_and_metric_change_against_the_reference():
    frames = [(smooth_pair(i)[0], cv2.cvtColor(smooth_pair(i)[1], cv2.COLOR_GRAY2BGR)) for i in range(2)]
    fusers = {REFERENCE: Fuser(backend=Shift(0)), "same": Fuser(backend=Shift(0)), "off": Fuser(backend=Shift(20))}
    got = fidelity(fusers, frames)
    assert got[REFERENCE]["passed"] and math.isinf(got[REFERENCE]["psnr_min_db"])
    assert got["same"]["metric_change"] == {"VIF": 0.0, "Qabf": 0.0, "SSIM": 0.0} and got["same"]["passed"]
    assert got["same"]["metrics_failed"] == [] and got["same"]["psnr_passed"]
    assert got["off"]["psnr_min_db"] == pytest.approx(20 * math.log10(255 / 20), abs=0.5)  # 20 levels nearly everywhere
    assert not got["off"]["psnr_passed"] and not got["off"]["passed"]


def test_stream_check_runs_the_pipeline_on_a_pairs_folder(tmp_path):
    clip = write_clip(tmp_path / "clip", 3)
    with Fuser(backend=Shift(0)) as fuser:
        got = run_stream_check(fuser, clip, workdir=tmp_path / "work", rounds=3)
    assert got["frames"] == 3 and got["size_wh"] == [64, 48] and got["rounds"] == len(got["per_round"]) == 3
    rounds = got["per_round"]
    ratios = [r["pipeline_fps"] / r["model_only_fps"] for r in rounds]
    assert got["ratio"] == pytest.approx(np.median(ratios))
    assert got["ratio_quartiles"] == pytest.approx(list(np.percentile(ratios, [25, 75])))
    assert got["ratio_normal_writer"] == pytest.approx(np.median([r["pipeline_fps_normal_writer"] / r["model_only_fps"] for r in rounds]))
    assert got["pipeline_fps"] == pytest.approx(np.median([r["pipeline_fps"] for r in rounds]))
    budget = got["cpu_ms_per_frame"]
    assert set(budget) == {"decode", "fuse", "encode_fused", "encode_preview"} and all(v >= 0 for v in budget.values())
    assert got["projected_ratio_idle"] == pytest.approx(budget["fuse"] / sum(budget.values()))
    for io in ("idle", "normal"):  # both pipeline runs wrote their outputs
        assert (tmp_path / "work" / f"sample_fused_{io}.mp4").stat().st_size > 0 and (tmp_path / "work" / f"sample_preview_{io}.mp4").is_file()


def test_stream_check_runs_the_pipeline_on_its_own_fuser_against_the_reference(tmp_path):
    """The CLI's pipeline fuser (two frames in flight) against the one-at-a-time reference: ``ratio``
    uses the reference's model-only fps, ``ratio_own`` the pool's own throughput."""
    from dstfuse_stream.backends.base import FusionBackend
    from dstfuse_stream.backends.pool import BackendPool

    class IrBackend(FusionBackend):
        accepts_uint8 = True

        def __init__(self) -> None:
            super().__init__(device="cpu", precision="fp32")

        def fuse_batch(self, ir, vis):
            return ir.astype(np.float32) / 255

    clip = write_clip(tmp_path / "clip", 4)
    with Fuser(backend=Shift(0)) as fuser, Fuser(backend=BackendPool([IrBackend(), IrBackend()])) as pooled:
        got = run_stream_check(fuser, clip, workdir=tmp_path / "work", rounds=2, pipeline_fuser=pooled)
    rounds = got["per_round"]
    assert got["concurrent_frames"] == 2 and got["frames"] == 4 and "frames in flight: 2" in got["pipeline_describe"]
    assert got["ratio"] == pytest.approx(np.median([r["pipeline_fps"] / r["model_only_fps"] for r in rounds]))
    assert got["ratio_own"] == pytest.approx(np.median([r["pipeline_fps"] / r["own_model_only_fps"] for r in rounds]))
    assert all(r["own_model_only_fps"] != r["model_only_fps"] for r in rounds)  # timed separately


@pytest.mark.slow
def test_realtime_command_on_tiny_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = DSTFuse(TINY_BLEND).eval()
    weights = save_checkpoint(tmp_path / "tiny.pt", model, epoch=0)
    clip = write_clip(tmp_path / "clip", 2)
    out = tmp_path / "out"
    code = main(["realtime", "--weights", str(weights), "--resolutions", "64x48", "--rounds", "2", "--frames-per-clip", "2",
                 "--variants", "fp32-ref,fp32,int8,default", "--clips", str(clip), "--stream-clip", str(clip), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    entry = result["resolutions"]["64x48"]
    assert result["complete"] and set(entry["speed"]) == {"fp32-ref", "fp32", "default"}
    assert "dstfuse-export int8" in result["skipped"]["int8"]
    ref = entry["speed"]["fp32-ref"]
    assert ref["model"]["speedup_vs_ref"] == 1.0 and ref["e2e"]["speedup_vs_ref"] == 1.0 and ref["model"]["n"] == 2
    assert entry["fidelity"]["fp32-ref"]["passed"] and entry["fidelity"]["fp32"]["frames"] == 2
    assert result["stream"]["frames"] == 2 and result["cpu"]["summary"] in (out / "results.md").read_text()
    table = (out / "results.md").read_text()
    assert "| fp32-ref | onnx fp32, ws 1 | " in table and "| fp32 | onnx fp32, ws auto | " in table
    assert "| default | auto auto: " in table  # the precision measured for this size
    assert "- int8: skipped (precision 'int8': no calibrated int8 model" in table
