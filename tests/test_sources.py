"""Frame sources: files (PyAV timestamps), folders (LLVIP and ir/vi layouts), cameras, URLs, bad input."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from synthetic import decode_index, ir_frame, vis_frame, write_pair_folders, write_video

from dstfuse_stream.errors import SourceError
from dstfuse_stream.sources import (
    ImageListSource,
    StreamSource,
    VideoFileSource,
    is_url,
    open_pairs,
    open_source,
    parse_camera_spec,
)


def test_video_file_frames_in_order_with_pts_timestamps(tmp_path):
    path = write_video(tmp_path / "ir.mkv", [ir_frame(i) for i in range(12)], fps=25)
    with open_source(path, role="ir") as src:
        assert isinstance(src, VideoFileSource) and not src.is_live
        assert src.fps == pytest.approx(25)
        got = list(src.frames())
    assert [f.index for f in got] == list(range(12))
    assert [decode_index(f.image, half="left") for f in got] == list(range(12))
    assert [f.timestamp_s for f in got] == pytest.approx([i * 0.04 for i in range(12)], abs=1e-9)
    assert got[0].image.shape == (32, 160) and got[0].image.dtype == np.uint8  # IR: decoded straight to gray
    with open_source(path, role="ir", gray=False) as src:
        assert src.gray is False and next(iter(src.frames())).image.shape == (32, 160, 3)


def test_gray_decoding_is_the_range_expanded_luma(tmp_path):
    """IR decoded to gray equals the Y plane of the same frame, expanded from video range (16-235)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 48), dtype=np.uint8) for _ in range(2)]
    path = write_video(tmp_path / "g.mp4", images, codec="libx264")
    with VideoFileSource(path, gray=True) as gray, VideoFileSource(path) as colour:
        for g, c in zip(gray.frames(), colour.frames()):
            assert g.image.shape == (32, 48)
            # the BGR route rounds through RGB; it agrees to within 3 levels
            assert np.abs(g.image.astype(int) - cv2.cvtColor(c.image, cv2.COLOR_BGR2YCrCb)[..., 0]).max() <= 3


def test_single_threaded_decoding_gives_the_same_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", [vis_frame(i) for i in range(6)], fps=25, codec="libx264")
    with VideoFileSource(path) as default, VideoFileSource(path) as single:
        single.set_decoder_threads(1)
        assert single._stream.codec_context.thread_count == 1 and default._stream.codec_context.thread_count == 0
        pairs = list(zip(default.frames(), single.frames()))
        assert len(pairs) == 6 and all(np.array_equal(a.image, b.image) for a, b in pairs)
        assert single._stream.codec_context.thread_count == 1


def test_mp4_at_22_fps_timestamps(tmp_path):
    path = write_video(tmp_path / "v.mp4", [vis_frame(i) for i in range(5)], fps=22, codec="libx264")
    with open_source(path, role="vis") as src:
        got = list(src.frames())
        assert src.frame_count == 5
    assert [f.timestamp_s for f in got] == pytest.approx([i / 22 for i in range(5)], abs=1e-3)
    assert [decode_index(f.image, half="right") for f in got] == list(range(5))


def test_folder_source_sorted_names_and_fps(tmp_path):
    for i in (3, 0, 2, 1):  # written out of order
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), ir_frame(i))
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    src = open_source(tmp_path, role="ir", fps=5)
    assert isinstance(src, ImageListSource) and src.frame_count == 4
    got = list(src.frames())
    assert [decode_index(f.image, half="left") for f in got] == [0, 1, 2, 3]
    assert [f.timestamp_s for f in got] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert [f.name for f in got] == ["0000", "0001", "0002", "0003"]


def test_llvip_layout_roles_and_pairs(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        write_pair_folders(tmp_path, n, ir_dir=f"infrared/{split}", vis_dir=f"visible/{split}")
    # rename test images so that names do not collide across splits
    for side in ("infrared", "visible"):
        for p in sorted((tmp_path / side / "test").iterdir()):
            p.rename(p.with_name("9" + p.name))
    ir = open_source(tmp_path, role="ir")
    vis = open_source(tmp_path, role="vis")
    assert ir.frame_count == vis.frame_count == 5
    assert all(f.image.shape == (32, 160) for f in ir.frames())  # IR side read as gray
    assert all(f.image.shape == (32, 160, 3) for f in vis.frames())
    ir_src, vis_src = open_pairs(tmp_path, split="test", fps=10)
    assert [p.name for p in ir_src.paths] == ["90000.png", "90001.png"]
    assert [p.parent.name for p in vis_src.paths] == ["test", "test"]
    assert [decode_index(f.image, half="right") for f in vis_src.frames()] == [0, 1]
    assert vis_src.fps == 10


def test_pairs_root_with_ir_vi_folders(tmp_path):
    write_pair_folders(tmp_path, 3)
    cv2.imwrite(str(tmp_path / "ir" / "only_ir.png"), ir_frame(7))
    src = open_source(tmp_path, role="vis")
    assert [decode_index(f.image, half="right") for f in src.frames()] == [0, 1, 2]
    ir, vis = open_pairs(tmp_path)
    assert ir.frame_count == vis.frame_count == 3  # only_ir.png has no partner


def test_spec_parsing():
    assert parse_camera_spec("cam0") == 0
    assert parse_camera_spec("cam:2") == 2
    assert parse_camera_spec("3") == 3
    assert parse_camera_spec("/dev/video1") == "/dev/video1"
    assert parse_camera_spec("cam") is None and parse_camera_spec("video.mp4") is None
    assert is_url("rtsp://10.0.0.2/stream") and is_url("HTTP://x/y.mp4")
    assert not is_url("file.mp4") and not is_url("C:/x.mp4")


def _bad_source(root, kind):
    if kind == "missing":
        return root / "missing.mp4"
    if kind == "empty":
        (root / "empty.mp4").write_bytes(b"")
        return root / "empty.mp4"
    if kind == "not-video":
        (root / "text.mp4").write_text("not a video " * 50)
        return root / "text.mp4"
    folder = root / kind
    folder.mkdir()
    if kind == "non-image-files":
        (folder / "a.txt").write_text("x")
    return folder


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("not-video", "cannot open"),
        ("empty-folder", "no images"),
        ("non-image-files", "no images.*a.txt"),
    ],
)
def test_bad_sources_raise_source_error(tmp_path, kind, match):
    with pytest.raises(SourceError, match=match):
        open_source(_bad_source(tmp_path, kind))


def test_unreadable_and_zero_size_images_raise(tmp_path):
    (tmp_path / "a.png").write_text("not a png")
    src = open_source(tmp_path)
    with pytest.raises(SourceError, match="not a readable image"):
        next(src.frames())
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SourceError):
        next(open_source(tmp_path).frames())


def test_truncated_files(tmp_path):
    mp4 = write_video(tmp_path / "v.mp4", [ir_frame(i) for i in range(30)], codec="libx264")
    data = mp4.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    with pytest.raises(SourceError, match="cannot open"):
        open_source(tmp_path / "cut.mp4")
    mkv = write_video(tmp_path / "v.mkv", [ir_frame(i) for i in range(30)])
    data = mkv.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])  # Matroska: the first half still decodes
    got = []
    with pytest.raises(SourceError, match=r"decoding failed at frame (\d+), .* of 1.00 s") as info:
        for frame in open_source(tmp_path / "cut.mkv").frames():  # then the end short of the declared duration
            got.append(frame)
    assert 0 < len(got) < 30 and f"frame {len(got)}," in str(info.value)
    assert [f.index for f in got] == [decode_index(f.image, half="left") for f in got] == list(range(len(got)))
    (tmp_path / "head.mkv").write_bytes(data[:200])  # cut inside the header
    with pytest.raises(SourceError, match="cannot open"):
        open_source(tmp_path / "head.mkv")


def test_missing_camera_and_unreachable_url_are_source_errors():
    with pytest.raises(SourceError, match="camera 57"):
        open_source("cam57")
    with pytest.raises(SourceError, match="device not found"):
        open_source("/dev/video57")
    with pytest.raises(SourceError, match="cannot open"):
        open_source("rtsp://127.0.0.1:9/stream", timeout_s=2)
    with pytest.raises(SourceError, match="cannot open"):
        StreamSource("http://127.0.0.1:9/video.mp4", open_timeout_s=2, read_timeout_s=2)


def test_image_list_needs_images():
    with pytest.raises(SourceError, match="no images"):
        ImageListSource([], name="empty list")


def test_http_stream_is_live_with_monotonic_timestamps(tmp_path):
    import functools
    import http.server
    import threading

    write_video(tmp_path / "cam.mkv", [vis_frame(i) for i in range(6)])
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mkv"
        t0 = time.monotonic()
        with open_source(url, role="vis", timeout_s=5) as src:
            assert isinstance(src, StreamSource) and src.is_live and src.frame_count is None
            got = list(src.frames())
    finally:
        server.shutdown()
        server.server_close()
    assert [decode_index(f.image, half="right") for f in got] == list(range(6))
    stamps = [f.timestamp_s for f in got]
    assert stamps == sorted(stamps) and t0 <= stamps[0] <= time.monotonic()
