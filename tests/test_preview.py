"""Side-by-side preview (dstfuse_stream/preview.py) on synthetic pairs with a saved random lite model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dstfuse_stream import DSTFuse, get_config
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.colour import float_to_uint8, merge_luma, split_luma
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.preview import main as preview_main
from dstfuse_stream.preview import select_pairs


@pytest.fixture()
def pair_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a", (40, 64)), ("b", (30, 48)), ("c", (40, 64))):
        (tmp_path / "pairs" / "ir").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pairs" / "vi").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "pairs" / "ir" / f"{name}.png"), rng.integers(0, 256, (h, w), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "pairs" / "vi" / f"{name}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return tmp_path / "pairs"


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "lite.pt", DSTFuse(get_config("lite")), epoch=0)


def test_preview_stacks_side_by_side_rows(pair_folder, weights, tmp_path, capsys):
    out = tmp_path / "out" / "preview.png"
    rc = preview_main(["--pairs", str(pair_folder), "--out", str(out), "--weights", str(weights),
                       "--names", "c", "b", "--max-width", "56"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    # common panel width min(56, 64, 48) = 48: c (64x40) -> 48x30, b stays 48x30; three panels per row
    assert img.shape == (30 + 30, 3 * 48, 3)

    # the fused panel of the first row equals fusing c's luma and keeping its visible chroma
    ir = cv2.imread(str(pair_folder / "ir" / "c.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(pair_folder / "vi" / "c.png"), cv2.IMREAD_COLOR)
    y, crcb = split_luma(vis)
    fused_y = TorchBackend(weights=weights, device="cpu").fuse(ir, y)
    fused = cv2.resize(merge_luma(float_to_uint8(fused_y), crcb), (48, 30), interpolation=cv2.INTER_AREA)
    panel = img[:30, 96:144].astype(int)
    # the label text covers the top rows; compare the unlabelled bottom rows (PNG is lossless)
    assert np.array_equal(panel[18:], fused[18:].astype(int))
    assert not np.array_equal(panel[18:], img[18:30, 48:96])  # fused differs from the visible panel


def test_preview_limit_and_missing_names(pair_folder, weights, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert preview_main(["--pairs", str(pair_folder), "--out", str(out), "--weights", str(weights), "--limit", "1",
                         "--max-width", "64"]) == 0
    assert cv2.imread(str(out)).shape == (40, 192, 3)  # first pair "a" only, native width
    assert preview_main(["--pairs", str(pair_folder), "--out", str(out), "--weights", str(weights),
                         "--names", "zzz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zzz" in err[0]
    with pytest.raises(ConfigError):
        select_pairs([], names=["x"])
