"""Backends: ONNX Runtime vs torch, provider selection, TensorRT profiles/options, factory, clear errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from dstfuse_stream import DSTFuse, get_config
from dstfuse_stream.backends import BACKEND_NAMES, CPU_AUTO, auto_candidates, create_backend
from dstfuse_stream.backends.autoselect import AutoPrecisionBackend
from dstfuse_stream.backends.onnx_backend import CPU_PROVIDER, CUDA_PROVIDER, TRT_PROVIDER, OnnxBackend, select_providers
from dstfuse_stream.backends.tensorrt_backend import TorchTensorRTBackend, load_torch_tensorrt, profile_path_for
from dstfuse_stream.backends.tensorrt_options import (
    DEFAULT_PROFILE,
    ShapeProfile,
    default_cache_dir,
    format_profile_shapes,
    parse_shape,
    tensorrt_provider_options,
)
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.checkpoint import save_checkpoint
from dstfuse_stream.backends.onnx_export import export_onnx
from dstfuse_stream.backends.precision import default_threads
from dstfuse_stream.errors import BackendError, ConfigError, InputShapeError

ALL = [TRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
PROFILE = ShapeProfile.from_hw((16, 16), (48, 64), (64, 96))


def fp32_of(backend):
    """The fp32 backend of ``auto``'s choice (``auto`` on a CPU with bf16 or int8 holds several)."""
    return backend.candidates["fp32"] if isinstance(backend, AutoPrecisionBackend) else backend


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return DSTFuse(get_config("lite")).eval()


@pytest.fixture(scope="module")
def onnx_fp32(lite, tmp_path_factory):
    """A quick fp32 export (no simplification, no check: test_export covers those)."""
    path = tmp_path_factory.mktemp("onnx") / "lite_fp32.onnx"
    return export_onnx(lite, path, simplify=False, check=False).path


# --- ONNX Runtime backend on CPU -------------------------------------------------------------


def test_onnx_backend_matches_torch_backend_2d_uint8_and_batch(lite, onnx_fp32):
    rng = np.random.default_rng(0)
    with OnnxBackend(onnx_fp32, device="cpu") as onnx_b, TorchBackend(lite, device="cpu") as torch_b:
        ir = rng.integers(0, 256, (33, 45), dtype=np.uint8)
        vis = rng.integers(0, 256, (33, 45), dtype=np.uint8)
        got, want = onnx_b.fuse(ir, vis), torch_b.fuse(ir, vis)
        assert got.shape == (33, 45) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-4
        ir_b, vis_b = rng.random((2, 1, 30, 19), dtype=np.float32), rng.random((2, 1, 30, 19), dtype=np.float32)
        got_b = onnx_b.fuse(ir_b, vis_b)
        assert got_b.shape == (2, 1, 30, 19)
        assert np.abs(got_b - torch_b.fuse(ir_b, vis_b)).max() <= 1e-4
        assert onnx_b.active_provider == CPU_PROVIDER
        assert onnx_b.describe() == "onnx lite_fp32.onnx via CPUExecutionProvider on cpu (fp32, work scale 1, 2 threads)"


def test_onnx_backend_threads_option(onnx_fp32):
    for threads in (1, 2):
        with OnnxBackend(onnx_fp32, device="cpu", threads=threads) as b:
            assert b.threads == threads  # read back from the session's own options
    with OnnxBackend(onnx_fp32, device="cpu") as b:
        assert b.threads == default_threads()  # the usable cores
    with pytest.raises(BackendError, match="threads: expected >= 1, got 0"):
        OnnxBackend(onnx_fp32, device="cpu", threads=0)
    assert create_backend("onnx", onnx_path=onnx_fp32, device="cpu", threads=1).threads == 1


def test_backends_take_uint8_as_is_and_float_in_range(lite, onnx_fp32):
    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 256, (2, 1, 20, 24), dtype=np.uint8)
    f32 = u8.astype(np.float32) / 255.0
    with OnnxBackend(onnx_fp32, device="cpu") as onnx_b, TorchBackend(lite, device="cpu") as torch_b:
        for backend in (onnx_b, torch_b):
            assert backend.accepts_uint8
            assert np.abs(backend.fuse(u8, u8[::-1].copy()) - backend.fuse(f32, f32[::-1].copy())).max() <= 1e-6
    with pytest.raises(InputShapeError, match=r"ir: expected values in \[0, 1\]"):
        TorchBackend(lite, device="cpu").fuse(f32 * 2, f32)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 3, 16, 16), r"ir: expected shape \(H, W\) or \(B, 1, H, W\), got \(1, 3, 16, 16\)"),
     ((16, 16, 3), r"ir: expected shape \(H, W\) or \(B, 1, H, W\), got \(16, 16, 3\)")],
)
def test_onnx_backend_rejects_wrong_rank_or_channels(onnx_fp32, shape, match):
    with OnnxBackend(onnx_fp32, device="cpu") as b, pytest.raises(InputShapeError, match=match):
        b.fuse(np.zeros(shape, np.float32), np.zeros(shape, np.float32))


def test_onnx_backend_profile_rejects_shapes_before_running(onnx_fp32):
    with OnnxBackend(onnx_fp32, device="cpu", profile=PROFILE) as b:
        assert b.fuse(np.zeros((20, 30), np.float32), np.zeros((20, 30), np.float32)).shape == (20, 30)
        with pytest.raises(InputShapeError, match=r"ir: shape \(1, 1, 65, 30\) is outside the TensorRT profile"):
            b.fuse(np.zeros((65, 30), np.float32), np.zeros((65, 30), np.float32))
        with pytest.raises(InputShapeError, match=r"min \(1, 1, 16, 16\), max \(1, 1, 64, 96\)"):
            b.fuse(np.zeros((2, 1, 20, 20), np.float32), np.zeros((2, 1, 20, 20), np.float32))


def test_onnx_backend_missing_file(tmp_path):
    with pytest.raises(BackendError, match=r"nope.onnx.*file not found"):
        OnnxBackend(tmp_path / "nope.onnx")


def test_onnx_backend_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("hello, this is not a protobuf\n")
    with pytest.raises(BackendError, match=r"notes.onnx.*cannot be loaded by ONNX Runtime, expected an ONNX model"):
        OnnxBackend(path, device="cpu")


def test_onnx_backend_torch_checkpoint_named_onnx(lite, tmp_path):
    path = save_checkpoint(tmp_path / "weights.onnx", lite, epoch=0)
    with pytest.raises(BackendError, match=r"weights.onnx.*PyTorch checkpoint.*dstfuse-export onnx"):
        OnnxBackend(path, device="cpu")


def test_onnx_backend_wrong_signature(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(BackendError, match=r"expected inputs ir, vis and output fused; got inputs \[\('x'"):
        OnnxBackend(path, device="cpu")


def test_onnx_backend_precision_mismatch(onnx_fp32):
    with pytest.raises(BackendError, match=r"precision 'fp16' requested but the file is 'fp32'"):
        OnnxBackend(onnx_fp32, device="cpu", precision="fp16")


def test_onnx_backend_closed(onnx_fp32):
    b = OnnxBackend(onnx_fp32, device="cpu")
    b.close()
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.fuse(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32))


# --- provider selection (pure) ---------------------------------------------------------------


def test_select_providers_cpu_device_uses_cpu_only():
    assert select_providers("auto", available=ALL, device="cpu") == [(CPU_PROVIDER, {})]


def test_select_providers_auto_gpu_prefers_tensorrt_only_with_profile(tmp_path):
    got = select_providers("auto", available=ALL, device="auto", profile=PROFILE, cache_dir=tmp_path)
    assert [name for name, _ in got] == [TRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    assert got[0][1]["trt_profile_max_shapes"] == "ir:1x1x64x96,vis:1x1x64x96"
    without = select_providers("auto", available=ALL, device="auto")
    assert [name for name, _ in without] == [CUDA_PROVIDER, CPU_PROVIDER]
    assert select_providers("auto", available=[CPU_PROVIDER], device="auto") == [(CPU_PROVIDER, {})]


def test_select_providers_cuda_without_gpu_provider_is_an_error():
    with pytest.raises(BackendError, match=r"device 'cuda': ONNX Runtime offers no GPU provider"):
        select_providers("auto", available=[CPU_PROVIDER], device="cuda")


def test_select_providers_explicit_list():
    assert select_providers([CPU_PROVIDER], available=[CPU_PROVIDER]) == [(CPU_PROVIDER, {})]
    assert select_providers([(CUDA_PROVIDER, {"device_id": 1})], available=ALL) == [(CUDA_PROVIDER, {"device_id": 1})]
    with pytest.raises(BackendError, match=r"provider 'CUDAExecutionProvider': not offered"):
        select_providers([CUDA_PROVIDER], available=[CPU_PROVIDER])
    with pytest.raises(BackendError, match="needs a shape profile"):
        select_providers([TRT_PROVIDER], available=ALL)


def test_onnx_backend_explicit_unavailable_provider(onnx_fp32):
    if TRT_PROVIDER in ort.get_available_providers():
        pytest.skip("TensorRT provider present")
    with pytest.raises(BackendError, match="TensorrtExecutionProvider"):
        OnnxBackend(onnx_fp32, providers=[TRT_PROVIDER], profile=PROFILE)


# --- TensorRT options and profiles (pure) ----------------------------------------------------


def test_parse_shape():
    assert parse_shape("1x1x480x640") == (1, 1, 480, 640)  # a tensor shape, in tensor order
    assert parse_shape("640x480") == (1, 1, 480, 640)  # a frame size: WxH, as on every command line
    with pytest.raises(ConfigError, match="expected 'WxH' or 'BxCxHxW'"):
        parse_shape("1x480x640")
    with pytest.raises(ConfigError, match="integers"):
        parse_shape("1x1xaxb")
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_shape("axb")


def test_shape_profile_validation_and_contains():
    p = ShapeProfile.parse("1x1x16x16", "64x48", "2x1x64x96")
    assert p.max_shape == (2, 1, 64, 96)
    assert p.contains((2, 1, 16, 96)) and p.contains((1, 1, 64, 16))
    assert not p.contains((3, 1, 32, 32)) and not p.contains((1, 1, 15, 32)) and not p.contains((1, 32, 32))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile.from_hw((64, 64), (32, 32), (128, 128))
    with pytest.raises(ConfigError, match=r"min_shape: expected positive \(B, 1, H, W\)"):
        ShapeProfile((1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64))
    assert ShapeProfile.from_dict(p.to_dict()) == p
    assert DEFAULT_PROFILE.opt_shape == (1, 1, 480, 640) and DEFAULT_PROFILE.contains((1, 1, 1080, 1920))


def test_tensorrt_provider_options_exact(tmp_path):
    opts = tensorrt_provider_options(PROFILE, cache_dir=tmp_path / "trt", fp16=True, device_id=1, workspace_bytes=1 << 30)
    assert opts == {
        "device_id": 1,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path / "trt"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(tmp_path / "trt"),
        "trt_profile_min_shapes": "ir:1x1x16x16,vis:1x1x16x16",
        "trt_profile_opt_shapes": "ir:1x1x48x64,vis:1x1x48x64",
        "trt_profile_max_shapes": "ir:1x1x64x96,vis:1x1x64x96",
        "trt_max_workspace_size": 1 << 30,
    }
    assert format_profile_shapes((2, 1, 5, 7), names=("a",)) == "a:2x1x5x7"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DSTFUSE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DSTFUSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dstfuse-stream"


# --- factory and auto --------------------------------------------------------------------------


def test_every_backend_name_is_dispatched(lite, onnx_fp32):
    """Each name reaches its own backend (TensorRT: its own 'not available' error on this machine)."""
    made = {name: create_backend(name, model=lite, onnx_path=onnx_fp32, device="cpu") for name in ("auto", "torch", "onnx")}
    assert isinstance(made["torch"], TorchBackend) and isinstance(made["onnx"], OnnxBackend)
    assert made["auto"].name == CPU_AUTO and made["auto"].selection_reason is not None
    assert set(BACKEND_NAMES) == {*made, "tensorrt"}
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="needs device 'cuda'"):
            create_backend("tensorrt", model=lite, device="cpu")


def test_auto_candidates_gpu_order():
    got = auto_candidates(cuda_available=True, ort_providers=ALL, torch_tensorrt_available=False, onnx_path="m.onnx")
    assert [(c.name, c.device, c.precision) for c in got] == [
        ("tensorrt", "cuda", "fp16"), ("onnx", "cuda", "fp16"), ("torch", "cuda", "fp16")
    ]
    no_trt = auto_candidates(cuda_available=True, ort_providers=[CPU_PROVIDER], torch_tensorrt_available=False)
    assert [(c.name, c.precision) for c in no_trt] == [("torch", "fp16")]
    tt = auto_candidates(cuda_available=True, ort_providers=[CPU_PROVIDER], torch_tensorrt_available=True, precision="fp32")
    assert [(c.name, c.precision) for c in tt] == [("tensorrt", "fp32"), ("torch", "fp32")]


def test_auto_candidates_cpu_follows_measurement():
    got = auto_candidates(cuda_available=False, ort_providers=[CPU_PROVIDER], torch_tensorrt_available=False)
    assert [(c.name, c.device, c.precision) for c in got][-1] == ("torch", "cpu", "auto")  # measured per frame size
    assert got[0].name == CPU_AUTO and got[0].precision == "auto" and "CPU" in got[0].reason
    fixed = auto_candidates(cuda_available=False, ort_providers=[CPU_PROVIDER], torch_tensorrt_available=False, onnx_path="m.onnx")
    assert {c.precision for c in fixed} == {"fp32"}  # a given file fixes the precision
    on_gpu_machine = auto_candidates(device="cpu", cuda_available=True, ort_providers=ALL, torch_tensorrt_available=True)
    assert {c.device for c in on_gpu_machine} == {"cpu"}
    with pytest.raises(BackendError, match="device 'cuda'"):
        auto_candidates(device="cuda", cuda_available=False, ort_providers=[CPU_PROVIDER], torch_tensorrt_available=False)


def test_create_backend_errors(lite):
    with pytest.raises(BackendError, match=r"backend 'trt': expected one of \['auto', 'torch', 'onnx', 'tensorrt'\]"):
        create_backend("trt")
    with pytest.raises(BackendError, match=r"unknown option\(s\) \['providers'\]"):
        create_backend("torch", model=lite, providers="auto")
    with pytest.raises(ConfigError, match=r"precision 'int4': expected one of \['auto', 'fp32', 'bf16', 'fp16', 'int8'\]"):
        create_backend("torch", model=lite, precision="int4")
    with pytest.raises(BackendError, match="backend 'torch': precision 'int8' runs on ONNX Runtime"):
        create_backend("torch", model=lite, precision="int8")
    with pytest.raises(BackendError, match="backend 'onnx': precision 'bf16': ONNX Runtime's CPU provider has no bf16"):
        create_backend("onnx", model=lite, precision="bf16")
    with pytest.raises(BackendError, match="needs device 'cuda'"):
        create_backend("tensorrt", model=lite, device="cpu")
    with pytest.raises(BackendError, match="method 'trtexec'"):
        create_backend("tensorrt", model=lite, method="trtexec")


def test_create_backend_torch_and_onnx_path(lite, onnx_fp32):
    t = create_backend("torch", model=lite, device="cpu")
    assert isinstance(t, TorchBackend) and t.precision == "fp32" and t.selection_reason is None
    o = create_backend("onnx", onnx_path=onnx_fp32, device="cpu", threads=1)
    assert isinstance(o, OnnxBackend) and o.active_provider == CPU_PROVIDER
    x = np.random.default_rng(1).random((21, 34), dtype=np.float32)
    assert np.abs(o.fuse(x, 1 - x) - t.fuse(x, 1 - x)).max() <= 1e-4


@pytest.mark.slow
def test_create_backend_auto_on_cpu_exports_once_and_reuses_cache(lite, tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU choice")
    caplog.set_level("INFO", logger="dstfuse_stream.backends")
    backend = create_backend("auto", model=lite, device="cpu", cache_dir=tmp_path)
    assert fp32_of(backend).name == CPU_AUTO and "measured" in backend.selection_reason
    assert f"backend auto -> {backend.describe()}" in caplog.text
    exported = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    mtime = exported[0].stat().st_mtime_ns
    again = create_backend("onnx", model=lite, device="cpu", cache_dir=tmp_path)
    assert again.path == exported[0] and exported[0].stat().st_mtime_ns == mtime  # cache hit, no re-export
    x = np.random.default_rng(2).random((19, 23), dtype=np.float32)
    assert np.abs(backend.fuse(x, x[::-1].copy()) - TorchBackend(lite, device="cpu").fuse(x, x[::-1].copy())).max() <= 1e-4


def test_create_backend_auto_falls_back_to_torch_when_export_fails(lite, monkeypatch, caplog):
    import dstfuse_stream.backends.onnx_cache as onnx_cache

    def failing_export(*args, **kwargs):
        raise BackendError("ONNX parity check failed (simulated)")

    monkeypatch.setattr(onnx_cache, "get_or_export_onnx", failing_export)
    backend = create_backend("auto", model=lite, device="cpu")
    assert isinstance(fp32_of(backend), TorchBackend) and backend.device == "cpu"
    assert backend.selection_reason == "CPU: torch (fallback)"
    assert "parity check failed (simulated)" in caplog.text


def test_a_model_the_tracer_cannot_export_makes_auto_fall_back(lite, monkeypatch, caplog):
    def unsupported(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Unsupported: ONNX export of convolution for kernel of unknown shape.")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    caplog.set_level("WARNING", logger="dstfuse_stream")
    backend = create_backend("auto", model=lite, device="cpu")
    assert isinstance(fp32_of(backend), TorchBackend)
    assert "ONNX export of model 'lite' failed (OnnxExporterError: Unsupported: ONNX export of convolution" in caplog.text
    with pytest.raises(BackendError, match="ONNX export of model 'lite' failed"):
        create_backend("onnx", model=lite, device="cpu")


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx", "onnxscript"])
def test_a_missing_optional_package_is_one_warning_and_a_fallback(lite, monkeypatch, caplog, missing):
    import sys

    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.delitem(sys.modules, name)
    import dstfuse_stream.backends as backends_package

    for name in [m for m in sys.modules if m.startswith("dstfuse_stream.backends.onnx_")]:
        # re-import the exporter against the "missing" package; both undone after the test
        monkeypatch.setattr(backends_package, name.rsplit(".", 1)[1], sys.modules[name])
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    caplog.set_level("WARNING", logger="dstfuse_stream")
    backend = create_backend("auto", model=lite, device="cpu")
    assert isinstance(fp32_of(backend), TorchBackend) and backend.selection_reason == "CPU: torch (fallback)"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"needs the Python package '{missing}" in warnings[0].getMessage() and "trying the next" in warnings[0].getMessage()
    with pytest.raises(BackendError, match=f"{missing!r}"):
        create_backend("onnx", model=lite, device="cpu")


def test_first_export_is_announced_and_an_unwritable_cache_falls_back_to_temp(lite, monkeypatch, tmp_path, caplog):
    import tempfile

    import dstfuse_stream.backends.onnx_export as onnx_export
    from dstfuse_stream.backends.onnx_cache import get_or_export_onnx

    exported = []

    def fake_export(model, path, **kwargs):
        exported.append(path)
        path.write_bytes(b"onnx")

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "not_a_dir").write_text("a file where the cache folder should be")
    caplog.set_level("WARNING", logger="dstfuse_stream")
    path = get_or_export_onnx(model=lite, cache_dir=tmp_path / "not_a_dir")
    assert exported == [path] and path.is_file() and path.is_relative_to(tmp_path / "tmp")
    assert "is not writable" in caplog.text
    assert f"exporting fp32 ONNX to {path}" in caplog.text  # the one-off export names its file


def test_create_backend_missing_weights_is_checkpoint_error(tmp_path):
    from dstfuse_stream.errors import CheckpointError

    with pytest.raises(CheckpointError, match="nope.pt"):
        create_backend("onnx", weights=tmp_path / "nope.pt", device="cpu", cache_dir=tmp_path)


# --- TensorRT without a GPU: clear errors; with one: parity -----------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_torch_tensorrt_backend_without_cuda_is_a_clear_error(lite):
    with pytest.raises(BackendError, match="needs a CUDA GPU"):
        TorchTensorRTBackend(model=lite)
    with pytest.raises(BackendError, match="backend 'tensorrt' is not available"):
        create_backend("tensorrt", model=lite)


def test_load_torch_tensorrt_missing_files(tmp_path):
    with pytest.raises(BackendError, match="file not found"):
        load_torch_tensorrt(tmp_path / "e.ep")
    (tmp_path / "e.ep").write_bytes(b"x")
    with pytest.raises(BackendError, match=r"profile 'e.ep.profile.json' is missing"):
        load_torch_tensorrt(tmp_path / "e.ep")
    assert profile_path_for(tmp_path / "e.ep") == tmp_path / "e.ep.profile.json"


_HAS_TRT = torch.cuda.is_available() and (
    TRT_PROVIDER in ort.get_available_providers() or importlib.util.find_spec("torch_tensorrt") is not None
)


@pytest.mark.gpu
@pytest.mark.skipif(not _HAS_TRT, reason="needs CUDA and TensorRT (ORT provider or torch-tensorrt)")
def test_tensorrt_backend_parity_and_profile_gpu(lite, onnx_fp32, tmp_path):
    backend = create_backend("tensorrt", model=lite, onnx_path=onnx_fp32, profile=PROFILE, cache_dir=tmp_path, precision="fp16")
    x = np.random.default_rng(3).random((1, 1, 37, 53), dtype=np.float32)
    ref = TorchBackend(lite, device="cpu").fuse(x, 1 - x)
    assert np.abs(backend.fuse(x, 1 - x) - ref).max() <= 1e-2
    with pytest.raises(InputShapeError, match="outside the TensorRT profile"):
        backend.fuse(np.zeros((1, 1, 128, 128), np.float32), np.zeros((1, 1, 128, 128), np.float32))


class _InductorLikeError(RuntimeError):
    """Stands in for torch._inductor.exc.InductorError (what torch 2.13 raises compiling the stream CST)."""


_InductorLikeError.__module__ = "torch._inductor.exc"


def test_a_torch_compile_failure_falls_back_to_eager_once_and_other_errors_propagate(lite, monkeypatch, caplog):
    calls = []

    def broken_compile(model, **kwargs):
        def run(ir, vis):
            calls.append(1)
            raise _InductorLikeError("AssertionError: vr must not be None for symbol q2\nmore")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    rng = np.random.default_rng(0)
    ir, vis = (rng.integers(0, 256, (1, 1, 24, 32), dtype=np.uint8) for _ in range(2))
    with TorchBackend(lite, device="cpu", compile=True) as compiled, TorchBackend(lite, device="cpu") as eager:
        assert compiled.compiled and "compiled" in compiled.describe()
        with caplog.at_level("WARNING"):
            first = compiled.fuse_batch(ir, vis)
        np.testing.assert_array_equal(first, eager.fuse_batch(ir, vis))
        assert compiled.compile_error == "_InductorLikeError: AssertionError: vr must not be None for symbol q2"
        assert not compiled.compiled and "compiled" not in compiled.describe() and "torch.compile failed" in caplog.text
        np.testing.assert_array_equal(compiled.fuse_batch(ir, vis), first)
        assert len(calls) == 1  # not retried

    def failing_compile(model, **kwargs):
        def run(ir, vis):
            raise ValueError("a real error")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    with TorchBackend(lite, device="cpu", compile=True) as backend, pytest.raises(ValueError, match="a real error"):
        backend.fuse_batch(ir, vis)
