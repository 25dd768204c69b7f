"""Video/image/timing sinks (plain uint8 images in): even-size padding, codec fallback, VFR, names, log columns."""

from __future__ import annotations

import csv
import json
import logging
import math

import av
import cv2
import numpy as np
import pytest
from synthetic import decode_index, read_video, vis_frame

from dstfuse_stream.errors import SinkError
from dstfuse_stream.fuser import FusedFrame
from dstfuse_stream.sinks import (
    TIMING_COLUMNS,
    ImageFolderSink,
    TimingLog,
    VideoSink,
    pad_to_even,
    write_json,
)
from dstfuse_stream.writer import render


def test_pad_to_even_replicates_the_last_row_and_column():
    img = np.arange(15, dtype=np.uint8).reshape(3, 5)
    out = pad_to_even(img)
    assert out.shape == (4, 6)
    assert np.array_equal(out[:3, :5], img)
    assert np.array_equal(out[3, :5], img[2]) and np.array_equal(out[:3, 5], img[:, 4])
    assert pad_to_even(np.zeros((4, 6), np.uint8)).shape == (4, 6)


def test_h264_mp4_with_odd_size_is_padded_and_decodes(tmp_path):
    sink = VideoSink(tmp_path / "out.mp4", fps=30)
    assert sink.codec_name == "libx264"
    for i in range(6):
        img = cv2.copyMakeBorder(vis_frame(i), 0, 1, 0, 1, cv2.BORDER_CONSTANT)  # 161 x 33
        sink.write(img, index=i)
    sink.close()
    sink.close()  # idempotent
    with av.open(str(tmp_path / "out.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (162, 34)
    frames = read_video(tmp_path / "out.mp4")
    assert [decode_index(f[:32, :160], half="right") for f in frames] == list(range(6))
    assert sink.describe()["padded_to_even"] is True and sink.frames_written == 6


@pytest.mark.parametrize("tune, b_frames", [("zerolatency", False), (None, True)])
def test_zerolatency_is_the_default_and_encodes_without_b_frames(tmp_path, tune, b_frames):
    path = tmp_path / "out.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 96), dtype=np.uint8)
    kwargs = {} if tune == "zerolatency" else {"tune": tune}
    with VideoSink(path, fps=30, **kwargs) as sink:
        assert sink.tune == tune
        for i in range(30):  # a moving texture: x264 uses B-frames where it may
            sink.write(np.roll(base, 2 * i, axis=1), index=i)
    with av.open(str(path)) as container:
        types = [int(frame.pict_type) for frame in container.decode(video=0)]
    assert len(types) == 30 and (3 in types) == b_frames  # 3 = AV_PICTURE_TYPE_B


def test_preview_encodes_with_a_faster_preset_than_the_fused_output(tmp_path):
    assert VideoSink(tmp_path / "a.mp4").preset == "veryfast"
    assert VideoSink(tmp_path / "b.mp4", content="preview").preset == "ultrafast"
    assert VideoSink(tmp_path / "c.mp4", content="preview", preset="medium").preset == "medium"
    sink = VideoSink(tmp_path / "d.mp4", content="preview")
    sink.write(np.zeros((16, 48, 3), np.uint8))
    sink.close()
    assert sink.describe()["preset"] == "ultrafast" and sink.describe()["tune"] == "zerolatency"


def test_codec_fallback_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dstfuse_stream.sinks"):
        sink = VideoSink(tmp_path / "out.mp4", codec="no-such-codec", fallback_codecs=("mpeg4",))
    assert sink.codec_name == "mpeg4"
    assert "no-such-codec is not available" in caplog.text and "using mpeg4" in caplog.text
    for i in range(3):
        sink.write(vis_frame(i), index=i)
    sink.close()
    assert [decode_index(f, half="right") for f in read_video(tmp_path / "out.mp4")] == [0, 1, 2]
    with pytest.raises(SinkError, match="none of the codecs"):
        VideoSink(tmp_path / "x.mp4", codec="nope1", fallback_codecs=("nope2",))


def test_vfr_uses_frame_timestamps(tmp_path):
    sink = VideoSink(tmp_path / "live.mp4", fps=30, vfr=True)
    times = [10.0, 10.1, 10.25, 10.3]
    for i, t in enumerate(times):
        sink.write(vis_frame(i), index=i, timestamp_s=t)
    sink.close()
    with av.open(str(tmp_path / "live.mp4")) as c:
        got = [float(f.time) for f in c.decode(video=0)]
    assert got == pytest.approx([t - times[0] for t in times], abs=2e-3)


def test_preview_is_three_panels_and_size_changes_are_rejected(tmp_path):
    y = cv2.cvtColor(vis_frame(0), cv2.COLOR_BGR2GRAY)
    frame = FusedFrame(ir=y, vis=vis_frame(0), vis_y=y, fused_y=y, fused=vis_frame(0))
    sink = VideoSink(tmp_path / "p.mp4", content="preview")
    assert sink.content == "preview" and render(frame, "fused") is frame.fused
    sink.write(render(frame, sink.content), index=0)
    assert sink.describe()["size_wh"] == [480, 32]
    with pytest.raises(SinkError, match="size changed"):
        sink.write(np.zeros((20, 20, 3), np.uint8), index=1)
    with pytest.raises(SinkError, match=r"expected dtype uint8, got float32"):
        sink.write(np.zeros((32, 480, 3), np.float32), index=1)
    sink.close()
    assert len(read_video(tmp_path / "p.mp4")) == 1
    with pytest.raises(SinkError, match="content 'side'"):
        VideoSink(tmp_path / "q.mp4", content="side")


def test_video_sink_bad_paths(tmp_path):
    with pytest.raises(SinkError, match="is a folder"):
        VideoSink(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot create folder"):
        VideoSink(tmp_path / "file" / "out.mp4")


def test_image_folder_names_and_collisions(tmp_path):
    sink = ImageFolderSink(tmp_path / "frames")
    sink.write(vis_frame(0), index=0, name="010001")
    sink.write(vis_frame(1), index=1, name="010001")  # same name again -> index
    sink.write(vis_frame(2), index=2)
    sink.close()
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["000001.png", "000002.png", "010001.png"]
    assert decode_index(cv2.imread(str(tmp_path / "frames" / "000002.png")), half="right") == 2
    (tmp_path / "f").write_text("x")
    with pytest.raises(SinkError, match="not a folder"):
        ImageFolderSink(tmp_path / "f")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_timing_log_columns(tmp_path, suffix):
    log = TimingLog(tmp_path / f"t{suffix}")
    log.write({"index": 0, "fuse_ms": 1.23456789, "latency_ms": 5.0, "unknown": 1})
    log.write({"index": 1, "fuse_ms": 2.0})
    log.close()
    if suffix == ".csv":
        with open(tmp_path / "t.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert tuple(rows[0].keys()) == TIMING_COLUMNS
        assert rows[0]["fuse_ms"] == "1.2346" and rows[1]["latency_ms"] == ""
    else:
        rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
        assert tuple(rows[0].keys()) == TIMING_COLUMNS
        assert rows[0]["fuse_ms"] == 1.2346 and rows[1]["latency_ms"] is None
    assert len(rows) == 2


def test_write_json_nan_becomes_null(tmp_path):
    path = write_json(tmp_path / "s.json", {"a": math.nan, "b": np.float32(1.5), "c": [np.int64(2)]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [2]}
