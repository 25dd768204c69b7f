"""Sharded weights: files under a size limit that reassemble to the model; preset names in load_model."""

from __future__ import annotations

import pytest
import torch

from dstfuse_stream import DSTFuse, get_config, load_model
from dstfuse_stream import checkpoint
from dstfuse_stream.checkpoint import load_checkpoint, load_checkpoint_shards, preset_weights_paths, save_checkpoint_shards
from dstfuse_stream.errors import CheckpointError


@pytest.fixture()
def stream_model():
    torch.manual_seed(1)
    return DSTFuse(get_config("stream")).eval()


RESERVED = 256 * 1024  # kept free in every shard for torch.save's own records


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * (2 if tensor.is_floating_point() else tensor.element_size())  # fp16 shards


def _state_bytes(model: DSTFuse) -> int:
    return sum(_nbytes(v) for v in model.state_dict().values())


def test_shards_stay_under_the_limit_and_reassemble_to_the_fp16_model(tmp_path, stream_model):
    capacity = _state_bytes(stream_model) // 3  # 1,006,472 bytes of fp16 tensors: at least 3 shards
    limit = capacity + RESERVED
    paths = save_checkpoint_shards(tmp_path / "dstfuse_stream", stream_model, max_shard_bytes=limit, epoch=3, loss=0.25, note="x")
    count = len(paths)
    assert count >= 3 and [p.name for p in paths] == [f"dstfuse_stream-{i:05d}-of-{count:05d}.pt" for i in range(1, count + 1)]
    assert all(p.stat().st_size <= limit for p in paths)
    parts = [load_checkpoint(p) for p in paths]
    assert [p["shard"] for p in parts] == list(range(count)) and {p["num_shards"] for p in parts} == {count}
    keys = [k for p in parts for k in p["state_dict"]]
    assert keys == list(stream_model.state_dict())  # every tensor once, in order
    for part, following in zip(parts, parts[1:]):  # greedy: a shard ends only when the next tensor would not fit
        used = sum(_nbytes(v) for v in part["state_dict"].values())
        assert used <= capacity < used + _nbytes(next(iter(following["state_dict"].values())))
    assert all(v.dtype == torch.float16 for p in parts for v in p["state_dict"].values() if v.is_floating_point())
    # any shard, or the stem's set, loads the whole model with the fp16-rounded weights
    loaded = load_model(paths[2])
    for key, value in stream_model.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[key], expected), key
    merged = load_checkpoint_shards(paths)
    assert merged["epoch"] == 3 and merged["loss"] == 0.25 and merged["note"] == "x" and "shard" not in merged


def test_a_missing_or_foreign_shard_is_named(tmp_path, stream_model, lite_model):
    paths = save_checkpoint_shards(tmp_path / "m", stream_model, max_shard_bytes=_state_bytes(stream_model) // 3 + RESERVED, epoch=0)
    count = len(paths)
    paths[1].unlink()
    with pytest.raises(CheckpointError, match=rf"shard\(s\) \['m-00002-of-{count:05d}.pt'\] of the set are missing"):
        load_model(paths[0])
    other = save_checkpoint_shards(tmp_path / "other", lite_model, max_shard_bytes=10 * 2**20, epoch=0)
    with pytest.raises(CheckpointError, match=rf"expected shards 1..{count} of one set, got numbers \[1, 1, 3"):
        load_checkpoint_shards([paths[0], other[0], *paths[2:]])


def test_one_tensor_over_the_limit_is_an_error(tmp_path, lite_model):
    with pytest.raises(CheckpointError, match="does not fit a shard of 300000 bytes"):
        save_checkpoint_shards(tmp_path / "m", DSTFuse(get_config("paper")), max_shard_bytes=300_000, epoch=0)


def test_load_model_by_preset_name(tmp_path, monkeypatch, stream_model):
    monkeypatch.setattr(checkpoint, "default_weights_path", lambda: tmp_path / "dstfuse_default.pt")
    with pytest.raises(CheckpointError, match=r"the 'paper' preset has no trained weights yet .*docs/gpu.md"):
        load_model("paper")
    limit = _state_bytes(stream_model) // 2 + RESERVED
    written = save_checkpoint_shards(tmp_path / "dstfuse_stream", stream_model, max_shard_bytes=limit, epoch=0)
    assert len(written) >= 2 and preset_weights_paths("stream") == written
    x = torch.rand(1, 1, 24, 40)
    with torch.inference_mode():
        torch.testing.assert_close(load_model("stream")(x, 1 - x), stream_model(x, 1 - x), atol=5e-3, rtol=0)
    # a single file wins over shards; an existing path is never read as a preset name
    checkpoint.save_checkpoint(tmp_path / "dstfuse_stream.pt", stream_model, epoch=9)
    assert preset_weights_paths("stream") == [tmp_path / "dstfuse_stream.pt"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load_model("paper")
