"""The threaded pipeline: lossless vs latest backpressure, errors in every stage, stop, parity with
direct inference. Behaviour only: which frames were written, dropped, in which order; no clocks."""

from __future__ import annotations

import os
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
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.pipeline import FusionPipeline, PipelineConfig, resolve_sync
from dstfuse_stream.sinks import Sink, TimingLog, VideoSink
from dstfuse_stream.sources import open_source

FAST = dict(poll_s=0.01, join_timeout_s=2.0, writer_timeout_s=10.0)


class RecordingSink(Sink):
    """Keeps (ir code, vis code) and the image of every write; can fail or be slow."""

    def __init__(self, *, fail_at: int | None = None, delay_s: float = 0.0) -> None:
        self.pairs: list[tuple[int, int]] = []
        self.images: list[np.ndarray] = []
        self.indices: list[int] = []
        self.fail_at = fail_at
        self.delay_s = delay_s
        self.closed = False

    def write(self, image, *, index=0, timestamp_s=None, name=None) -> None:
        if self.fail_at is not None and len(self.pairs) == self.fail_at:
            raise SinkError("disk full (test)")
        if self.delay_s:
            time.sleep(self.delay_s)
        self.images.append(image)
        self.indices.append(index)
        self.pairs.append((decode_index(image, half="left"), decode_index(image, half="right")))

    def close(self) -> None:
        self.closed = True


def coded_sources(n_ir: int, n_vis: int | None = None, **kwargs) -> tuple[ListSource, ListSource]:
    n_vis = n_ir if n_vis is None else n_vis
    return (
        ListSource([ir_frame(i) for i in range(n_ir)], name="ir", **kwargs),
        ListSource([vis_frame(i) for i in range(n_vis)], name="vis", **kwargs),
    )


def no_pipeline_threads() -> bool:
    """No ``dstfuse-*`` thread is alive (joined threads disappear at once; allow a moment for the OS)."""
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
    fuser = MaxFuser(delay_s=0.005)
    with FusionPipeline(
        open_source(ir_path), open_source(vis_path, role="vis"), fuser,
        sinks=[sink, video], config=cfg, timing_log=TimingLog(tmp_path / "t.csv"),
    ) as pipe:
        summary = pipe.run()
    assert pipe.sync == {"ir": "lossless", "vis": "lossless"} and pipe.pairing == "index"
    assert sink.pairs == [(i, i) for i in range(40)] and sink.indices == list(range(40))
    written = read_video(tmp_path / "out.mp4")
    assert [(decode_index(f, half="left"), decode_index(f, half="right")) for f in written] == sink.pairs
    assert summary.frames_read == {"ir": 40, "vis": 40}
    assert (summary.frames_paired, summary.frames_fused, summary.frames_written) == (40, 40, 40)
    assert summary.queue_dropped == {"ir": 0, "vis": 0} and summary.stopped_by == "end"
    assert summary.latency_ms["p50"] > 0 and summary.latency_ms["p99"] >= summary.latency_ms["p50"]
    assert summary.temporal_stability["steps"] == 39
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 41
    assert fuser.dtypes == {np.dtype(np.uint8)}  # the backend gets uint8 luma, not float copies
    assert no_pipeline_threads()


def test_latest_keeps_the_newest_frames_and_drops_exactly_the_rest():
    """Live sources, a consumer stalled on the first pair until both readers have read everything:
    ``latest`` keeps the first pair, then exactly the newest ``queue_size`` frames (the end of stream
    waits for room: it never displaces a frame); every other frame is counted as dropped by the queue."""
    n, q = 30, 3
    release = threading.Event()
    clock = [i / 30 for i in range(n)]
    ir = ListSource([ir_frame(i) for i in range(n)], timestamps=clock, live=True, release=release)
    vis = ListSource([vis_frame(i) for i in range(n)], timestamps=clock, live=True, release=release)

    def stall_on_first_call(call: int) -> None:
        if call == 0:
            release.set()  # the sources may now deliver frames 1..n-1 ...
            deadline = time.monotonic() + 30
            while not (ir.exhausted.is_set() and vis.exhausted.is_set()) and time.monotonic() < deadline:  # ... all
                time.sleep(0.005)

    sink = RecordingSink()
    summary = FusionPipeline(ir, vis, MaxFuser(on_call=stall_on_first_call), sinks=[sink],
                             config=PipelineConfig(queue_size=q, **FAST)).run()
    assert summary.sync == {"ir": "latest", "vis": "latest"} and summary.pairing == "timestamp"
    kept = [0, *range(n - q, n)]
    assert sink.pairs == [(i, i) for i in kept]
    assert summary.frames_read == {"ir": n, "vis": n}
    assert summary.queue_dropped == {"ir": n - 1 - q, "vis": n - 1 - q}
    assert summary.unmatched == {"ir": 0, "vis": 0} and summary.frames_written == q + 1


def test_a_raising_fuser_stops_every_stage_and_is_reraised():
    ir, vis = coded_sources(250)
    sink = RecordingSink()
    with pytest.raises(RuntimeError, match="fuser failed on call 3"):
        FusionPipeline(ir, vis, MaxFuser(fail_at=3), sinks=[sink], config=PipelineConfig(queue_size=2, **FAST)).run()
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)]  # what was fused is written
    assert sink.closed and ir.closed and vis.closed
    assert no_pipeline_threads()


def test_a_failing_sink_stops_readers_and_fusion():
    ir, vis = coded_sources(250)
    fuser = MaxFuser()
    sink = RecordingSink(fail_at=2)
    q = 2
    pipe = FusionPipeline(ir, vis, fuser, sinks=[sink], config=PipelineConfig(queue_size=q, **FAST))
    with pytest.raises(SinkError, match="disk full"):
        pipe.run()
    # at most: 3 frames taken by the writer + a full writer queue + the one being handed over
    assert 3 <= fuser.calls <= 3 + q + 1 and sink.closed and ir.closed and vis.closed
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
    pipe = None

    def stop_during_call(call: int) -> None:
        if call == 4:
            pipe.request_stop()

    pipe = FusionPipeline(ir, vis, MaxFuser(on_call=stop_during_call), sinks=[sink], config=PipelineConfig(queue_size=2, **FAST))
    summary = pipe.run()
    assert summary.stopped_by == "stop"
    assert summary.frames_written == summary.frames_fused == 5  # the frame being fused when asked is finished
    assert sink.pairs == [(i, i) for i in range(5)] and sink.closed and ir.closed and vis.closed
    assert no_pipeline_threads()


def test_max_frames_and_different_lengths(capsys):
    ir, vis = coded_sources(30)
    summary = FusionPipeline(ir, vis, MaxFuser(), config=PipelineConfig(max_frames=7, progress=True, **FAST)).run()
    assert summary.frames_written == 7 and summary.stopped_by == "max_frames"
    assert "7/7" in capsys.readouterr().err  # tqdm bar: finished / expected
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
    assert sink.images[0].shape == (32, 160, 3)
    ir, vis = coded_sources(2)
    frames = list(FusionPipeline(ir, vis, Fuser(backend=MaxFuser(), output="gray"), config=PipelineConfig(max_size=80, **FAST)))
    assert [f.fused.shape for f in frames] == [(16, 80), (16, 80)]


def test_homography_aligns_a_shifted_ir_stream():
    shift = 20
    m = np.float32([[1, 0, shift], [0, 1, 0]])
    ir_imgs = [cv2.warpAffine(ir_frame(i), m, (160, 32)) for i in range(3)]
    h = np.array([[1.0, 0, -shift], [0, 1.0, 0], [0, 0, 1.0]])
    sink = RecordingSink()
    FusionPipeline(
        ListSource(ir_imgs), ListSource([vis_frame(i) for i in range(3)]), Fuser(backend=MaxFuser(), homography=h),
        sinks=[sink], config=PipelineConfig(**FAST),
    ).run()
    assert sink.pairs == [(0, 0), (1, 1), (2, 2)]


def test_real_lite_model_matches_direct_inference(lite_model):
    rng = np.random.default_rng(0)
    ir_imgs = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(2)]
    vis_imgs = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    backend = TorchBackend(lite_model, device="cpu")
    frames = list(FusionPipeline(ListSource(ir_imgs), ListSource(vis_imgs), backend, config=PipelineConfig(**FAST)))
    assert len(frames) == 2
    frame = frames[1]
    assert np.array_equal(frame.ir, ir_imgs[1])
    assert np.array_equal(frame.vis_y, split_luma(vis_imgs[1])[0])
    ir_t = torch.from_numpy(frame.ir.astype(np.float32) / 255.0)[None, None]
    vis_t = torch.from_numpy(frame.vis_y.astype(np.float32) / 255.0)[None, None]
    with torch.inference_mode():
        expected = float_to_uint8(lite_model(ir_t, vis_t)[0, 0].numpy())
    assert np.abs(frame.fused_y.astype(int) - expected.astype(int)).max() <= 1
    assert frame.fused.shape == (24, 32, 3)


def test_iteration_without_outputs_yields_every_frame_with_its_position():
    ir, vis = coded_sources(6)
    pipe = FusionPipeline(ir, vis, MaxFuser(), config=PipelineConfig(**FAST))
    frames = list(pipe)
    assert [f.index for f in frames] == list(range(6))
    assert [f.timestamp for f in frames] == pytest.approx([i / 30 for i in range(6)])
    assert [(decode_index(f.fused, half="left"), decode_index(f.fused, half="right")) for f in frames] == [(i, i) for i in range(6)]
    assert pipe.writer is None and pipe.summary.frames_written == 6 and pipe.summary.stopped_by == "end"
    assert {"pair_ms", "preprocess_ms", "fuse_ms", "postprocess_ms", "lag_frames"} <= set(frames[0].timings)
    with pytest.raises(RuntimeError, match="runs once"):
        iter(pipe)


def test_leaving_the_loop_stops_every_thread_and_writes_what_was_fused(tmp_path):
    ir, vis = coded_sources(250)
    sink = RecordingSink()
    pipe = FusionPipeline(ir, vis, MaxFuser(), sinks=[sink], config=PipelineConfig(queue_size=2, **FAST))
    for frame in pipe:
        if frame.index == 3:
            break
    assert no_pipeline_threads() and ir.closed and vis.closed and sink.closed
    assert pipe.summary.stopped_by == "closed"
    assert sink.pairs[:4] == [(i, i) for i in range(4)] and len(sink.pairs) == pipe.summary.frames_written


def test_an_exception_in_the_consumer_stops_every_thread():
    ir, vis = coded_sources(250)
    pipe = FusionPipeline(ir, vis, MaxFuser(), config=PipelineConfig(queue_size=2, **FAST))

    def consume() -> None:
        for frame in pipe:
            if frame.index == 2:
                raise KeyError("consumer bug")

    with pytest.raises(KeyError, match="consumer bug"):
        consume()
    assert no_pipeline_threads() and ir.closed and vis.closed
    assert pipe.summary.stopped_by == "closed" and pipe.summary.frames_fused == 3


def test_validation_and_close_without_run():
    with pytest.raises(ConfigError):
        PipelineConfig(sync="fast")
    with pytest.raises(ConfigError, match="queue_size: expected >= 1"):
        PipelineConfig(queue_size=0)
    assert resolve_sync("auto", live=True) == "latest" and resolve_sync("auto", live=False) == "lossless"
    ir, vis = coded_sources(2)
    with pytest.raises(ConfigError, match="fuse"):
        FusionPipeline(ir, vis, object())
    sink = RecordingSink()
    with FusionPipeline(ir, vis, MaxFuser(), sinks=[sink]):
        pass
    assert sink.closed and ir.closed and vis.closed


class PolicySink(RecordingSink):
    """Records the scheduling policy of the thread that writes."""

    def __init__(self) -> None:
        super().__init__()
        self.policies: set[int] = set()

    def write(self, image, *, index=0, timestamp_s=None, name=None) -> None:
        self.policies.add(os.sched_getscheduler(0))
        super().write(image, index=index, timestamp_s=timestamp_s, name=name)


class PolicySource(ListSource):
    """Records the scheduling policy of the thread that reads."""

    def frames(self):
        self.policy = os.sched_getscheduler(0)
        yield from super().frames()


class ThreadsSource(PolicySource):
    """Also records what the pipeline asked of its decoder threads."""

    decoder_threads = "unset"

    def set_decoder_threads(self, threads):
        self.decoder_threads = threads


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this OS")
@pytest.mark.parametrize("background", [True, False])
def test_writer_and_recorded_sources_readers_run_at_idle_priority_unless_turned_off(background):
    sources = [ThreadsSource([make(i) for i in range(3)], name=role) for role, make in (("ir", ir_frame), ("vis", vis_frame))]
    sink = PolicySink()
    before = os.sched_getscheduler(0)
    config = PipelineConfig(background_writer=background, background_readers=background, **FAST)
    with FusionPipeline(*sources, MaxFuser(), sinks=[sink], config=config) as pipe:
        summary = pipe.run()
    expected = os.SCHED_IDLE if background else before
    assert summary.frames_written == 3 and sink.pairs == [(i, i) for i in range(3)]
    assert sink.policies == {expected} and [s.policy for s in sources] == [expected, expected]
    assert [s.decoder_threads for s in sources] == ([1, 1] if background else ["unset", "unset"])
    assert os.sched_getscheduler(0) == before  # the fusing (calling) thread keeps its priority


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this OS")
def test_live_sources_are_read_at_normal_priority_with_their_decoders_own_threads():
    live = ThreadsSource([ir_frame(i) for i in range(3)], name="ir", live=True)
    recorded = ThreadsSource([vis_frame(i) for i in range(3)], name="vis")
    before = os.sched_getscheduler(0)
    with FusionPipeline(live, recorded, MaxFuser(), sinks=[PolicySink()], config=PipelineConfig(pairing="index", **FAST)) as pipe:
        pipe.run()
    assert (live.policy, live.decoder_threads) == (before, "unset")  # a camera does not wait
    assert (recorded.policy, recorded.decoder_threads) == (os.SCHED_IDLE, 1)


def test_a_reader_that_exits_on_a_stop_request_is_not_taken_for_the_end_of_its_stream():
    """The race behind a Ctrl-C once reported as "streams differ in length": a reader whose put was
    refused by the stop request exits without END; the consumer must then see a stop, not an end."""
    from dstfuse_stream.workers import END, STOPPED, StopAwareQueue, StopSignal

    stop = StopSignal()
    q = StopAwareQueue(2, stop=stop, poll_s=0.01)
    assert q.get(producer_alive=lambda: False) is END  # producer gone without a stop: its stream ended
    stop.request()
    assert q.put("frame") is False
    assert q.get(producer_alive=lambda: False) is STOPPED
    stop2 = StopSignal()
    q2 = StopAwareQueue(2, stop=stop2, poll_s=0.01)

    def alive_then_stopped() -> bool:
        stop2.request()  # the stop request lands between the consumer's wait and its liveness check
        return False

    assert q2.get(producer_alive=alive_then_stopped) is STOPPED
