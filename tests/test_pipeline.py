"""The threaded pipeline: lossless vs latest backpressure, errors in every stage, stop, parity."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch
from synthetic import ListSource, MaxFuser, decode_index, ir_frame, read_video, vis_frame, write_pair_videos

from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.colour import float_to_uint8, split_luma
from dstfuse_stream.errors import ConfigError, SinkError, SourceError
from dstfuse_stream.pipeline import FusionPipeline, PipelineConfig, finish_fused, prepare_pair, resolve_sync
from dstfuse_stream.sinks import Sink, TimingLog, VideoSink
from dstfuse_stream.sources import open_source

FAST = dict(poll_s=0.01, join_timeout_s=2.0, writer_timeout_s=10.0)


class RecordingSink(Sink):
    """Keeps (ir code, vis code, timings) of every written frame; can fail or be slow."""

    def __init__(self, *, fail_at: int | None = None, delay_s: float = 0.0) -> None:
        self.rows: list[tuple[int, int, dict]] = []
        self.frames = []
        self.fail_at = fail_at
        self.delay_s = delay_s
        self.closed = False

    def write(self, frame) -> None:
        if self.fail_at is not None and len(self.rows) == self.fail_at:
            raise SinkError("disk full (test)")
        if self.delay_s:
            time.sleep(self.delay_s)
        self.frames.append(frame)
        out = frame.output
        self.rows.append((decode_index(out, half="left"), decode_index(out, half="right"), dict(frame.timings)))

    def close(self) -> None:
        self.closed = True

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b, _ in self.rows]


def coded_sources(n_ir: int, n_vis: int | None = None, **kwargs) -> tuple[ListSource, ListSource]:
    n_vis = n_ir if n_vis is None else n_vis
    return (
        ListSource([ir_frame(i) for i in range(n_ir)], name="ir", **kwargs),
        ListSource([vis_frame(i) for i in range(n_vis)], name="vis", **kwargs),
    )


def no_pipeline_threads() -> bool:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("dstfuse-")]:
            return True
        time.sleep(0.01)
    return False


def test_lossless_keeps_every_frame_in_order_with_a_slow_consumer(tmp_path):
    ir_path, vis_path = write_pair_videos(tmp_path, 40)
    sink = RecordingSink(delay_s=0.002)
    video = VideoSink(tmp_path / "out.mp4", fps=30)
    cfg = PipelineConfig(queue_size=2, **FAST)
    with FusionPipeline(
        open_source(ir_path), open_source(vis_path, role="vis"), MaxFuser(delay_s=0.005),
        sinks=[sink, video], config=cfg, timing_log=TimingLog(tmp_path / "t.csv"),
    ) as pipe:
        summary = pipe.run()
    assert pipe.sync == {"ir": "lossless", "vis": "lossless"} and pipe.pairing == "index"
    assert sink.pairs == [(i, i) for i in range(40)]
    written = read_video(tmp_path / "out.mp4")
    assert [(decode_index(f, half="left"), decode_index(f, half="right")) for f in written] == sink.pairs
    assert summary.frames_read == {"ir": 40, "vis": 40}
    assert (summary.frames_paired, summary.frames_fused, summary.frames_written) == (40, 40, 40)
    assert summary.queue_dropped == {"ir": 0, "vis": 0} and summary.stopped_by == "end"
    assert summary.latency_ms["p50"] > 0 and summary.latency_ms["p99"] >= summary.latency_ms["p50"]
    assert summary.temporal_stability["steps"] == 39
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 41
    assert no_pipeline_threads()


def test_latest_drops_frames_but_bounds_the_lag():
    n, queue_size = 120, 2
    clock = [i * 0.004 for i in range(n)]  # both cameras produce a frame every ~4 ms
    ir = ListSource([ir_frame(i) for i in range(n)], timestamps=clock, live=True, pace_s=0.004, fps=250)
    vis = ListSource([vis_frame(i) for i in range(n)], timestamps=clock, live=True, pace_s=0.004, fps=250)
    sink = RecordingSink()
    cfg = PipelineConfig(queue_size=queue_size, **FAST)
    summary = FusionPipeline(ir, vis, MaxFuser(delay_s=0.04), sinks=[sink], config=cfg).run()
    assert summary.sync == {"ir": "latest", "vis": "latest"} and summary.pairing == "timestamp"
    assert summary.frames_read == {"ir": n, "vis": n}
    assert 0 < summary.frames_written < n // 2
    assert summary.queue_dropped["ir"] > 0 and summary.queue_dropped["vis"] > 0
    ir_idx = [a for a, _ in sink.pairs]
    assert all(a == b for a, b in sink.pairs)  # same timestamps -> same index
    assert ir_idx == sorted(set(ir_idx))  # strictly increasing: nothing re-ordered
    lags = [t["lag_frames"] for _, _, t in sink.rows]
    assert max(lags) <= queue_size + 1
    # every frame read is accounted for: written, dropped by the queue, unmatched, or never taken
    for role in ("ir", "vis"):
        taken = summary.frames_written + summary.unmatched[role]
        assert taken + summary.queue_dropped[role] <= n


def test_a_raising_fuser_stops_every_stage_and_is_reraised():
    ir, vis = coded_sources(250)
    sink = RecordingSink()
    cfg = PipelineConfig(queue_size=2, **FAST)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="fuser failed on call 3"):
        FusionPipeline(ir, vis, MaxFuser(fail_at=3), sinks=[sink], config=cfg).run()
    assert time.monotonic() - t0 < 5
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)]  # what was fused is written
    assert sink.closed and ir.closed and vis.closed
    assert no_pipeline_threads()


def test_a_failing_sink_stops_readers_and_fusion():
    ir, vis = coded_sources(250)
    fuser = MaxFuser()
    sink = RecordingSink(fail_at=2)
    pipe = FusionPipeline(ir, vis, fuser, sinks=[sink], config=PipelineConfig(queue_size=2, **FAST))
    t0 = time.monotonic()
    with pytest.raises(SinkError, match="disk full"):
        pipe.run()
    assert time.monotonic() - t0 < 5
    assert fuser.calls < 20 and sink.closed
    assert pipe.summary.stopped_by == "error" and pipe.summary.error.startswith("write: SinkError")
    assert no_pipeline_threads()


def test_a_source_error_keeps_what_was_read_and_is_reraised():
    ir = ListSource([ir_frame(i) for i in range(50)], fail_after=5)
    vis = ListSource([vis_frame(i) for i in range(50)])
    sink = RecordingSink()
    pipe = FusionPipeline(ir, vis, MaxFuser(), sinks=[sink], config=PipelineConfig(queue_size=2, **FAST))
    with pytest.raises(SourceError, match="truncated after 5"):
        pipe.run()
    assert sink.pairs == [(i, i) for i in range(5)]
    assert pipe.summary.frames_written == 5 and sink.closed
    assert no_pipeline_threads()


def test_request_stop_finishes_the_current_frame_and_closes():
    ir, vis = coded_sources(250)
    sink = RecordingSink()
    pipe = FusionPipeline(ir, vis, MaxFuser(delay_s=0.01), sinks=[sink], config=PipelineConfig(queue_size=2, **FAST))
    timer = threading.Timer(0.15, pipe.request_stop)
    timer.start()
    summary = pipe.run()
    timer.join()
    assert summary.stopped_by == "stop"
    assert 0 < summary.frames_written == summary.frames_fused == len(sink.rows) < 250
    assert sink.pairs == [(i, i) for i in range(len(sink.rows))] and sink.closed
    assert no_pipeline_threads()


def test_max_frames_and_different_lengths(capsys):
    ir, vis = coded_sources(30)
    summary = FusionPipeline(ir, vis, MaxFuser(), config=PipelineConfig(max_frames=7, progress=True, **FAST)).run()
    assert summary.frames_written == 7 and summary.stopped_by == "max_frames"
    assert "7/7" in capsys.readouterr().err  # tqdm bar: written / expected
    ir, vis = coded_sources(9, 12)
    sink = RecordingSink()
    summary = FusionPipeline(ir, vis, MaxFuser(), sinks=[sink], config=PipelineConfig(**FAST)).run()
    assert sink.pairs == [(i, i) for i in range(9)]
    assert summary.length_mismatch == "vis" and summary.ended_first == "ir"


def test_ir_resized_to_visible_and_processing_size():
    ir = ListSource([cv2.resize(ir_frame(i), (80, 16), interpolation=cv2.INTER_NEAREST) for i in range(3)])
    vis = ListSource([vis_frame(i) for i in range(3)])
    sink = RecordingSink()
    FusionPipeline(ir, vis, MaxFuser(), sinks=[sink], config=PipelineConfig(**FAST)).run()
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)]
    assert sink.frames[0].output.shape == (32, 160, 3)
    ir, vis = coded_sources(2)
    sink = RecordingSink()
    FusionPipeline(ir, vis, MaxFuser(), sinks=[sink], config=PipelineConfig(max_size=80, gray=True, **FAST)).run()
    assert sink.frames[0].output.shape == (16, 80)


def test_colour_keeps_visible_chroma_and_no_normalisation():
    vis = np.zeros((8, 8, 3), np.uint8)
    vis[..., 2] = 200  # red
    vis[..., 1] = 40
    ir = np.full((8, 8), 10, np.uint8)
    prepared = prepare_pair(ir, vis)
    fused_y, out = finish_fused(prepared.vis_y.astype(np.float32) / 255.0, prepared)
    assert np.abs(out.astype(int) - vis.astype(int)).max() <= 2
    # a constant dark frame stays dark: fixed mapping, no per-frame min-max stretch
    fused_y, out = finish_fused(np.full((8, 8), 0.1, np.float32), prepared, gray=True)
    assert out.ndim == 2 and np.all(out == 26)


def test_homography_aligns_a_shifted_ir_stream():
    shift = 20
    m = np.float32([[1, 0, shift], [0, 1, 0]])
    ir_imgs = [cv2.warpAffine(ir_frame(i), m, (160, 32)) for i in range(3)]
    h = np.array([[1.0, 0, -shift], [0, 1.0, 0], [0, 0, 1.0]])
    sink = RecordingSink()
    FusionPipeline(
        ListSource(ir_imgs), ListSource([vis_frame(i) for i in range(3)]), MaxFuser(),
        sinks=[sink], homography=h, config=PipelineConfig(**FAST),
    ).run()
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)]


def test_real_lite_model_matches_direct_inference(lite_model):
    rng = np.random.default_rng(0)
    ir_imgs = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(2)]
    vis_imgs = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    sink = RecordingSink()
    backend = TorchBackend(lite_model, device="cpu")
    FusionPipeline(ListSource(ir_imgs), ListSource(vis_imgs), backend, sinks=[sink], config=PipelineConfig(**FAST)).run()
    assert len(sink.frames) == 2
    frame = sink.frames[1]
    assert np.array_equal(frame.ir, ir_imgs[1])
    assert np.array_equal(frame.vis_y, split_luma(vis_imgs[1])[0])
    ir_t = torch.from_numpy(frame.ir.astype(np.float32) / 255.0)[None, None]
    vis_t = torch.from_numpy(frame.vis_y.astype(np.float32) / 255.0)[None, None]
    with torch.inference_mode():
        expected = float_to_uint8(lite_model(ir_t, vis_t)[0, 0].numpy())
    assert np.abs(frame.fused_y.astype(int) - expected.astype(int)).max() <= 1
    assert frame.output.shape == (24, 32, 3)


def test_validation_and_close_without_run():
    with pytest.raises(ConfigError):
        PipelineConfig(sync="fast")
    with pytest.raises(ConfigError):
        PipelineConfig(queue_size=0)
    assert resolve_sync("auto", live=True) == "latest" and resolve_sync("auto", live=False) == "lossless"
    ir, vis = coded_sources(2)
    with pytest.raises(ConfigError, match="fuse"):
        FusionPipeline(ir, vis, object())
    sink = RecordingSink()
    with FusionPipeline(ir, vis, MaxFuser(), sinks=[sink]):
        pass
    assert sink.closed and ir.closed and vis.closed
