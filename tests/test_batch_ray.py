"""dstfuse-batch on a local Ray runtime (started once for this module): one output per input with
every frame, the real model in the workers (loaded once each), a broken input reported while the
rest finish, re-runs that skip finished outputs, and SIGTERM/Ctrl-C leaving no partial output."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import ir_frame, read_video, vis_frame, write_pair_folders, write_video

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]" (CI installs it)')

from dstfuse_stream.batch.cli import main  # noqa: E402
from dstfuse_stream.fuser import Fuser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: input name -> pairs; chunk size 5 splits "long" into 5 + 5 + 2
SIZES = {"a": 4, "b": 5, "c": 3, "long": 12, "broken": 4}
MODEL = ["--backend", "torch", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


def run_batch(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def job(ray_runtime, tmp_path_factory):
    """Five inputs, one with an unreadable image, fused once into PNG folders by two workers."""
    root = tmp_path_factory.mktemp("batch")
    for name, n in SIZES.items():
        write_pair_folders(root / name, n)
    (root / "broken" / "vi" / "0002.png").write_bytes(b"not a png")
    argv = [*(str(root / name) for name in SIZES), "--out", str(root / "out"), "--format", "frames",
            "--chunk-size", "5", *MODEL, "--no-progress"]
    code, out, err = run_batch(argv)
    return {"root": root, "out": root / "out", "argv": argv, "code": code, "stdout": out, "stderr": err,
            "summary": json.loads((root / "out" / "batch_summary.json").read_text())}


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_one_output_per_input_with_every_frame(job):
    out = job["out"]
    assert job["code"] == 2, job["stderr"]  # the broken input
    for name in ("a", "b", "c"):
        assert pngs(out / name) == [f"{i:04d}.png" for i in range(SIZES[name])]
        summary = json.loads((out / name / "summary.json").read_text())["summary"]
        assert summary["frames_written"] == SIZES[name] and summary["stopped_by"] == "end"
    parts = sorted(p.name for p in (out / "long").iterdir())
    assert parts == ["part-0000", "part-0001", "part-0002"]
    assert [pngs(out / "long" / p) for p in parts] == [
        [f"{i:04d}.png" for i in range(0, 5)], [f"{i:04d}.png" for i in range(5, 10)], ["0010.png", "0011.png"]]
    assert not [p for p in out.rglob(".tmp-*")]


def test_workers_fuse_with_the_model_they_loaded_once(job):
    """What a worker wrote is what a local Fuser with the same model gives (<= 1 grey level)."""
    fuser = Fuser(backend="torch", device="cpu", threads=1)
    for name in ("a", "long/part-0002"):
        for png in pngs(job["out"] / name):
            got = cv2.imread(str(job["out"] / name / png))
            src = job["root"] / name.split("/")[0]
            want = fuser(cv2.imread(str(src / "ir" / png), cv2.IMREAD_GRAYSCALE), cv2.imread(str(src / "vi" / png)))
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, (name, png)
    workers = job["summary"]["workers"]
    assert len(workers) == 2 and [w["fuser_loads"] for w in workers] == [1, 1]
    assert sum(w["items"] for w in workers) == 7 and sum(w["frames"] for w in workers) == 4 + 5 + 3 + 12
    assert all(w["backend"].startswith("torch") for w in workers)


def test_broken_input_is_reported_and_the_rest_finish(job):
    totals = job["summary"]["totals"]
    assert (totals["sequences"], totals["work_items"], totals["done"], totals["failed"]) == (5, 7, 6, 1)
    assert totals["frames"] == 24 and totals["wall_s"] > 0
    [failed] = [i for i in job["summary"]["items"] if i["status"] == "failed"]
    assert failed["key"] == "broken" and "0002.png" in failed["error"]
    assert f"dstfuse-batch: failed broken: image {str(job['root'] / 'broken' / 'vi' / '0002.png')!r}" in job["stderr"]
    assert "1 of 7 work item(s) failed" in job["stderr"]
    assert not (job["out"] / "broken").exists()


def test_rerun_skips_finished_outputs_and_redoes_missing_ones(job):
    out = job["out"]
    argv = [a for a in job["argv"] if "broken" not in a]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    code, stdout, _ = run_batch(argv)  # nothing left to do: Ray is not even needed
    assert code == 0
    assert "4 sequence(s), 6 work item(s): 0 to run, 6 finished earlier" in stdout
    assert f"skipped long/part-0001: finished output {out / 'long' / 'part-0001'} (5 frames)" in stdout
    assert "done 0, skipped 6, failed 0" in stdout

    (out / "b" / "summary.json").unlink()  # an unfinished output: runs again, alone
    code, stdout, _ = run_batch(argv)
    assert code == 0 and "6 work item(s): 1 to run, 5 finished earlier" in stdout and "done 1, skipped 5" in stdout
    assert pngs(out / "b") == [f"{i:04d}.png" for i in range(5)] and (out / "b" / "summary.json").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p.parent.name != "b")
    assert json.loads((out / "batch_summary.json").read_text())["totals"]["frames_skipped"] == 4 + 3 + 12


def test_sigterm_stops_the_job_and_leaves_no_partial_output(ray_runtime, tmp_path):
    """A separate dstfuse-batch process joins this module's runtime (--ray-address) and is stopped
    while its worker writes: exit 143, nothing under the final name, no temporaries left."""
    clip = tmp_path / "clip"
    clip.mkdir()
    n = 3000  # far more than the worker fuses before the signal
    write_video(clip / "ir.mkv", [ir_frame(i % 256) for i in range(n)])
    write_video(clip / "vi.mkv", [vis_frame(i % 256) for i in range(n)])
    out = tmp_path / "out"
    env = {**os.environ, "GOMP_SPINCOUNT": "10000"}
    address = ray_runtime.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "dstfuse_stream.batch.cli", str(clip), "--out", str(out), *MODEL,
                             "--ray-address", address, "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".tmp-*.clip.mp4")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)  # some frames encoded
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: finished outputs kept, unfinished ones removed" in err
    assert sorted(p.name for p in out.iterdir()) == []


def test_workers_that_the_cluster_cannot_hold_are_a_one_line_error(ray_runtime, tmp_path):
    write_pair_folders(tmp_path / "a", 1)
    code, _, err = run_batch([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--num-gpus-per-worker", "1", *MODEL])
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "dstfuse-batch: error: the Ray cluster has 2 CPUs and 0 GPUs; one worker needs 1 CPUs and 1 GPUs")
    assert not (tmp_path / "out" / "a.mp4").exists()
