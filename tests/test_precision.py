"""Precision: CPU feature detection, thread defaults, and ``precision="auto"``'s measured choice (fake clocks)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dstfuse_stream.backends import autoselect
from dstfuse_stream.backends.autoselect import AutoPrecisionBackend, choose_precision, clear_choice_cache
from dstfuse_stream.backends.base import FusionBackend
from dstfuse_stream.backends.precision import (
    CpuFeatures,
    default_threads,
    parse_cpu_flags,
    resolve_precision,
)
from dstfuse_stream.errors import ConfigError

XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
EPYC = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD = "model name\t: Intel(R) Core(TM) i5-4590\nflags\t\t: fpu sse4_2 avx avx2 fma\n"


def test_cpu_flags_are_read_from_cpuinfo():
    xeon = parse_cpu_flags(XEON_AMX)
    assert xeon == CpuFeatures("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", avx2=True, avx512f=True, avx512_vnni=True,
                               avx512_bf16=True, amx_bf16=True, amx_int8=True)
    assert xeon.summary() == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (AMX yes, AVX512-BF16 yes, VNNI yes)"
    epyc = parse_cpu_flags(EPYC)
    assert (epyc.amx_bf16, epyc.native_bf16, epyc.int8_dot) == (False, True, True)
    assert epyc.summary() == "AMD EPYC (AMX no, AVX512-BF16 yes, VNNI yes)"
    old = parse_cpu_flags(OLD)
    assert (old.native_bf16, old.int8_dot, old.avx2) == (False, False, True)
    assert old.to_dict()["summary"] == "Intel(R) Core(TM) i5-4590 (AMX no, AVX512-BF16 no, VNNI no)"


def test_default_threads_follow_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert default_threads() == 3


def test_precision_names():
    assert resolve_precision("auto") is None and resolve_precision(None) is None
    assert [resolve_precision(p) for p in ("fp32", "bf16", "fp16", "int8")] == ["fp32", "bf16", "fp16", "int8"]
    with pytest.raises(ConfigError, match=r"precision 'int4': expected one of \['auto', 'fp32', 'bf16', 'fp16', 'int8'\]"):
        resolve_precision("int4")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed(clock: FakeClock, cost_s: float, output: np.ndarray):
    def call() -> np.ndarray:
        clock.now += cost_s
        return output

    return call


REF = np.linspace(0.0, 0.9, 64 * 64, dtype=np.float32).reshape(64, 64)


def off_by(db: float) -> np.ndarray:
    """REF plus a constant offset whose PSNR vs REF is exactly ``db``."""
    return (REF + np.float32(10 ** (-db / 20))).astype(np.float32)


def test_choose_precision_takes_the_fastest_within_the_gate():
    clock = FakeClock()
    candidates = {
        "fp32": timed(clock, 0.100, REF),
        "int8": timed(clock, 0.060, off_by(41.0)),
        "bf16": timed(clock, 0.030, off_by(30.0)),  # fastest, but 30 dB < 35 dB
    }
    chosen, measured = choose_precision(candidates, rounds=3, clock=clock)
    assert chosen == "int8"
    assert [m.precision for m in measured] == ["fp32", "int8", "bf16"]
    assert [round(m.median_ms, 6) for m in measured] == [100.0, 60.0, 30.0]
    assert measured[1].psnr_db == pytest.approx(41.0, abs=0.01) and measured[2].psnr_db == pytest.approx(30.0, abs=0.01)
    assert [m.passed for m in measured] == [True, True, False]


def test_choose_precision_keeps_fp32_when_the_gain_is_noise():
    clock = FakeClock()
    chosen, _ = choose_precision({"fp32": timed(clock, 0.100, REF), "int8": timed(clock, 0.097, off_by(50.0))}, clock=clock)
    assert chosen == "fp32"  # 3 % faster < min_gain 5 %
    with pytest.raises(ConfigError, match="expected a 'fp32' candidate"):
        choose_precision({"int8": timed(clock, 0.1, REF)}, clock=clock)


class Fake(FusionBackend):
    accepts_uint8 = True

    def __init__(self, name: str, cost_s: float, offset: float, clock: FakeClock) -> None:
        super().__init__(device="cpu", precision=name)
        self.cost_s, self.offset, self.clock, self.calls, self.closed = cost_s, offset, clock, 0, False

    def fuse_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.clock.now += self.cost_s
        return np.clip(ir.astype(np.float32) / 255 + self.offset, 0, 1)

    def close(self) -> None:
        self.closed = True


def test_auto_precision_backend_measures_once_per_size_and_shares_the_choice(monkeypatch):
    clear_choice_cache()
    clock = FakeClock()
    monkeypatch.setattr(autoselect.time, "perf_counter", clock)

    def make():
        return {"fp32": Fake("fp32", 0.1, 0.0, clock), "int8": Fake("int8", 0.05, 10 ** (-45 / 20), clock)}

    first = make()
    backend = AutoPrecisionBackend(first, cache_key=("weights", 0.5, None), rounds=2)
    assert backend.precision == "auto" and backend.choices == {}
    ir = np.full((1, 1, 8, 12), 100, np.uint8)
    out = backend.fuse_batch(ir, ir)
    assert backend.precision == "int8" and list(backend.choices) == [(12, 8)]
    assert [(m.precision, m.passed) for m in backend.choices[(12, 8)].measurements] == [("fp32", True), ("int8", True)]
    assert (first["fp32"].calls, first["int8"].calls) == (3, 4)  # 1 warm-up + 2 rounds each, then the frame on int8
    np.testing.assert_allclose(out, 100 / 255 + 10 ** (-45 / 20), rtol=1e-6)
    backend.fuse_batch(ir, ir)
    assert (first["fp32"].calls, first["int8"].calls) == (3, 5)  # same size: no new measurement
    backend.fuse_batch(np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 1, 4, 4), np.uint8))
    assert first["fp32"].calls == 6 and set(backend.choices) == {(12, 8), (4, 4)}
    second = make()
    again = AutoPrecisionBackend(second, cache_key=("weights", 0.5, None), rounds=2)
    again.fuse_batch(ir, ir)
    assert (second["fp32"].calls, second["int8"].calls) == (0, 1)  # the process-wide cache answered
    assert "12x8: int8 (fp32 100.0 ms, int8 50.0 ms)" in again.describe()
    again.close()
    assert second["fp32"].closed and second["int8"].closed
    clear_choice_cache()


def test_backends_starting_together_share_one_measurement():
    """Two copies (a BackendPool) whose first frames arrive at once: one measures, the other waits
    and takes its choice, so both run the same precision (no frame-to-frame precision flips)."""
    clear_choice_cache()
    started, release = threading.Event(), threading.Event()

    class Slow(Fake):
        def fuse_batch(self, ir, vis):
            started.set()
            release.wait(5)  # hold the first measurement open while the second copy asks
            return super().fuse_batch(ir, vis)

    clock = FakeClock()  # real perf_counter: the 0.1 / 0.05 s costs are not timed here, only counted
    copies = [{"fp32": Slow("fp32", 0.0, 0.0, clock), "int8": Slow("int8", 0.0, 10 ** (-45 / 20), clock)} for _ in range(2)]
    backends = [AutoPrecisionBackend(c, cache_key=("weights", 0.5, 1), rounds=1) for c in copies]
    ir = np.full((1, 1, 8, 12), 100, np.uint8)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(backends[0].fuse_batch, ir, ir)
        assert started.wait(5)
        second = pool.submit(backends[1].fuse_batch, ir, ir)
        release.set()
        first.result(5), second.result(5)
    measured = [sum(b.calls for b in c.values()) for c in copies]
    assert sorted(measured) == [1, 5]  # one copy: warm-up + 1 round per candidate (4) + its frame; the other: its frame only
    assert backends[0].precision == backends[1].precision
    assert backends[0].choices[(12, 8)] is backends[1].choices[(12, 8)]
    clear_choice_cache()


def test_a_stored_choice_is_reused_by_a_later_process_and_a_bad_file_is_measured_again(tmp_path, monkeypatch):
    from dstfuse_stream.backends.autoselect import ChoiceStore

    clock = FakeClock()
    monkeypatch.setattr(autoselect.time, "perf_counter", clock)

    def make():
        return {"fp32": Fake("fp32", 0.1, 0.0, clock), "int8": Fake("int8", 0.05, 10 ** (-45 / 20), clock)}

    store = ChoiceStore(tmp_path / "cache" / ChoiceStore.FILENAME)
    key = ("weights", 0.5, 2, "torch 2.13.0", "AMD EPYC (AMX no, AVX512-BF16 yes, VNNI yes)")
    ir = np.full((1, 1, 8, 12), 100, np.uint8)
    clear_choice_cache()
    first = make()
    AutoPrecisionBackend(first, cache_key=key, store=store, rounds=2).fuse_batch(ir, ir)
    assert first["fp32"].calls == 3  # measured
    saved = json.loads(store.path.read_text())
    assert list(saved) == ['["weights", "0.5", "2", "torch 2.13.0", "AMD EPYC (AMX no, AVX512-BF16 yes, VNNI yes)", 12, 8]']
    assert next(iter(saved.values()))["chosen"] == "int8"

    clear_choice_cache()  # a new process: only the file remains
    second = make()
    again = AutoPrecisionBackend(second, cache_key=key, store=store, rounds=2)
    again.fuse_batch(ir, ir)
    assert (second["fp32"].calls, second["int8"].calls) == (0, 1) and again.precision == "int8"
    assert f"stored in {store.path}" in again.describe() and "int8 50.0 ms" in again.describe()

    clear_choice_cache()  # another CPU (or library version): its own measurement
    other = make()
    AutoPrecisionBackend(other, cache_key=(*key[:-1], "Intel Xeon (AMX yes, AVX512-BF16 yes, VNNI yes)"), store=store, rounds=2).fuse_batch(ir, ir)
    assert other["fp32"].calls == 3 and len(json.loads(store.path.read_text())) == 2

    clear_choice_cache()
    store.path.write_text("{not json")
    broken = make()
    AutoPrecisionBackend(broken, cache_key=key, store=store, rounds=2).fuse_batch(ir, ir)
    assert broken["fp32"].calls == 3 and len(json.loads(store.path.read_text())) == 1  # measured, file rewritten
    clear_choice_cache()


def test_a_store_that_cannot_be_written_only_costs_the_measurement(tmp_path):
    from dstfuse_stream.backends.autoselect import ChoiceStore, PrecisionChoice

    (tmp_path / "file").write_text("x")
    store = ChoiceStore(tmp_path / "file" / "cache" / ChoiceStore.FILENAME)  # mkdir fails: ENOTDIR
    store.put("key", PrecisionChoice((4, 4), "fp32", ()))  # logged, not raised
    assert store.get("key") is None and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
