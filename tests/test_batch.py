"""dstfuse-batch without Ray: input discovery, work items and their outputs, one item's atomic run,
the dry run. The Ray scheduling itself is tested in test_batch_ray.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import pytest
from synthetic import MaxFuser, decode_index, ir_frame, read_video, vis_frame, write_pair_folders, write_pair_videos, write_video

from dstfuse_stream.batch.cli import main
from dstfuse_stream.batch.job import BatchSettings, run_item
from dstfuse_stream.batch.plan import find_sequences, finished_frames, plan_items
from dstfuse_stream.errors import BackendError, ConfigError, SourceError
from dstfuse_stream.fuser import Fuser


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def coded_indices(image_or_frame) -> tuple[int, int]:
    return decode_index(image_or_frame, half="left"), decode_index(image_or_frame, half="right")


def test_every_input_kind_is_found_and_named(tmp_path):
    write_pair_folders(tmp_path / "pairs", 3)
    write_pair_folders(tmp_path / "llvip", 2, ir_dir="infrared/train", vis_dir="visible/train", ext=".jpg")
    write_pair_folders(tmp_path / "llvip", 1, ir_dir="infrared/test", vis_dir="visible/test", ext=".jpg")
    (tmp_path / "clip").mkdir()
    write_pair_videos(tmp_path / "clip", 2)  # clip/ir.mkv + clip/vi.mkv
    for name in ("x", "y"):  # a pairs root of videos: infrared/<name>.mkv + visible/<name>.mkv
        for side, frame in (("infrared", ir_frame), ("visible", vis_frame)):
            (tmp_path / "m3svd" / side).mkdir(parents=True, exist_ok=True)
            write_video(tmp_path / "m3svd" / side / f"{name}.mkv", [frame(i) for i in range(2)])
    write_video(tmp_path / "m3svd" / "infrared" / "z.mkv", [ir_frame(0)])  # no visible partner: ignored
    found = find_sequences([tmp_path / "pairs", tmp_path / "llvip", tmp_path / "clip", tmp_path / "m3svd"])
    assert [(s.name, s.kind) for s in found] == [
        ("pairs", "images"), ("llvip", "images"), ("clip", "video"), ("x", "video"), ("y", "video")]
    assert [p[0].name for p in found[1].pairs] == ["0000.jpg", "0001.jpg", "0000.jpg"]  # test split then train
    assert (found[2].ir.name, found[2].vis.name) == ("ir.mkv", "vi.mkv")
    assert found[3].ir == tmp_path / "m3svd" / "infrared" / "x.mkv" and found[3].vis.parent.name == "visible"
    only_test = find_sequences([tmp_path / "llvip"], split="test")
    assert len(only_test[0].pairs) == 1
    # a dataset folder: each sub-folder that is a sequence, in name order
    assert [s.name for s in find_sequences([tmp_path])] == ["clip", "llvip", "x", "y", "pairs"]


def test_globs_pair_files_whose_wildcards_match(tmp_path, caplog):
    for seq in ("cam1", "cam2", "cam3"):
        (tmp_path / seq).mkdir()
        write_pair_videos(tmp_path / seq, 2)
    (tmp_path / "cam3" / "vi.mkv").unlink()  # IR only: ignored with a warning
    found = find_sequences([tmp_path], ir_glob="*/ir.mkv", vis_glob="*/vi.mkv")
    assert [(s.name, s.ir.parent.name, s.vis.parent.name) for s in found] == [("cam1", "cam1", "cam1"), ("cam2", "cam2", "cam2")]
    assert "1 file(s) matched only one" in caplog.text
    deep = find_sequences([tmp_path / "cam1"], ir_glob="**/ir.mkv", vis_glob="**/vi.mkv")  # ** may match nothing
    assert [s.name for s in deep] == ["cam1"]


def test_bad_inputs_are_user_errors(tmp_path, caplog):
    write_pair_folders(tmp_path / "a" / "same", 1)
    write_pair_folders(tmp_path / "b" / "same", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a" / "odd" / "ir").mkdir(parents=True)  # a broken sequence in a dataset folder: skipped, said
    (tmp_path / "a" / "odd" / "vi").mkdir()
    assert [s.name for s in find_sequences([tmp_path / "a"])] == ["same"]
    assert f"skipped {tmp_path / 'a' / 'odd'}: pairs" in caplog.text
    with pytest.raises(ConfigError, match="two sequences are named 'same'"):
        find_sequences([tmp_path / "a" / "same", tmp_path / "b" / "same"])
    with pytest.raises(SourceError, match="not a folder"):
        find_sequences([tmp_path / "missing"])
    with pytest.raises(SourceError, match="no pairs folder"):
        find_sequences([tmp_path / "empty"])
    with pytest.raises(SourceError, match="no file pair matches"):
        find_sequences([tmp_path / "empty"], ir_glob="*/ir.mp4", vis_glob="*/vi.mp4")
    with pytest.raises(ConfigError, match="both --ir-glob and --vis-glob"):
        find_sequences([tmp_path / "a"], ir_glob="*/ir.mp4")


def test_long_image_sequences_are_chunked_with_dstfuse_stream_output_names(tmp_path):
    write_pair_folders(tmp_path / "long", 7)
    (tmp_path / "clip").mkdir()
    for name, frame in (("ir", ir_frame), ("vi", vis_frame)):  # MP4 headers carry the frame count
        write_video(tmp_path / "clip" / f"{name}.mp4", [frame(i) for i in range(4)], codec="mpeg4")
    seqs = find_sequences([tmp_path / "long", tmp_path / "clip"])
    out = tmp_path / "out"
    items = plan_items(seqs, out, fmt="mp4", chunk_size=3)
    assert [(i.key, i.frames_expected) for i in items] == [
        ("long/part-0000", 3), ("long/part-0001", 3), ("long/part-0002", 1), ("clip", 4)]
    assert [p[0].name for p in items[1].pairs] == ["0003.png", "0004.png", "0005.png"]
    assert (items[2].output, items[2].summary) == (out / "long" / "part-0002.mp4", out / "long" / "part-0002.summary.json")
    assert (items[3].output, items[3].summary) == (out / "clip.mp4", out / "clip.summary.json")
    frames = plan_items(seqs, out, fmt="frames", chunk_size=10)
    assert [(i.key, i.output, i.summary) for i in frames] == [
        ("long", out / "long", out / "long" / "summary.json"), ("clip", out / "clip", out / "clip" / "summary.json")]
    with pytest.raises(ConfigError, match="format"):
        plan_items(seqs, out, fmt="gif")


def test_run_item_writes_the_chunk_atomically_and_marks_it_finished(tmp_path):
    write_pair_folders(tmp_path / "seq", 7)
    items = plan_items(find_sequences([tmp_path / "seq"]), tmp_path / "out", chunk_size=3)
    item = items[1]  # pairs 3, 4, 5
    assert finished_frames(item) is None
    reported: list[int] = []
    result = run_item(item, Fuser(backend=MaxFuser()), BatchSettings(), token="abc", on_frames=reported.append)
    assert (result.status, result.frames, result.error) == ("done", 3, None)
    assert sum(reported) == 3
    assert [coded_indices(f) for f in read_video(item.output)] == [(3, 3), (4, 4), (5, 5)]
    assert finished_frames(item) == 3
    data = json.loads(item.summary.read_text())
    assert data["batch"]["item"] == "seq/part-0001" and (data["batch"]["part"], data["batch"]["parts"]) == (1, 3)
    assert data["config"]["outputs"][0]["path"] == str(item.output)  # the final name, not the temporary one
    assert files_under(tmp_path / "out") == ["seq/part-0001.mp4", "seq/part-0001.summary.json"]


def test_failing_item_is_reported_and_keeps_the_earlier_output(tmp_path):
    root = write_pair_folders(tmp_path / "seq", 4)
    [item] = plan_items(find_sequences([root]), tmp_path / "out", fmt="frames")
    fuser = Fuser(backend=MaxFuser())
    assert run_item(item, fuser, BatchSettings(fmt="frames"), token="a1").frames == 4
    before = files_under(tmp_path / "out")
    (root / "vi" / "0002.png").write_bytes(b"not a png")
    result = run_item(item, fuser, BatchSettings(fmt="frames"), token="b2")  # as --force would
    assert result.status == "failed" and "0002.png" in result.error and "not a readable image" in result.error
    assert files_under(tmp_path / "out") == before == ["seq/0000.png", "seq/0001.png", "seq/0002.png", "seq/0003.png", "seq/summary.json"]
    assert finished_frames(item) == 4


def test_interrupt_leaves_nothing_under_the_final_name(tmp_path):
    root = write_pair_folders(tmp_path / "seq", 6)
    [item] = plan_items(find_sequences([root]), tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_item(item, Fuser(backend=MaxFuser(fail_at=3, exc=KeyboardInterrupt)), BatchSettings(), token="c3")
    assert files_under(tmp_path / "out") == []


def test_temporaries_of_a_killed_run_are_removed_and_a_forced_folder_is_replaced(tmp_path):
    root = write_pair_folders(tmp_path / "seq", 2)
    out = tmp_path / "out"
    [item] = plan_items(find_sequences([root]), out, fmt="frames")
    (out / ".tmp-dead.seq").mkdir(parents=True)
    (out / ".tmp-dead.seq" / "0000.png").write_bytes(b"half")
    (out / ".tmp-dead.other.seq").mkdir()  # another item's temporary: kept
    (out / "seq").mkdir()
    (out / "seq" / "stale.png").write_bytes(b"from an older run")
    result = run_item(item, Fuser(backend=MaxFuser()), BatchSettings(fmt="frames"), token="d4")
    assert result.status == "done"
    assert sorted(p.name for p in out.iterdir()) == [".tmp-dead.other.seq", "seq"]
    assert sorted(p.name for p in (out / "seq").iterdir()) == ["0000.png", "0001.png", "summary.json"]
    assert coded_indices(cv2.imread(str(out / "seq" / "0001.png"))) == (1, 1)


def test_dry_run_lists_work_and_skips_finished_outputs(tmp_path, capsys):
    for name, n in (("a", 2), ("b", 3)):
        write_pair_folders(tmp_path / name, n)
    [done, _] = plan_items(find_sequences([tmp_path / "a", tmp_path / "b"]), tmp_path / "out")
    run_item(done, Fuser(backend=MaxFuser()), BatchSettings(), token="e5")
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 work item(s): 1 to run, 1 finished earlier" in out
    assert f"skipped a: finished output {tmp_path / 'out' / 'a.mp4'} (2 frames)" in out
    assert f"would run b (3 frames) -> {tmp_path / 'out' / 'b.mp4'}" in out
    assert main([*argv, "--force"]) == 0
    assert "2 to run, 0 finished earlier" in capsys.readouterr().out


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"dstfuse-batch: error: input {str(tmp_path / 'nope')!r}: not a folder"]
    assert logging.getLogger("dstfuse_stream").level == logging.NOTSET  # --log-level does not outlive main()


def test_missing_ray_is_the_packages_own_error(monkeypatch):
    import sys

    from dstfuse_stream.batch.ray_runner import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendError, match=r'pip install "dstfuse-stream\[ray\]"'):
        require_ray()
