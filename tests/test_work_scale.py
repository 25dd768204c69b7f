"""Work scale and reduced precision through the backends: exact parity with the model, ONNX cache keys,
bf16 on torch, int8 quantization and its calibration crops (refusing validation data)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from dstfuse_stream import DSTFuse
from dstfuse_stream.backends import create_backend
from dstfuse_stream.backends.onnx_backend import OnnxBackend
from dstfuse_stream.backends.onnx_cache import export_key, get_or_export_onnx
from dstfuse_stream.backends.onnx_quant import quantize_cached
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.backends.work_scale import parse_work_scale, resolve_work_scale, with_work_scale
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.config import DSTFuseConfig
from dstfuse_stream.errors import BackendError, ConfigError
from dstfuse_stream.metrics import psnr

#: The stream preset's structure (pixel-unshuffle, blend head) at a few channels: quick to export.
TINY_BLEND = DSTFuseConfig(
    name="tiny-blend", widths=(4, 4, 4), num_res_blocks=0, kernel_size=3, attention_width=4, pixel_unshuffle=2,
    residual="linear", cst_ir_input=True, fusion_head="blend", mapping="before_fusion",
)


@pytest.fixture(scope="module")
def blend_model():
    torch.manual_seed(0)
    model = DSTFuse(TINY_BLEND).eval()
    with torch.no_grad():
        for p in model.parameters():  # the blend head starts at zero; give every conv something to decide
            p.add_(0.2 * torch.randn_like(p))
    return model


def smooth_pair(seed: int, shape=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ir, vis = (cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (7, 7), 2) for _ in range(2))
    return ir, vis


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)[None, None]


def test_parse_and_resolve_work_scale(lite_model, blend_model):
    assert [parse_work_scale(v) for v in ("auto", None, "1", 0.5, "0.25")] == [None, None, 1.0, 0.5, 0.25]
    with pytest.raises(ConfigError, match=r"work_scale '0.3': expected 'auto' or one of \['1', '0.5', '0.25'\]"):
        parse_work_scale("0.3")
    assert resolve_work_scale("auto", blend_model) == 0.5
    assert resolve_work_scale("auto", lite_model) == 1.0  # the residual head cannot run at a reduced scale
    with pytest.raises(ConfigError, match="needs the 'blend' fusion head"):
        resolve_work_scale(0.5, lite_model)
    copy = with_work_scale(blend_model, 0.25)
    assert copy is not blend_model and copy.work_scale == 0.25 and blend_model.work_scale == 1.0
    assert with_work_scale(blend_model, 1.0) is blend_model


def test_torch_backend_runs_the_model_at_its_work_scale_and_leaves_the_callers_model(blend_model):
    ir, vis = (x.astype(np.float32) / np.float32(255) for x in smooth_pair(1, (37, 53)))
    with torch.inference_mode():
        want_half = blend_model.__class__(TINY_BLEND).eval()
        want_half.load_state_dict(blend_model.state_dict())
        want_half = want_half.set_work_scale(0.5)(as_tensor(ir), as_tensor(vis))[0, 0].numpy()
        want_full = blend_model(as_tensor(ir), as_tensor(vis))[0, 0].numpy()
    auto = TorchBackend(blend_model, device="cpu")
    full = TorchBackend(blend_model, device="cpu", work_scale=1)
    assert auto.work_scale == 0.5 and "work scale 0.5" in auto.describe()
    np.testing.assert_array_equal(auto.fuse(ir, vis), want_half)
    np.testing.assert_array_equal(full.fuse(ir, vis), want_full)
    assert not np.array_equal(want_half, want_full)
    assert blend_model.work_scale == 1.0 and next(blend_model.parameters()).dtype == torch.float32


def test_bf16_on_torch_is_close_to_fp32_and_converts_a_copy(blend_model):
    ir, vis = smooth_pair(2)
    bf16 = TorchBackend(blend_model, device="cpu", precision="bf16", work_scale=1)
    fp32 = TorchBackend(blend_model, device="cpu", precision="fp32", work_scale=1)
    got, want = bf16.fuse(ir, vis), fp32.fuse(ir, vis)
    assert got.dtype == np.float32 and bf16.precision == "bf16"
    assert psnr(got, want) > 35.0 and np.abs(got - want).max() > 0  # reduced, not identical, precision
    assert next(blend_model.parameters()).dtype == torch.float32  # the caller's model stays fp32


@pytest.mark.slow
def test_onnx_exports_are_cached_per_work_scale_and_checked(blend_model, tmp_path):
    half = get_or_export_onnx(model=blend_model, work_scale="auto", cache_dir=tmp_path)
    full = get_or_export_onnx(model=blend_model, work_scale=1, cache_dir=tmp_path)
    assert "_fp32_ws0.5_" in half.name and "_fp32_ws1_" in full.name
    assert {p.key: p.value for p in onnx.load(str(half)).metadata_props}["work_scale"] == "0.5"
    ir, vis = smooth_pair(3, (37, 53))
    with OnnxBackend(half, device="cpu") as b:
        assert b.work_scale == 0.5
        np.testing.assert_allclose(b.fuse(ir, vis), TorchBackend(blend_model, device="cpu").fuse(ir, vis), atol=1e-4)
    with pytest.raises(BackendError, match="work scale 1 requested but the file runs at 0.5"):
        OnnxBackend(half, device="cpu", work_scale=1.0)
    backend = create_backend("onnx", model=blend_model, device="cpu", cache_dir=tmp_path)
    assert backend.path == half  # cache hit for "auto"


@pytest.mark.slow
def test_int8_is_made_by_calibration_and_then_found_in_the_cache(blend_model, tmp_path):
    with pytest.raises(BackendError, match=r"no calibrated int8 model .* make one with `dstfuse-export int8"):
        create_backend("onnx", model=blend_model, device="cpu", precision="int8", cache_dir=tmp_path)
    calibration = [smooth_pair(s) for s in range(8)]
    path, entry = quantize_cached(calibration, model=blend_model, held_out=[smooth_pair(100)], info={"roots": ["synthetic"]},
                                  cache_dir=tmp_path)
    assert path == export_key(model=blend_model, cache_dir=tmp_path).path("int8") and "_int8_ws0.5_" in path.name
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    info = json.loads(meta["calibration"])
    assert meta["precision"] == "int8" and meta["work_scale"] == "0.5"
    assert info["pairs"] == 8 and info["roots"] == ["synthetic"] and info["ops"] == ["Conv", "ConvTranspose"]
    assert info["psnr_db"]["pairs"] == 1 and info["psnr_db"]["min"] > 30.0
    backend = create_backend("onnx", model=blend_model, device="cpu", precision="int8", cache_dir=tmp_path)
    ir, vis = smooth_pair(200)
    assert backend.precision == "int8" and backend.path == path
    assert psnr(backend.fuse(ir, vis), TorchBackend(blend_model, device="cpu").fuse(ir, vis)) > 30.0
    with pytest.raises(BackendError, match="precision 'fp32' requested but the file is 'int8'"):
        OnnxBackend(path, device="cpu", precision="fp32")


def test_calibration_crops_are_deterministic_spread_and_never_validation_data(tmp_path):
    from dstfuse_export.calibration import calibration_crops, check_training_root

    roots = []
    for name, n in (("train_a", 3), ("train_b", 2)):
        for side in ("ir", "vi"):
            (tmp_path / name / side).mkdir(parents=True)
        for i in range(n):
            ir, vis = smooth_pair(i, (40, 70))
            cv2.imwrite(str(tmp_path / name / "ir" / f"{i}.png"), ir)
            cv2.imwrite(str(tmp_path / name / "vi" / f"{i}.png"), cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR))
        roots.append(tmp_path / name)
    got = calibration_crops(roots, count=7, crop_size=32, seed=3)
    again = calibration_crops(roots, count=7, crop_size=32, seed=3)
    assert len(got.pairs) == 7 and all(ir.shape == vis.shape == (32, 32) and ir.dtype == np.uint8 for ir, vis in got.pairs)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got.pairs, again.pairs))
    assert got.info()["sha256"] == again.info()["sha256"] != calibration_crops(roots, count=7, crop_size=32, seed=4).info()["sha256"]
    assert got.info()["roots"] == [str(r) for r in roots] and got.info()["crops"] == 7
    for bad in ("vifb", "m3svd_frames_0111_1753"):
        (tmp_path / bad).mkdir()
        with pytest.raises(ConfigError, match="validation data .* must not calibrate"):
            check_training_root(tmp_path / bad)
    with pytest.raises(ConfigError, match="not found"):
        check_training_root(tmp_path / "missing")


@pytest.mark.slow
def test_dstfuse_export_int8_command(blend_model, tmp_path, capsys):
    from dstfuse_export.cli import main

    weights = save_checkpoint(tmp_path / "tiny.pt", blend_model, epoch=0)
    (tmp_path / "data" / "ir").mkdir(parents=True)
    (tmp_path / "data" / "vi").mkdir(parents=True)
    for i in range(3):
        ir, vis = smooth_pair(i, (40, 56))
        cv2.imwrite(str(tmp_path / "data" / "ir" / f"{i}.png"), ir)
        cv2.imwrite(str(tmp_path / "data" / "vi" / f"{i}.png"), vis)
    code = main(["int8", "--weights", str(weights), "--data", str(tmp_path / "data"), "--crops", "6", "--crop-size", "32",
                 "--check-crops", "2", "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0 and "6 calibration crops from 1 folders" in out and "int8 vs fp32 on 2 other crops" in out
    assert len(list((tmp_path / "cache" / "onnx").glob("*_int8_ws0.5_*.onnx"))) == 1
    assert main(["int8", "--weights", str(weights), "--data", str(tmp_path / "vifb")]) == 2
