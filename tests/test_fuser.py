"""The Fuser: any sizes and layouts in, uint8 at the visible size out; batches, tensors, colour, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from synthetic import MaxFuser

from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.colour import IR_UINT16_PERCENTILES, float_to_uint8, ir_to_luma, split_luma
from dstfuse_stream.errors import BackendError, ConfigError, InputShapeError
from dstfuse_stream.fuser import Fuser, default_fuser, fuse
from dstfuse_stream.imageio import check_image, to_gray


@pytest.fixture()
def torch_fuser(lite_model, one_torch_thread):
    return Fuser(backend=TorchBackend(lite_model, device="cpu"))


def _rng_pair(seed=0, ir_shape=(24, 32), vis_shape=(48, 64, 3)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, ir_shape, dtype=np.uint8), rng.integers(0, 256, vis_shape, dtype=np.uint8)


def _direct(model, ir_y: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model(*(torch.from_numpy(x.astype(np.float32) / 255.0)[None, None] for x in (ir_y, vis_y)))
    return float_to_uint8(out[0, 0].numpy())


def test_ir_of_another_size_is_resized_and_colour_is_the_visible_chroma(torch_fuser, lite_model):
    ir, vis = _rng_pair(ir_shape=(24, 32), vis_shape=(48, 64, 3))
    frame = torch_fuser.process(ir, vis)
    out = torch_fuser(ir, vis)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and np.array_equal(out, frame.fused)
    assert np.array_equal(frame.ir, cv2.resize(ir, (64, 48), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(frame.fused_y, _direct(lite_model, frame.ir, split_luma(vis)[0]))
    y, crcb = split_luma(out)
    # the output carries the fused luma with the visible chroma (up to 8-bit YCrCb <-> BGR rounding
    # and clipping of the few out-of-gamut colours that random chroma makes)
    dy, dc = (np.abs(a.astype(int) - b.astype(int)) for a, b in ((y, frame.fused_y), (crcb, split_luma(vis)[1])))
    assert dy.max() <= 3 and dy.mean() < 0.1 and dc.mean() < 0.1
    assert set(frame.timings) == {"preprocess_ms", "fuse_ms", "postprocess_ms"}


def test_layouts_gray_output_gray_visible_and_bgr_ir(torch_fuser, lite_model):
    ir, vis = _rng_pair(vis_shape=(24, 32, 3))
    ir_bgr = cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(torch_fuser(ir_bgr, vis), torch_fuser(ir, vis))  # BGR IR: its Y plane
    gray_vis = to_gray(vis)
    assert torch_fuser(ir, gray_vis).shape == (24, 32)  # gray visible -> gray result
    gray = Fuser(backend=TorchBackend(lite_model, device="cpu"), output="gray")
    assert np.array_equal(gray(ir, vis), torch_fuser.process(ir, vis).fused_y)
    bgra = cv2.cvtColor(vis, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(torch_fuser(ir, bgra), torch_fuser(ir, vis))


def test_colour_is_kept_and_no_per_frame_normalisation():
    vis = np.zeros((8, 8, 3), np.uint8)
    vis[..., 2], vis[..., 1] = 200, 40  # red-ish
    ir = np.full((8, 8), 10, np.uint8)
    fuser = Fuser(backend=MaxFuser())
    prepared = fuser.prepare(ir, vis)
    _, out = fuser.finish(prepared.vis_y.astype(np.float32) / 255.0, prepared)
    assert np.abs(out.astype(int) - vis.astype(int)).max() <= 2
    # a constant dark frame stays dark: fixed mapping, no per-frame min-max stretch
    fused_y, out = Fuser(backend=MaxFuser(), output="gray").finish(np.full((8, 8), 0.1, np.float32), prepared._replace(crcb=None))
    assert out.ndim == 2 and np.all(out == 26)
    with pytest.raises(BackendError, match=r"backend returned shape \(4, 4\), expected \(8, 8\)"):
        fuser.finish(np.zeros((4, 4), np.float32), prepared)


def test_uint16_ir_is_stretched_between_its_percentiles():
    ramp = np.arange(0, 10000, 1, dtype=np.uint16).reshape(100, 100)
    out = ir_to_luma(ramp)
    lo, hi = np.percentile(ramp, IR_UINT16_PERCENTILES)
    assert out.dtype == np.uint8 and out.shape == (100, 100)
    assert out[ramp <= lo].max() == 0 and out[ramp >= hi].min() == 255
    mid = np.argmin(np.abs(ramp.astype(float) - (lo + hi) / 2))
    assert abs(int(out.flat[mid]) - 128) <= 1  # linear in between
    flat = np.full((4, 4), 3000, np.uint16)
    assert ir_to_luma(flat).max() == 0  # a constant frame does not divide by zero
    fuser = Fuser(backend=MaxFuser(), output="gray")
    assert fuser(ramp, np.zeros((50, 50), np.uint8)).shape == (50, 50)


def test_homography_given_once_warps_every_ir_frame():
    ir = np.zeros((32, 48), np.uint8)
    ir[10:20, 5:15] = 255  # a block at x 5..14
    h = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # IR x -> visible x + 20
    fuser = Fuser(backend=MaxFuser(), homography=h, output="gray")
    frame = fuser.process(ir, np.zeros((32, 48), np.uint8))
    assert frame.ir[15, 25:35].min() == 255 and frame.ir[15, 5:15].max() == 0
    with pytest.raises(ConfigError, match="3x3"):
        Fuser(backend=MaxFuser(), homography=np.eye(2))


def test_batches_lists_and_stacked_arrays_match_single_calls(torch_fuser):
    pairs = [_rng_pair(seed) for seed in range(3)] + [_rng_pair(9, vis_shape=(20, 28, 3))]
    irs, viss = [p[0] for p in pairs], [p[1] for p in pairs]
    outs = torch_fuser.fuse_batch(irs, viss)
    assert isinstance(outs, list) and [o.shape for o in outs] == [(48, 64, 3)] * 3 + [(20, 28, 3)]
    for out, (ir, vis) in zip(outs, pairs):
        assert np.abs(out.astype(int) - torch_fuser(ir, vis).astype(int)).max() <= 1
    stacked = torch_fuser.fuse_batch(np.stack(irs[:3]), np.stack(viss[:3]))
    assert isinstance(stacked, np.ndarray) and stacked.shape == (3, 48, 64, 3)
    with pytest.raises(InputShapeError, match="as many IR as visible frames, got 2 and 1"):
        torch_fuser.fuse_batch(irs[:2], viss[:1])


def test_tensors_in_and_out_on_their_device(torch_fuser, lite_model):
    x = torch.rand(2, 1, 20, 28)
    y = torch.rand(2, 1, 20, 28)
    out = torch_fuser.fuse_tensor(x, y)
    with torch.inference_mode():
        expected = lite_model(x, y)
    assert out.device == x.device and out.dtype == torch.float32 and out.shape == (2, 1, 20, 28)
    assert torch.allclose(out, expected, atol=1e-6)
    via_host = Fuser(backend=MaxFuser()).fuse_tensor(x, y)  # the default path goes through numpy
    assert torch.allclose(via_host, torch.maximum(x, y), atol=1e-6)
    with pytest.raises(InputShapeError, match=r"expected a non-empty tensor \(B, 1, H, W\), got \(20, 28\)"):
        torch_fuser.fuse_tensor(x[0, 0], y[0, 0])
    with pytest.raises(InputShapeError, match="float tensor"):
        torch_fuser.fuse_tensor((x * 255).to(torch.uint8), y)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensors_stay_on_the_gpu_and_fp16_is_close(lite_model):
    x = torch.rand(1, 1, 37, 53, device="cuda")
    fp32 = Fuser(backend=TorchBackend(lite_model, device="cuda", precision="fp32")).fuse_tensor(x, 1 - x)
    fp16 = Fuser(backend=TorchBackend(lite_model, device="cuda", precision="fp16")).fuse_tensor(x, 1 - x)
    assert fp32.device.type == fp16.device.type == "cuda" and fp16.dtype == torch.float32
    assert (fp32 - fp16).abs().max().item() <= 1e-2


def test_bad_inputs_say_what_was_expected(torch_fuser):
    ir, vis = _rng_pair()
    with pytest.raises(InputShapeError, match=r"vis: expected dtype uint8, got float32"):
        torch_fuser(ir, vis.astype(np.float32))
    with pytest.raises(InputShapeError, match=r"ir: expected a non-empty uint8/uint16 image"):
        torch_fuser(np.zeros((0, 4), np.uint8), vis)
    with pytest.raises(InputShapeError, match=r"ir: expected a numpy uint8/uint16 array .* got list"):
        torch_fuser([[1, 2]], vis)
    with pytest.raises(InputShapeError, match=r"got shape \(4, 4, 2\)"):
        check_image(np.zeros((4, 4, 2), np.uint8), "x")


def test_settings_are_checked(lite_model):
    with pytest.raises(ConfigError, match="output 'rgb'"):
        Fuser(backend=MaxFuser(), output="rgb")
    with pytest.raises(ConfigError, match=r"work_scale '0.3': expected 'auto' or one of \['1', '0.5', '0.25'\]"):
        Fuser(backend="torch", work_scale="0.3")
    with pytest.raises(ConfigError, match="concurrent_frames: expected an int >= 1, got 0"):
        Fuser(backend=MaxFuser(), concurrent_frames=0)
    with pytest.raises(ConfigError, match=r"backend object given: set \['work_scale', 'concurrent_frames'\] on it instead"):
        Fuser(backend=MaxFuser(), work_scale=0.5, concurrent_frames=2)
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        Fuser(backend="torch", precision="fp8")
    with pytest.raises(ConfigError, match=r"backend object given: set \['device'\] on it instead"):
        Fuser(backend=MaxFuser(), device="cuda")
    with pytest.raises(ConfigError, match="object with fuse"):
        Fuser(backend=object())
    with pytest.raises(BackendError, match="'fp16' needs a CUDA device"):
        TorchBackend(lite_model, device="cpu", precision="fp16")


def test_threads_setting_reaches_torch(lite_model):
    previous = torch.get_num_threads()
    try:
        TorchBackend(lite_model, device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_fuse_caches_one_fuser_per_setting(monkeypatch, lite_model):
    built = []

    class Counting(Fuser):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(backend=TorchBackend(lite_model, device="cpu"), output=kwargs.get("output", "bgr"))

    import dstfuse_stream.fuser as fuser_module

    monkeypatch.setattr(fuser_module, "Fuser", Counting)
    monkeypatch.setattr(fuser_module, "_cache", {})
    ir, vis = _rng_pair()
    a = fuse(ir, vis, backend="torch")
    b = fuse(ir, vis, backend="torch")
    assert np.array_equal(a, b) and len(built) == 1
    assert fuse(ir, vis, backend="torch", output="gray").shape == (48, 64) and len(built) == 2
    h = np.eye(3)
    assert default_fuser(backend="torch", homography=h) is default_fuser(backend="torch", homography=h.copy())
