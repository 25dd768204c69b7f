"""Pairing policies (index / nearest timestamp)."""

from __future__ import annotations

import numpy as np
import pytest

from dstfuse_stream.errors import ConfigError
from dstfuse_stream.pairing import (
    PairingStats,
    StreamPairer,
    default_tolerance_s,
    pair_streams,
    resolve_pairing,
)
from dstfuse_stream.sources import Frame

_IMG = np.zeros((2, 2), dtype=np.uint8)


def frames(times: list[float], indices: list[int] | None = None) -> list[Frame]:
    indices = list(range(len(times))) if indices is None else indices
    return [Frame(i, t, _IMG) for i, t in zip(indices, times)]


def pairs_of(ir, vis, **kwargs) -> tuple[list[tuple[int, int]], PairingStats]:
    stats = PairingStats()
    out = [(p.ir.index, p.vis.index) for p in pair_streams(ir, vis, stats=stats, **kwargs)]
    return out, stats


def test_index_pairing_equal_lengths():
    out, stats = pairs_of(frames([0] * 5), frames([9] * 5), policy="index")
    assert out == [(i, i) for i in range(5)]
    assert stats.paired == 5 and stats.length_mismatch is None
    assert (stats.unmatched_ir, stats.unmatched_vis) == (0, 0)


@pytest.mark.parametrize(("n_ir", "n_vis", "longer"), [(5, 7, "vis"), (7, 5, "ir")])
def test_index_pairing_stops_at_shorter_and_reports(n_ir, n_vis, longer):
    out, stats = pairs_of(frames([0.0] * n_ir), frames([0.0] * n_vis), policy="index")
    assert out == [(i, i) for i in range(min(n_ir, n_vis))]
    assert stats.length_mismatch == longer
    assert stats.ended_first == ("ir" if longer == "vis" else "vis")


def test_index_pairing_skips_indices_dropped_upstream():
    ir = frames([0.0] * 4, [0, 1, 3, 4])
    vis = frames([0.0] * 4, [0, 2, 3, 4])
    out, stats = pairs_of(ir, vis, policy="index")
    assert out == [(0, 0), (3, 3), (4, 4)]
    assert (stats.unmatched_ir, stats.unmatched_vis) == (1, 1)
    assert stats.length_mismatch is None


def test_timestamp_pairing_different_fps_drops_and_counts():
    ir = frames([i / 30 for i in range(30)])  # 30 fps
    vis = frames([j / 15 for j in range(15)])  # 15 fps
    out, stats = pairs_of(ir, vis, policy="timestamp", tolerance_s=default_tolerance_s(30, 15))
    assert out == [(2 * j, j) for j in range(15)]
    assert stats.unmatched_ir == 15 and stats.unmatched_vis == 0
    assert stats.length_mismatch is None


def test_timestamp_pairing_with_constant_offset():
    ir = frames([i / 30 for i in range(10)])
    vis = frames([i / 30 + 0.010 for i in range(10)])
    out, _ = pairs_of(ir, vis, policy="timestamp", tolerance_s=1 / 60)
    assert out == [(i, i) for i in range(10)]


def test_timestamp_pairing_takes_the_nearest_within_tolerance():
    ir = frames([0.000, 0.030, 0.060])
    vis = frames([0.028])
    out, stats = pairs_of(ir, vis, policy="timestamp", tolerance_s=0.05)
    assert out == [(1, 0)]
    assert stats.unmatched_ir == 1  # frame 0 (farther); frame 2 is never read: vis had ended


def test_timestamp_pairing_drops_frames_in_a_gap():
    ir = frames([i * 0.1 for i in range(10)])
    vis = frames([i * 0.1 for i in (0, 1, 2, 6, 7, 8, 9)], [0, 1, 2, 6, 7, 8, 9])
    out, stats = pairs_of(ir, vis, policy="timestamp", tolerance_s=0.02)
    assert out == [(i, i) for i in (0, 1, 2, 6, 7, 8, 9)]
    assert stats.unmatched_ir == 3 and stats.unmatched_vis == 0


def test_pairer_asks_for_the_lookahead_frame_only_when_needed():
    pairer = StreamPairer(policy="timestamp", tolerance_s=0.05)
    assert pairer.need() == "ir"
    pairer.push("ir", Frame(0, 0.00, _IMG))
    assert pairer.need() == "vis"
    pairer.push("vis", Frame(0, 0.02, _IMG))
    # IR is the earlier head: its successor might be closer to the visible frame
    assert pairer.need() == "ir" and pairer.pop() is None
    pairer.push("ir", Frame(1, 0.04, _IMG))
    pair = pairer.pop()
    assert (pair.ir.index, pair.vis.index) == (0, 0)  # |0.00-0.02| <= |0.04-0.02|


def test_defaults_and_policy_resolution():
    assert default_tolerance_s(30, 15) == pytest.approx(1 / 30)
    assert default_tolerance_s(None, None) == 0.05
    assert resolve_pairing("auto", live=True, ir_fps=30, vis_fps=30) == "timestamp"
    assert resolve_pairing("auto", live=False, ir_fps=30, vis_fps=30) == "index"
    assert resolve_pairing("auto", live=False, ir_fps=30, vis_fps=22) == "timestamp"
    assert resolve_pairing("index", live=True, ir_fps=None, vis_fps=None) == "index"
    with pytest.raises(ConfigError):
        resolve_pairing("nearest", live=False, ir_fps=None, vis_fps=None)
    with pytest.raises(ConfigError):
        StreamPairer(policy="auto")
