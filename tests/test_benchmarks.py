"""Benchmarks: exact statistics and MAC counts on hand-made inputs, and tiny end-to-end runs of dstfuse-bench."""

from __future__ import annotations

import json
import logging
import math

import av
import numpy as np
import pytest
import torch
from torch import nn

from dstfuse_bench.cli import main, build_parser, resolve_settings
from dstfuse_bench.clips import synthetic_frame_pair, write_synthetic_pair
from dstfuse_bench.memory import PeakMemory
from dstfuse_bench.model_bench import CaseSettings, run_model_benchmarks, time_calls
from dstfuse_stream.model_stats import count_macs, count_params
from dstfuse_bench.pipeline_bench import (
    fuse_share,
    load_prepared_frames,
    read_timing_log,
    run_clip_benchmark,
    sample_indices,
    summarize_stages,
)
from dstfuse_bench.plot import plot_latency_vs_pixels
from dstfuse_bench.report import model_table
from dstfuse_bench.stats import summarize_latencies
from dstfuse_stream import DSTFuse, get_config
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.errors import ConfigError, SourceError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values_s", "median_ms", "p90_ms"),
    [
        ([1, 2, 3, 4], 2500.0, 3700.0),
        ([10, 20, 30, 40, 50], 30000.0, 46000.0),
        ([7], 7000.0, 7000.0),
    ],
)
def test_percentiles_are_linear_between_ranks(values_s, median_ms, p90_ms):
    s = summarize_latencies(values_s)
    assert (s["median_ms"], s["p90_ms"]) == pytest.approx((median_ms, p90_ms), abs=1e-9)


def test_summarize_latencies_exact():
    s = summarize_latencies([0.004, 0.001, 0.003, 0.002])
    assert s["n"] == 4
    assert s["median_ms"] == pytest.approx(2.5)
    assert s["p90_ms"] == pytest.approx(3.7)
    assert s["p99_ms"] == pytest.approx(3.97)
    assert s["mean_ms"] == pytest.approx(2.5)
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(1.0), pytest.approx(4.0))
    assert s["fps"] == pytest.approx(400.0)  # 4 frames in 10 ms
    assert summarize_latencies([0.5, 0.5], frames_per_call=4)["fps"] == pytest.approx(8.0)
    with pytest.raises(ValueError):
        summarize_latencies([])
    with pytest.raises(ValueError):
        summarize_latencies([0.1, math.nan])


# -- timing loop with a fake clock -------------------------------------------------------------


class FakeClock:
    """Time advances only when the timed function runs, by the next value of ``durations``."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.events: list[str] = []

    def __call__(self) -> float:
        self.events.append("clock")
        return self.now

    def work(self) -> None:
        self.events.append("work")
        self.now += self.durations.pop(0)

    def sync(self) -> None:
        self.events.append("sync")


def test_time_calls_separates_warmup_and_syncs_before_reading_the_clock():
    clock = FakeClock([5.0, 7.0, 1.0, 2.0, 3.0])
    timed = time_calls(clock.work, warmup=2, iters=3, sync=clock.sync, clock=clock)
    assert timed.warmup_s == [5.0, 7.0]
    assert timed.latencies_s == [1.0, 2.0, 3.0]
    assert timed.first_call_s == 5.0
    # every call is followed by sync, then the clock
    for i, event in enumerate(clock.events):
        if event == "work":
            assert clock.events[i + 1 : i + 3] == ["sync", "clock"]


def test_time_calls_stops_after_budget_once_min_iters_are_done():
    clock = FakeClock([1.0] * 10)
    timed = time_calls(clock.work, warmup=0, iters=10, min_iters=2, max_time_s=2.5, clock=clock)
    assert timed.latencies_s == [1.0, 1.0, 1.0]  # 3rd call starts at 2.0 s < 2.5 s, the 4th would start at 3.0
    clock = FakeClock([10.0] * 10)
    timed = time_calls(clock.work, warmup=0, iters=10, min_iters=4, max_time_s=1.0, clock=clock)
    assert len(timed.latencies_s) == 4
    assert timed.first_call_s == 10.0
    with pytest.raises(ConfigError):
        time_calls(clock.work, warmup=0, iters=2, min_iters=3)


# -- model size ------------------------------------------------------------------------------


def test_macs_exact_on_hand_made_layers():
    conv = nn.Conv2d(1, 2, 3, padding=1)  # 2 x 4 x 5 outputs x 9 taps
    assert count_macs(conv, (1, 1, 4, 5)) == 2 * 4 * 5 * 9
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)  # each output sees 2 input channels
    assert count_macs(grouped, (1, 4, 4, 5)) == 4 * 4 * 5 * 2 * 9
    up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)  # 2x4x5 inputs x 3 outputs x 9 taps
    assert count_macs(up, (1, 2, 4, 5)) == 2 * 4 * 5 * 3 * 9
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))
    assert count_macs(net, (2, 6)) == 2 * (6 * 3 + 3 * 2)
    assert count_params(nn.Linear(6, 3)) == 6 * 3 + 3


def test_dstfuse_macs_scale_with_pixels_and_model_is_untouched(lite_model):
    small = count_macs(lite_model, (1, 1, 16, 16), (1, 1, 16, 16))
    assert count_macs(lite_model, (1, 1, 32, 64), (1, 1, 32, 64)) == 8 * small
    paper = DSTFuse(get_config("paper"))
    assert count_macs(paper, (1, 1, 16, 16), (1, 1, 16, 16)) > 50 * small
    assert next(lite_model.parameters()).device.type == "cpu"
    assert count_params(lite_model) == sum(p.numel() for p in lite_model.parameters())


def test_model_stats_counts_the_upsampler_only_below_work_scale_1():
    from dstfuse_stream.model_stats import model_stats

    full = model_stats("stream", size_wh=(64, 32))
    half = model_stats("stream", size_wh=(64, 32), work_scale=0.5)
    per_pixel = 4 * 8 * 9 + 8 * 8 * 9 + 8 * 2 * 9  # three 3x3 convs: 4 -> 8 -> 8 -> 2 channels
    assert full["params"]["upsampler"] == half["params"]["upsampler"] == per_pixel + 8 + 8 + 2
    assert full["macs"]["upsampler"] == 0 and half["macs"]["upsampler"] == per_pixel * 64 * 32
    networks = ("cst", "fusion", "mapping")
    assert all(full["macs"][m] == pytest.approx(4 * half["macs"][m], rel=0.05) for m in networks)
    assert model_stats("lite", size_wh=(64, 32))["params"]["upsampler"] == 0


# -- memory ------------------------------------------------------------------------------------


def test_peak_memory_sees_a_temporary_allocation():
    with PeakMemory() as mem:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
        del block
    if mem.method != "vmhwm":
        pytest.skip(f"peak RSS reset unavailable here (method {mem.method})")
    assert mem.delta_mib >= 60.0  # the 64 MiB block is seen (an upper bound would measure the machine)
    assert mem.peak_mib >= mem.delta_mib


def test_peak_memory_falls_back_to_ru_maxrss(monkeypatch, tmp_path):
    import dstfuse_bench.memory as memory

    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakMemory() as mem:
        pass
    assert mem.method == "ru_maxrss"
    assert mem.peak_mib > 0


# -- clips, timing logs, plot, tables ------------------------------------------------------------


def test_write_synthetic_pair_frames_match_the_generator(tmp_path):
    clip = write_synthetic_pair(tmp_path, frames=3, resolution_wh=(48, 32), fps=25)
    for path, side in ((clip.ir_path, 0), (clip.vis_path, 1)):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (48, 32)
            assert float(stream.average_rate) == 25.0
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        assert len(frames) == 3
        for i, frame in enumerate(frames):
            expected = synthetic_frame_pair(i, resolution_wh=(48, 32))[side]
            assert np.abs(frame.astype(np.int16) - expected.astype(np.int16)).mean() < 12.0
    with pytest.raises(ConfigError):
        write_synthetic_pair(tmp_path, frames=1, resolution_wh=(33, 32))


def test_summarize_stages_from_a_hand_made_log(tmp_path):
    log = tmp_path / "t.jsonl"
    rows = [{"index": i, "read_ms": r, "fuse_ms": f, "encode_ms": None} for i, (r, f) in enumerate([(1, 10), (3, 30), (2, 20)])]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert read_timing_log(log) == rows
    stages = summarize_stages(read_timing_log(log))
    assert set(stages) == {"read_ms", "fuse_ms"}  # encode has no values, absent columns are skipped
    assert stages["fuse_ms"]["median"] == pytest.approx(20.0)
    assert stages["fuse_ms"]["p90"] == pytest.approx(28.0)
    assert stages["read_ms"]["mean"] == pytest.approx(2.0)
    assert stages["read_ms"]["max"] == pytest.approx(3.0)


def test_sample_indices_spread_over_the_clip():
    assert sample_indices(60, 4) == [0, 20, 39, 59]
    assert sample_indices(60, 1) == [0]
    assert sample_indices(2, 2) == [0, 1]
    assert sample_indices(2, 4) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        sample_indices(0, 2)


def test_load_prepared_frames_decodes_the_requested_pairs(tmp_path):
    clip = write_synthetic_pair(tmp_path, frames=4, resolution_wh=(32, 24))
    frames = load_prepared_frames(clip.ir_path, clip.vis_path, [3, 0, 3])
    assert len(frames) == 3
    for ir, vis in frames:  # what the pipeline hands the backend: uint8 luma planes
        assert ir.shape == vis.shape == (24, 32) and ir.dtype == vis.dtype == np.uint8
    np.testing.assert_array_equal(frames[0][0], frames[2][0])
    expected_ir = synthetic_frame_pair(0, resolution_wh=(32, 24))[0][..., 0]
    assert np.abs(frames[1][0].astype(float) - expected_ir).mean() < 0.05 * 255
    assert not np.array_equal(frames[0][0], frames[1][0])
    with pytest.raises(SourceError):
        load_prepared_frames(clip.ir_path, clip.vis_path, [9])


def test_fuse_share_is_fuse_time_over_wall_time():
    rows = [{"fuse_ms": 100.0}, {"fuse_ms": 300.0}, {"fuse_ms": None}, {}]
    assert fuse_share(rows, 0.5) == pytest.approx(0.8)
    assert math.isnan(fuse_share(rows, 0.0))


def _row(preset, backend, w, h, median, status="ok"):
    row = {"preset": preset, "backend": backend, "width": w, "height": h, "pixels": w * h, "gmacs": 1.0, "status": status}
    if status == "ok":
        row.update(median_ms=median, p90_ms=median * 1.1, p99_ms=median * 1.2, fps=1e3 / median, n=3,
                   peak_mem_delta_mib=1.0, first_call_ms=median)
    else:
        row["reason"] = "no CUDA device"
    return row


def test_plot_and_table(tmp_path):
    rows = [_row("lite", "torch", 32, 32, 5.0), _row("lite", "torch", 64, 64, 20.0),
            _row("paper", "onnx-t1", 32, 32, 50.0), _row("lite", "torch-cuda", 32, 32, 0, status="skipped")]
    png = plot_latency_vs_pixels(rows, tmp_path / "p.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert plot_latency_vs_pixels([], tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC
    table = model_table(rows).splitlines()
    assert len(table) == 2 + 4
    assert "| lite | torch | 64 x 64 | 1.0 | 20.0 | 22.0 | 24.0 | 50.00 | 3 |" in table[3]
    assert "skipped: no CUDA device" in table[5]


# -- runs ---------------------------------------------------------------------------------------


def test_skip_rule_predicts_from_the_previous_size(lite_model, tmp_path):
    rows = run_model_benchmarks(
        {"lite": lite_model},
        backends={"lite": ["torch-t1", "torch-cuda"]},
        resolutions=[(32, 32), (16, 16)],  # run smallest first whatever the order given
        settings=CaseSettings(warmup=1, iters=2, min_iters=1, max_case_s=1.0, skip_over_s=0.0),
        workdir=tmp_path,
    )
    assert [(r["width"], r["backend"], r["status"]) for r in rows] == [
        (16, "torch-t1", "ok"), (16, "torch-cuda", "ok" if torch.cuda.is_available() else "skipped"),
        (32, "torch-t1", "skipped"), (32, "torch-cuda", "skipped"),
    ]
    assert rows[0]["threads"] == 1
    assert rows[2]["reason"].startswith("predicted")
    assert rows[0]["n"] in (1, 2) and rows[0]["warmup"] == 1 and rows[0]["median_ms"] > 0
    assert rows[0]["gmacs"] == pytest.approx(count_macs(lite_model, (1, 1, 16, 16), (1, 1, 16, 16)) / 1e9)


def test_pipeline_and_naive_loop_write_the_same_frames(lite_model, tmp_path, one_torch_thread):
    clip = write_synthetic_pair(tmp_path / "clip", frames=3, resolution_wh=(32, 24))
    backend = TorchBackend(lite_model, device="cpu")
    result = run_clip_benchmark(
        "syn", clip.ir_path, clip.vis_path, backend, workdir=tmp_path / "work", timing_dir=tmp_path / "timing",
        max_frames=2, model_iters=1,
    )
    assert result["pipeline"]["frames"] == result["naive"]["frames"] == 2
    assert len(read_timing_log(tmp_path / "timing" / "syn_timing.jsonl")) == 2
    assert result["pipeline"]["stages_ms"]["fuse_ms"]["median"] > 0
    assert result["model_only"]["n"] == 2  # one call before, one after
    assert result["model_only"]["frame_indices"] == {"before": [0], "after": [1]}  # spread over the 2 fused frames
    for run in ("pipeline", "naive"):
        stages = result[run]["stages_ms"]
        assert {"read_ms", "preprocess_ms", "fuse_ms", "postprocess_ms", "encode_ms", "latency_ms"} <= set(stages)
        assert 0.0 < result[run]["fuse_share"] < 1.0
    assert result["ratios"]["pipeline_over_naive_fps"] == pytest.approx(result["pipeline"]["fps"] / result["naive"]["fps"])
    decoded = []
    for name in ("syn_pipeline.mp4", "syn_naive.mp4"):
        with av.open(str(tmp_path / "work" / name)) as container:
            decoded.append([f.to_ndarray(format="bgr24") for f in container.decode(video=0)])
    assert len(decoded[0]) == len(decoded[1]) == 2
    for a, b in zip(*decoded):
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 2


def test_quick_settings_and_overrides():
    args = build_parser().parse_args(["--quick", "--iters", "7", "--backends-for", "lite=onnx-t1"])
    s = resolve_settings(args)
    assert s["presets"] == ["lite"] and s["iters"] == 7 and s["warmup"] == 1
    assert s["backends"] == {"lite": ["onnx-t1"]}
    assert s["resolutions"] == [(64, 48), (128, 96)]
    full = resolve_settings(build_parser().parse_args([]))
    assert full["resolutions"] == [(320, 256), (640, 512), (1280, 1024)]
    assert set(full["presets"]) == {"stream", "lite", "paper"}


@pytest.mark.parametrize(
    "extra", [["--presets", "huge"], ["--resolutions", "32"], ["--backends", "torch,gpu9"], ["--backends-for", "paper=torch"]]
)
def test_cli_bad_options_exit_2(tmp_path, capsys, extra):
    assert main(["--quick", "--out", str(tmp_path), "--no-pipeline", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dstfuse-bench: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_tiny_run_writes_json_png_and_timing_log(tmp_path, capsys):
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    code = main([
        "--quick", "--out", str(out), "--random-weights", "--resolutions", "32x32", "--backends", "torch,torch-cuda",
        "--iters", "2", "--min-iters", "1", "--synthetic-frames", "2", "--synthetic-size", "32x32", "--model-iters", "1",
        "--torch-threads", "1", "--pipeline-backend", "torch",
    ])
    assert code == 0
    assert torch.get_num_threads() == threads  # restored
    assert logging.getLogger("dstfuse_stream").level == logging.NOTSET  # library log levels restored too
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is True
    assert result["command"].startswith("dstfuse-bench --quick")
    machine = result["machine"]
    for key in ("cpu_model", "usable_cores", "torch_threads", "gpu", "python", "load_average"):
        assert key in machine
    assert set(machine["versions"]) >= {"torch", "onnxruntime", "av", "numpy"}
    assert machine["versions"]["torch"] == torch.__version__
    assert machine["torch_threads"] == result["settings"]["torch_threads"] == 1
    assert len(result["load_average"]["start"]) == 3 and len(result["load_average"]["end"]) == 3
    lite = result["models"]["lite"]
    assert lite["params"] == count_params(DSTFuse(get_config("lite")))
    side = 64
    assert lite["macs_per_pixel"] == count_macs(DSTFuse(get_config("lite")), (1, 1, side, side), (1, 1, side, side)) / side**2
    rows = {r["backend"]: r for r in result["model_only"]}
    assert set(rows) == {"torch", "torch-cuda"}
    ok = rows["torch"]
    assert ok["status"] == "ok" and (ok["width"], ok["height"], ok["batch"]) == (32, 32, 1)
    for key in ("median_ms", "p90_ms", "p99_ms", "fps", "peak_mem_mib", "peak_mem_delta_mib", "mem_method", "first_call_ms"):
        assert key in ok
    assert ok["p90_ms"] >= ok["median_ms"] and ok["fps"] > 0 and 1 <= ok["n"] <= 2
    assert rows["torch-cuda"]["status"] == ("ok" if torch.cuda.is_available() else "skipped")
    (clip,) = result["pipeline"]
    assert clip["label"] == "synthetic" and clip["status"] == "ok"
    assert clip["pipeline"]["frames"] == clip["naive"]["frames"] == 2
    assert {"read_ms", "pair_ms", "preprocess_ms", "fuse_ms", "postprocess_ms", "encode_ms", "latency_ms"} <= set(
        clip["pipeline"]["stages_ms"]
    )
    assert clip["ratios"]["pipeline_over_model_only_fps"] > 0
    assert len(read_timing_log(out / "timing" / "synthetic_timing.jsonl")) == 2
    assert (out / "latency_vs_pixels.png").read_bytes()[:8] == PNG_MAGIC
    assert "| lite | torch | 32 x 32 |" in (out / "results.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_thread_settings_are_timed_and_recorded(lite_model, tmp_path):
    rows = run_model_benchmarks(
        {"lite": lite_model},
        backends={"lite": ["onnx-t1", "onnx-t2"]},
        resolutions=[(32, 32)],
        settings=CaseSettings(warmup=1, iters=2, min_iters=1, max_case_s=1.0),
        workdir=tmp_path,
    )
    assert [(r["backend"], r["status"], r["threads"]) for r in rows] == [("onnx-t1", "ok", 1), ("onnx-t2", "ok", 2)]
    assert all("CPUExecutionProvider" in r["backend_description"] for r in rows)
    assert (tmp_path / "dstfuse_lite_fp32.onnx").is_file()  # exported once, shared by both


@pytest.mark.slow
def test_cli_real_clip_end_to_end(shared_data, tmp_path):
    folder = shared_data / "sequences" / "m3svd_0111_1716"
    if not (folder / "ir.mp4").is_file():
        pytest.skip(f"{folder} not found")
    out = tmp_path / "bench"
    code = main([
        "--quick", "--out", str(out), "--random-weights", "--no-model", "--synthetic-frames", "0",
        "--real-clip", str(folder), "--real-frames", "2", "--model-iters", "1", "--torch-threads", "1",
    ])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["model_only"] == []
    (clip,) = result["pipeline"]
    assert clip["label"] == "real_m3svd_0111_1716" and clip["status"] == "ok"
    if not torch.cuda.is_available():  # default --pipeline-backend auto = ONNX Runtime on CPU, as dstfuse-stream
        assert clip["backend"].startswith("onnx") and "CPUExecutionProvider" in clip["backend"]
    assert clip["clip"]["size_wh"] == [640, 480] and clip["clip"]["fps"] == pytest.approx(30.0)
    assert clip["clip"]["frames"] == {"ir": 151, "vis": 151}
    assert clip["pipeline"]["frames"] == clip["naive"]["frames"] == 2
    assert clip["pipeline"]["processing_size_wh"] == [640, 480]
    rows = read_timing_log(out / "timing" / "real_m3svd_0111_1716_timing.jsonl")
    assert [r["ir_index"] for r in rows] == [r["vis_index"] for r in rows] == [0, 1]


def test_cli_missing_real_clip_is_reported_as_skipped(tmp_path):
    out = tmp_path / "bench"
    code = main(["--quick", "--out", str(out), "--no-model", "--synthetic-frames", "0",
                 "--real-clip", str(tmp_path / "nowhere"), "--real-frames", "2"])
    assert code == 0
    (clip,) = json.loads((out / "results.json").read_text())["pipeline"]
    assert clip["status"] == "skipped" and "not found" in clip["reason"]


def test_fast_guided_upsample_keeps_constants_and_reproduces_a_linear_function_of_the_guide():
    import torch
    import torch.nn.functional as F

    from dstfuse_bench.work_scale_fidelity import fast_guided_upsample

    torch.manual_seed(0)
    guide = torch.rand(1, 1, 32, 48)
    guide_low = F.avg_pool2d(guide, 2)
    const = torch.full_like(guide_low, 0.3)
    torch.testing.assert_close(fast_guided_upsample(guide_low, const, guide, 2, 1e-3), torch.full_like(guide, 0.3))
    # src = 0.5 * guide + 0.1 at low resolution -> the same linear map of the full-resolution guide
    out = fast_guided_upsample(guide_low, 0.5 * guide_low + 0.1, guide, 2, 1e-8)
    torch.testing.assert_close(out, 0.5 * guide + 0.1, atol=1e-3, rtol=0)


def test_wiener_with_the_true_kernel_restores_and_the_ir_names_the_blur():
    """The deblurring-ceiling probe: Wiener with the true kernel beats the blurred input, and on a
    pair whose IR is the sharp visible itself the gradient correlation finds the blur's direction."""
    import cv2

    from dstfuse_bench.probes import estimate_kernel, wiener_deconvolve
    from dstfuse_stream.degrade import motion_blur, motion_blur_kernel
    from dstfuse_stream.metrics import psnr

    rng = np.random.default_rng(0)
    sharp = np.clip(cv2.GaussianBlur(rng.random((192, 256)).astype(np.float32), (0, 0), 1.5) * 3 - 1, 0, 1)
    blurred = motion_blur(sharp, 9, 90)
    restored = np.clip(wiener_deconvolve(blurred, motion_blur_kernel(9, 90), 1e-2), 0, 1)
    assert psnr(restored, sharp) > psnr(blurred, sharp) + 3.0  # 20.5 -> 26.3 dB
    length, angle = estimate_kernel(sharp, blurred)
    assert angle == 90.0 and abs(length - 9) <= 4
