"""The dstfuse-stream command: outputs, summary, exit codes, SIGINT, real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
from synthetic import MaxFuser, decode_index, ir_frame, read_video, vis_frame, write_pair_folders, write_pair_videos, write_video

from dstfuse_stream.checkpoint import default_weights_path, load_checkpoint
from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.cli import main, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def weights() -> Path:
    """The shipped weights; they are part of the package, so their absence is a failure."""
    path = default_weights_path()
    assert path.is_file(), f"shipped weights missing: {path}"
    return path


def shipped_config(weights: Path) -> dict:
    """The checkpoint's model config as the runtime resolves it (defaults filled in)."""
    return DSTFuseConfig.from_dict(load_checkpoint(weights)["config"]).to_dict()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("dstfuse-stream: error: ")
    return lines[0]


def test_video_pair_to_mp4_with_preview_timing_and_summary(tmp_path, capsys):
    ir, vis = write_pair_videos(tmp_path, 12)
    out = tmp_path / "out" / "fused.mp4"
    code = run_cli(
        ["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--preview", str(tmp_path / "prev.mp4"),
         "--timing-log", str(tmp_path / "t.jsonl"), "--no-progress"],
        fuser=MaxFuser(),
    )
    assert code == 0
    frames = read_video(out)
    assert [(decode_index(f, half="left"), decode_index(f, half="right")) for f in frames] == [(i, i) for i in range(12)]
    assert len(read_video(tmp_path / "prev.mp4")) == 12
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(12)) and all(r["fuse_ms"] >= 0 for r in rows)
    data = json.loads((tmp_path / "out" / "fused.summary.json").read_text())
    s = data["summary"]
    assert s["frames_written"] == 12 and s["frames_read"] == {"ir": 12, "vis": 12} and s["stopped_by"] == "end"
    assert data["config"]["resolved"]["pairing"] == "index" and data["config"]["pipeline"]["queue_size"] == 4
    assert data["config"]["outputs"][0]["codec"] == "libx264" and data["config"]["outputs"][0]["tune"] == "zerolatency"
    assert data["config"]["pipeline"]["background_writer"] is True and data["config"]["pipeline"]["background_readers"] is True
    stdout = capsys.readouterr().out
    assert "written 12" in stdout and "p99" in stdout


def test_tune_none_and_reader_writer_priority_normal_reach_the_outputs_and_the_pipeline(tmp_path):
    ir, vis = write_pair_videos(tmp_path, 3)
    out = tmp_path / "fused.mp4"
    code = run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--tune", "none", "--writer-priority", "normal",
                    "--reader-priority", "normal", "--no-progress"], fuser=MaxFuser())
    assert code == 0 and len(read_video(out)) == 3
    config = json.loads((tmp_path / "fused.summary.json").read_text())["config"]
    assert config["outputs"][0]["tune"] is None and config["pipeline"]["background_writer"] is False
    assert config["pipeline"]["background_readers"] is False


def test_pairs_llvip_layout_to_image_folder(tmp_path):
    root = write_pair_folders(tmp_path / "llvip", 3, ir_dir="infrared/test", vis_dir="visible/test", ext=".jpg")
    code = run_cli(["--pairs", str(root), "--out", str(tmp_path / "frames") + "/", "--fps", "2", "--no-progress"],
                   fuser=MaxFuser())
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "summary.json"]
    img = cv2.imread(str(tmp_path / "frames" / "0002.png"))
    assert (decode_index(img, half="left"), decode_index(img, half="right")) == (2, 2)


def test_real_lite_model_with_resize_and_gray(tmp_path, weights):
    ir, vis = write_pair_videos(tmp_path, 3)
    out = tmp_path / "fused.mp4"
    code = main(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--weights", str(weights),
                 "--backend", "torch", "--device", "cpu", "--resize", "64x16", "--gray", "--no-progress"])
    assert code == 0
    frames = read_video(out)
    assert len(frames) == 3 and frames[0].shape == (16, 64)
    s = json.loads((tmp_path / "fused.summary.json").read_text())
    assert s["summary"]["processing_size_wh"] == [64, 16] and s["config"]["output"] == "gray"
    assert s["config"]["model_config"] == shipped_config(weights)


def test_default_backend_auto_end_to_end(tmp_path, capsys):
    """No --backend, --weights or --device: what a user gets. On a CPU machine that is ONNX Runtime
    on a first-use export of the shipped weights (cached for the test session)."""
    ir, vis = write_pair_videos(tmp_path, 3)
    out = tmp_path / "fused.mp4"
    assert main(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--max-size", "96", "--no-progress"]) == 0
    frames = read_video(out)
    assert len(frames) == 3 and frames[0].shape == (20, 96)
    config = json.loads((tmp_path / "fused.summary.json").read_text())["config"]
    assert config["args"]["backend"] == "auto" and config["backend_selection"]
    if not torch.cuda.is_available():
        assert " onnx " in f" {config['backend']}" and "CPUExecutionProvider" in config["backend"]
    assert config["model_config"] == shipped_config(default_weights_path())
    assert "written 3" in capsys.readouterr().out


def test_different_lengths_stop_at_the_shorter_and_exit_2(tmp_path, capsys):
    ir, vis = write_pair_videos(tmp_path, 6, 8)
    code = run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(tmp_path / "o.mp4"), "--no-progress"],
                   fuser=MaxFuser())
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "differ in length" in line and "6 frames" in line
    assert len(read_video(tmp_path / "o.mp4")) == 6
    assert json.loads((tmp_path / "o.summary.json").read_text())["summary"]["length_mismatch"] == "vis"


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    ir, vis = write_pair_videos(tmp_path, 3)
    (tmp_path / "text.mp4").write_text("garbage " * 100)
    (tmp_path / "noimg").mkdir()
    (tmp_path / "noimg" / "readme.txt").write_text("x")
    cases = {
        "file not found": ["--ir", str(tmp_path / "nope.mp4"), "--vis", str(vis)],
        "cannot open": ["--ir", str(ir), "--vis", str(tmp_path / "text.mp4")],
        "no images": ["--ir", str(tmp_path / "noimg"), "--vis", str(vis)],
        "camera 57": ["--ir", "cam57", "--vis", "cam58"],
        "expected sub-folders": ["--pairs", str(tmp_path / "noimg")],
        "homography": ["--ir", str(ir), "--vis", str(vis), "--homography", str(tmp_path / "H.txt")],
        "checkpoint": ["--ir", str(ir), "--vis", str(vis), "--weights", str(tmp_path / "none.pt"), "--backend", "torch", "--device", "cpu"],
    }
    for match, argv in cases.items():
        assert main([*argv, "--out", str(tmp_path / "x.mp4"), "--no-progress"]) == 2, match
        assert match in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.mp4").exists()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_subprocess_bad_input_prints_one_line_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dstfuse_stream", "--ir", str(tmp_path / "a.mp4"), "--vis", "cam0", "--out", "o.mp4"],
        capture_output=True, text=True, timeout=60, env=_env(), cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert one_error_line(proc.stderr) == f"dstfuse-stream: error: video {str(tmp_path / 'a.mp4')!r}: file not found"


@pytest.mark.slow
def test_sigint_leaves_a_playable_video_with_the_frames_so_far(tmp_path, weights):
    n = 250
    ir = write_video(tmp_path / "ir.mkv", [ir_frame(i) for i in range(n)])
    vis = write_video(tmp_path / "vi.mkv", [vis_frame(i) for i in range(n)])
    out, log = tmp_path / "out.mp4", tmp_path / "t.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstfuse_stream.cli", "--ir", str(ir), "--vis", str(vis), "--out", str(out),
         "--timing-log", str(log), "--weights", str(weights), "--backend", "torch", "--device", "cpu", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 4:  # header + 3 frames
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((tmp_path / "out.summary.json").read_text())["summary"]
    frames = read_video(out)
    assert 0 < len(frames) == summary["frames_written"] < n
    assert summary["stopped_by"] == "stop" and summary["extra"]["signal"] == "SIGINT"
    assert len(log.read_text().splitlines()) == len(frames) + 1


# ---------------------------------------------------------------------------------------------
# real data (skipped without ../shared/data)


def test_real_frame_sequence(shared_data, tmp_path, weights):
    root = shared_data / "sequences" / "m3svd_frames_0111_1753"
    out = tmp_path / "sample_fused.mp4"
    code = main(["--pairs", str(root), "--out", str(out), "--preview", str(tmp_path / "prev.mp4"),
                 "--max-frames", "3", "--max-size", "160", "--weights", str(weights), "--backend", "torch", "--device", "cpu", "--no-progress"])
    assert code == 0
    frames = read_video(out)
    assert len(frames) == 3 and frames[0].shape == (120, 160)
    s = json.loads((tmp_path / "sample_fused.summary.json").read_text())["summary"]
    assert s["frames_written"] == 3 and s["stopped_by"] == "max_frames" and s["temporal_stability"]["steps"] == 2


def test_real_video_pair(shared_data, tmp_path, weights):
    seq = shared_data / "sequences" / "m3svd_0111_1716"
    out = tmp_path / "fused.mp4"
    code = main(["--ir", str(seq / "ir.mp4"), "--vis", str(seq / "vi.mp4"), "--out", str(out), "--max-frames", "2",
                 "--max-size", "160", "--weights", str(weights), "--backend", "torch", "--device", "cpu", "--no-progress"])
    assert code == 0
    assert len(read_video(out)) == 2
    s = json.loads((tmp_path / "fused.summary.json").read_text())
    assert s["config"]["sources"]["ir"]["fps"] == pytest.approx(30) and s["summary"]["pairing"] == "index"



def test_sigint_deferred_holds_ctrl_c_until_the_block_ends():
    """A Ctrl-C while C extensions import would surface as an ImportError: it is held, then raised."""
    import os
    import signal

    from dstfuse_stream.cliutil import sigint_deferred

    before = signal.getsignal(signal.SIGINT)
    reached_end_of_block = False
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes: give it a chance inside the block
                pass
            reached_end_of_block = True
    assert reached_end_of_block and signal.getsignal(signal.SIGINT) is before
    with sigint_deferred():  # no signal: nothing raised
        pass
