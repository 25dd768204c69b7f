"""Frames in flight at once: the backend pool, Fuser.process_many and the pipeline keep order and count."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from synthetic import ListSource, decode_index, ir_frame, vis_frame

from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.pool import BackendPool
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.fuser import Fuser
from dstfuse_stream.pipeline import FusionPipeline, PipelineConfig
from dstfuse_stream.sinks import Sink


class MaxBackend(FusionBackend):
    """``max(ir, vis)``; records which thread called; waits at ``barrier`` (when given) so two calls must overlap."""

    accepts_uint8 = True

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        super().__init__(device="cpu", precision="fp32")
        self.barrier, self.threads, self.closed = barrier, [], False

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)  # raises BrokenBarrierError unless the other member is busy too
        return np.maximum(ir, vis).astype(np.float32) / 255

    def close(self) -> None:
        self.closed = True


def test_process_many_fuses_two_frames_at_once_and_keeps_their_order():
    barrier = threading.Barrier(2)
    members = [MaxBackend(barrier), MaxBackend(barrier)]
    fuser = Fuser(backend=BackendPool(members), output="gray")
    assert fuser.concurrent_frames == 2
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 256, (6, 8), dtype=np.uint8), rng.integers(0, 256, (6, 8), dtype=np.uint8), None) for _ in range(4)]
    frames = fuser.process_many(pairs)
    assert [f.fused.tolist() for f in frames] == [np.maximum(ir, vis).tolist() for ir, vis, _ in pairs]
    assert len(members[0].threads) == len(members[1].threads) == 2  # both members worked, two frames each
    fuser.close()
    assert all(m.closed for m in members)


def test_a_pool_needs_members_and_settings_go_on_the_fuser():
    with pytest.raises(ConfigError, match="expected at least one backend"):
        BackendPool([])
    with pytest.raises(ConfigError, match=r"set \['concurrent_frames'\] on it instead"):
        Fuser(backend=MaxBackend(), concurrent_frames=2)


class Recording(Sink):
    def __init__(self) -> None:
        self.codes: list[tuple[int, int]] = []

    def write(self, image, *, index=0, timestamp_s=None, name=None) -> None:
        self.codes.append((decode_index(image, half="left"), decode_index(image, half="right")))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("n", "max_frames", "expected"), [(7, None, 7), (7, 4, 4)])
def test_the_pipeline_with_two_frames_in_flight_writes_every_frame_once_in_order(n, max_frames, expected):
    sink = Recording()
    fuser = Fuser(backend=BackendPool([MaxBackend(), MaxBackend()]))
    sources = (ListSource([ir_frame(i) for i in range(n)], name="ir"), ListSource([vis_frame(i) for i in range(n)], name="vis"))
    config = PipelineConfig(max_frames=max_frames, poll_s=0.01, join_timeout_s=2.0)
    with FusionPipeline(*sources, fuser, sinks=[sink], config=config, close_fuser=True) as pipe:
        summary = pipe.run()
    assert sink.codes == [(i, i) for i in range(expected)]
    assert (summary.frames_fused, summary.frames_written) == (expected, expected)


def test_a_named_backend_with_two_frames_in_flight_splits_the_threads(tmp_path, lite_model):
    weights = save_checkpoint(tmp_path / "lite.pt", lite_model, epoch=0)
    previous = torch.get_num_threads()
    try:
        with Fuser(weights, backend="torch", device="cpu", concurrent_frames=2, threads=2) as pooled, \
                Fuser(weights, backend="torch", device="cpu") as single:
            assert isinstance(pooled.backend, BackendPool) and len(pooled.backend.backends) == 2
            assert torch.get_num_threads() == 1  # 2 threads shared by 2 backends
            rng = np.random.default_rng(1)
            pairs = [(rng.integers(0, 256, (20, 24), dtype=np.uint8), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), None)
                     for _ in range(3)]
            got = pooled.process_many(pairs)
            want = [single.process(ir, vis) for ir, vis, _ in pairs]
            assert all(np.array_equal(g.fused, w.fused) for g, w in zip(got, want))
    finally:
        torch.set_num_threads(previous)


def test_auto_concurrent_frames_two_for_recorded_sources_on_a_cpu_one_otherwise(monkeypatch):
    from dstfuse_stream.backends import precision
    from dstfuse_stream.streaming import auto_concurrent_frames

    def pair(live: bool = False):
        return ListSource([ir_frame(0)], live=live), ListSource([vis_frame(0)])

    monkeypatch.setattr(precision, "default_threads", lambda: 2)
    assert auto_concurrent_frames(*pair(), device="cpu") == 2  # recorded files and folders: throughput
    assert auto_concurrent_frames(*pair(live=True), device="cpu") == 1  # a camera or stream: lowest latency
    assert auto_concurrent_frames(*pair(), device="cpu", threads=1) == 1  # one thread cannot be split
    assert auto_concurrent_frames(*pair(), backend="tensorrt", device="cpu") == 1
    assert auto_concurrent_frames(*pair(), backend=MaxBackend(), device="cpu") == 1  # one object cannot be copied
    monkeypatch.setattr(precision, "default_threads", lambda: 1)
    assert auto_concurrent_frames(*pair(), device="cpu") == 1
    assert auto_concurrent_frames(*pair(), device="cpu", threads=4) == 2


def test_stream_fuses_recorded_sources_two_at_a_time_by_default_with_the_same_frames(tmp_path, lite_model, monkeypatch):
    import dstfuse_stream as ds
    from dstfuse_stream.backends import precision

    monkeypatch.setattr(precision, "default_threads", lambda: 2)
    weights = save_checkpoint(tmp_path / "lite.pt", lite_model, epoch=0)
    previous = torch.get_num_threads()
    try:
        runs = {}
        for setting in ("auto", 1):
            sources = [ListSource([ir_frame(i) for i in range(5)]), ListSource([vis_frame(i) for i in range(5)])]
            with ds.stream(*sources, weights=weights, backend="torch", device="cpu", concurrent_frames=setting, poll_s=0.01) as frames:
                runs[setting] = (frames.fuser.concurrent_frames, [f.fused.copy() for f in frames])
        assert runs["auto"][0] == 2 and runs[1][0] == 1
        assert len(runs["auto"][1]) == 5 and all(np.array_equal(a, b) for a, b in zip(runs["auto"][1], runs[1][1]))
    finally:
        torch.set_num_threads(previous)
