"""The GPU fast path of the benchmarks (CUDA only): every variant computes what fp32 computes.

Run by ``benchmarks/gpu_run.py``'s ``tests`` stage on the device; skipped elsewhere. Keep the imports
to what the device machine has (no PyAV, no kornia needed here).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dstfuse_bench.gpu_models import (
    DTYPES, PARITY_GATES, Variant, as_variant_inputs, build_model, make_inputs, prepare_variant, reference_output, relative_error,
)
from dstfuse_bench.gpu_stream import VariantBackend
from dstfuse_stream import load_model
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.checkpoint import save_checkpoint_shards

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_fast_path_variants_match_fp32_on_cuda():
    model = build_model("paper", seed=3)
    inputs = make_inputs((80, 52), 2, "cuda", seed=4)
    ref = reference_output(model, *inputs[0])
    for label in ("fp32/cl/eager", "fp16/nchw/eager", "fp16/cl/eager", "bf16/cl/eager"):
        variant = Variant.parse(label)
        net = prepare_variant(model, variant, "cuda")
        with torch.inference_mode():
            out = net(*as_variant_inputs(inputs, variant)[0])
        assert out.dtype == DTYPES[variant.precision] and out.shape == (2, 1, 52, 80)
        assert relative_error(out, ref) <= PARITY_GATES[variant.precision], label


def test_variant_backend_and_runtime_backend_agree_on_uint8_frames_on_cuda():
    model = build_model("stream@0.5", seed=5)
    rng = np.random.default_rng(6)
    ir, vis = (rng.integers(0, 256, (1, 1, 61, 83), dtype=np.uint8) for _ in range(2))
    ref = TorchBackend(copy.deepcopy(model), device="cpu").fuse(ir, vis)
    for backend in (TorchBackend(copy.deepcopy(model), device="cuda", precision="fp16"),
                    VariantBackend(model, Variant("bf16", True, None), device="cuda")):
        out = backend.fuse(ir, vis)
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert relative_error(torch.from_numpy(out), torch.from_numpy(ref)) < PARITY_GATES["bf16"], backend.describe()


def test_paper_shards_load_onto_cuda(tmp_path):
    model = build_model("paper", seed=7)
    shards = save_checkpoint_shards(tmp_path / "dstfuse_paper", model, max_shard_bytes=15 * 2**20, epoch=1)
    assert len(shards) == 2 and all(p.stat().st_size <= 15 * 2**20 for p in shards)
    loaded = load_model(shards[0], device="cuda")
    assert next(loaded.parameters()).device.type == "cuda"
    x = torch.rand(1, 1, 48, 64, device="cuda")
    with torch.inference_mode():
        assert relative_error(loaded(x, 1 - x), model.cuda()(x, 1 - x)) < 1e-2
