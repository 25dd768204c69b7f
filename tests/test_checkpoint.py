"""Checkpoints: weights-only dicts that reload to identical outputs, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from dstfuse_stream import DSTFuse, get_config, load_model
from dstfuse_stream.checkpoint import default_weights_path, load_checkpoint, save_checkpoint
from dstfuse_stream.errors import CheckpointError


def test_roundtrip_identical_outputs(tmp_path, lite_model):
    path = save_checkpoint(tmp_path / "m.pt", lite_model, epoch=7, loss=0.5, history=[1.0, 0.5])
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["arch"] == "dstfuse" and ckpt["epoch"] == 7 and ckpt["loss"] == 0.5
    assert ckpt["config"] == get_config("lite").to_dict()
    reloaded = load_model(path)
    x, y = torch.rand(1, 1, 33, 47), torch.rand(1, 1, 33, 47)
    with torch.inference_mode():
        assert torch.equal(reloaded(x, y), lite_model(x, y))


def test_half_checkpoint_is_smaller_and_close(tmp_path, lite_model):
    full = save_checkpoint(tmp_path / "f.pt", lite_model, epoch=0)
    half = save_checkpoint(tmp_path / "h.pt", lite_model, epoch=0, half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(load_model(half)(x, x), lite_model(x, x), atol=5e-3, rtol=0)


def test_errors(tmp_path, lite_model):
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"arch": "resnet", "config": {}, "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected arch 'dstfuse', got 'resnet'"):
        load_checkpoint(tmp_path / "other.pt")
    ckpt = {"arch": "dstfuse", "config": get_config("paper").to_dict(), "state_dict": lite_model.state_dict()}
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match config 'paper'"):
        load_model(tmp_path / "mismatch.pt")


def test_pickled_whole_model_is_refused(tmp_path):
    torch.save(DSTFuse(get_config("lite")), tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not present")
def test_shipped_weights_load_offline():
    model = load_model()
    assert isinstance(model, DSTFuse) and not model.training
    x = torch.rand(1, 1, 40, 56)
    with torch.inference_mode():
        fused = model(x, x)
    assert fused.shape == x.shape and torch.isfinite(fused).all()
