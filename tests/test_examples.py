"""examples/detect_people.py on a tiny synthetic clip: every fused frame reaches the detector, boxes are
drawn on the fused frames and written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
from synthetic import write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("detect_people", REPO / "examples" / "detect_people.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def clip(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 4, (128, 160)  # HOG's window is 64x128: big enough to run the real detector
    ir = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(n)]
    vis = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
    return write_video(tmp_path / "ir.mkv", ir), write_video(tmp_path / "vi.mkv", vis), n


class FixedDetector:
    """Stands in for HOG: one box per frame, and a record of what it was shown."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detectMultiScale(self, image, **kwargs):  # noqa: N802 - OpenCV's name
        self.shapes.append(image.shape)
        return np.array([[10, 20, 40, 60]]), np.array([1.0])


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def test_boxes_are_drawn_on_every_fused_frame(example, clip, tmp_path, capsys):
    ir, vis, n = clip
    detector = FixedDetector()
    out = tmp_path / "people.mp4"
    assert example.main(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--backend", "torch"], detector=detector) == 0
    assert detector.shapes == [(128, 160, 3)] * n  # the detector sees each fused BGR frame
    frames = _frames(out)
    assert len(frames) == n
    for frame in frames:  # the box's left edge is green (H.264 blurs colours a little)
        edge = frame[30:70, 10:12].astype(int)
        assert (edge[..., 1] > 180).all() and (edge[..., 0] < 90).all() and (edge[..., 2] < 90).all()
    assert f"{n} fused frames, {n} people boxes" in capsys.readouterr().out


def test_real_hog_detector_runs_on_the_fused_frames(example, clip, tmp_path):
    ir, vis, n = clip
    out = tmp_path / "people.mp4"
    assert example.main(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--backend", "torch", "--max-frames", "2"]) == 0
    assert len(_frames(out)) == 2
    boxes = example.detect_people(np.zeros((128, 64, 3), np.uint8), example.people_detector())
    assert boxes == []  # a blank frame has no people
