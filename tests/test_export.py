"""ONNX export: names, dynamic axes, metadata, simplification, fp32/fp16 parity with PyTorch, cache, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from dstfuse_export.cli import main
from dstfuse_export.onnx_export import export_variants
from dstfuse_export.parity import load_real_pairs
from dstfuse_stream import DSTFuse, get_config
from dstfuse_stream.backends import onnx_cache, onnx_export
from dstfuse_stream.backends.onnx_export import DEFAULT_OPSET, export_onnx, read_metadata, state_dict_sha256
from dstfuse_stream.backends.onnx_parity import DEFAULT_SHAPES, check_parity, random_pair
from dstfuse_stream.checkpoint import file_sha256, save_checkpoint
from dstfuse_stream.errors import ConfigError


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return DSTFuse(get_config("lite")).eval()


@pytest.fixture(scope="module")
def exported(lite, tmp_path_factory):
    """fp32 + fp16 exports of the random lite model, from a checkpoint, with the export-time parity check."""
    root = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(root / "lite.pt", lite, epoch=0)
    fp32, fp16 = export_variants(
        lite, root, stem="lite", checkpoint_sha256=file_sha256(ckpt), checkpoint_name=ckpt.name
    )
    return {"ckpt": ckpt, "fp32": fp32, "fp16": fp16}


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_graph_has_named_io_and_dynamic_axes(exported):
    for precision in ("fp32", "fp16"):
        proto = onnx.load(str(exported[precision].path))
        assert [i.name for i in proto.graph.input] == ["ir", "vis"]
        assert [o.name for o in proto.graph.output] == ["fused"]
        for value in list(proto.graph.input) + list(proto.graph.output):
            assert _dims(value) == ["batch", 1, "height", "width"]
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp16 keeps float32 I/O
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_fp16_variant_stores_half_weights(exported):
    proto = onnx.load(str(exported["fp16"].path))
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    types = {init.data_type for init in proto.graph.initializer if init.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    assert exported["fp16"].path.stat().st_size < 0.7 * exported["fp32"].path.stat().st_size


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_metadata_props(exported, lite):
    for precision in ("fp32", "fp16"):
        meta = read_metadata(exported[precision].path)
        assert json.loads(meta["config"]) == lite.config.to_dict()
        assert meta["checkpoint_sha256"] == file_sha256(exported["ckpt"])
        assert meta["checkpoint"] == "lite.pt"
        assert meta["state_dict_sha256"] == state_dict_sha256(lite)
        assert (meta["input_names"], meta["output_names"]) == ("ir,vis", "fused")
        assert (meta["value_range"], meta["layout"]) == ("[0, 1]", "(B, 1, H, W)")
        assert meta["precision"] == precision
        assert meta["dstfuse_stream_version"] == "0.1.0"


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_simplification_cut_nodes_and_was_kept(exported):
    graph = exported["fp32"].graph
    assert graph.simplified and graph.simplify_max_abs_diff <= 1e-5
    assert graph.nodes_simplified < graph.nodes_traced / 2
    assert exported["fp32"].nodes == graph.nodes_simplified


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_fp32_parity_report_covers_odd_sizes_and_is_stored(exported):
    result = exported["fp32"]
    report = json.loads(result.parity_path.read_text())["parity"]
    assert report == result.parity.to_dict()
    shapes = [tuple(c["shape"]) for c in report["cases"]]
    assert shapes == [tuple(s) for s in DEFAULT_SHAPES]
    assert (1, 1, 97, 131) in shapes and (1, 1, 240, 320) in shapes
    assert report["passed"] and report["tolerance"] == 1e-4
    assert max(c["max_abs_diff"] for c in report["cases"]) <= 1e-4


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_fp16_parity_bound(exported):
    fp16, fp32 = exported["fp16"].parity, exported["fp32"].parity
    assert fp16.passed and fp16.tolerance == 1e-2 and fp16.max_abs_diff <= 1e-2
    # the fp16 graph really computes in half precision: clearly further from torch than fp32
    assert fp16.max_abs_diff > 10 * fp32.max_abs_diff


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_exported_graph_is_not_specialised_to_the_trace_size(exported, lite):
    """Sizes that are multiples of 4, tiny, odd in only one side, batch 3: all match torch."""
    report = check_parity(lite, exported["fp32"].path, shapes=[(1, 1, 8, 8), (1, 1, 5, 3), (3, 1, 16, 21)])
    assert report.max_abs_diff <= 1e-4


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_real_pair_parity_at_native_size(exported, lite, shared_data):
    real = load_real_pairs(shared_data / "roadscene", limit=1)
    assert real[0][0].shape == (301, 496)  # odd and non-square
    report = check_parity(lite, exported["fp32"].path, shapes=(), real_pairs=real)
    assert report.cases[0].shape == (1, 1, 301, 496)
    assert report.max_abs_diff <= 1e-4


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_parity_detects_a_different_model(exported):
    torch.manual_seed(1)
    other = DSTFuse(get_config("lite")).eval()
    report = check_parity(other, exported["fp32"].path, shapes=[(1, 1, 32, 32)])
    assert not report.passed and report.max_abs_diff > 1e-3


def test_export_rejects_bad_options(lite, tmp_path):
    with pytest.raises(ConfigError, match="opset 11"):
        export_onnx(lite, tmp_path / "m.onnx", opset=11)
    with pytest.raises(ConfigError, match="precision 'int8'"):
        export_onnx(lite, tmp_path / "m.onnx", precision="int8")
    with pytest.raises(ConfigError, match="precision 'auto': an export needs one of"):
        export_onnx(lite, tmp_path / "m.onnx", precision="auto")


def test_random_pair_is_reproducible():
    a = random_pair((1, 1, 4, 5), seed=3)
    b = random_pair((1, 1, 4, 5), seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].dtype == np.float32


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_cache_hit_skips_export_and_mismatch_reexports(exported, tmp_path, monkeypatch):
    ckpt = exported["ckpt"]
    calls = []

    def fake_export(model, path, **kwargs):
        calls.append(path)
        shutil.copy(exported["fp32"].path, path)

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    path = onnx_cache.cached_onnx_path(file_sha256(ckpt), precision="fp32", cache_dir=tmp_path)
    path.parent.mkdir(parents=True)
    shutil.copy(exported["fp32"].path, path)
    assert onnx_cache.get_or_export_onnx(ckpt, cache_dir=tmp_path) == path
    assert calls == []  # hit: metadata sha256 matches the checkpoint
    path.write_text("not an onnx file")
    assert onnx_cache.get_or_export_onnx(ckpt, cache_dir=tmp_path) == path
    assert calls == [path]


def test_cli_missing_weights_is_one_line_exit_2(tmp_path, capsys):
    assert main(["onnx", "--weights", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dstfuse-export: error:") and "nope.pt" in err and "\n" not in err


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_cli_tensorrt_without_gpu_is_a_clear_error(exported, capsys):
    if torch.cuda.is_available():
        pytest.skip("this checks the no-GPU error")
    code = main(["tensorrt", "--onnx", str(exported["fp32"].path), "--min", "1x1x8x8", "--opt", "64x64", "--max", "128x128"])
    assert code == 2
    assert "TensorRT provider not available" in capsys.readouterr().err


@pytest.mark.slow  # shares the module's export fixture (~8-25 s on 2 busy cores)
def test_cli_exports_requested_precision(exported, tmp_path, capsys):
    """The export-time parity report is covered by the ``exported`` fixture; here: arguments -> files."""
    argv = ["onnx", "--weights", str(exported["ckpt"]), "--out-dir", str(tmp_path), "--precision", "fp32"]
    assert main([*argv, "--no-simplify", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "lite_fp32.onnx").is_file() and not (tmp_path / "lite_fp16.onnx").exists()
    assert not (tmp_path / "lite_fp32.parity.json").exists()
    assert f"{tmp_path / 'lite_fp32.onnx'}: fp32" in out
    assert read_metadata(tmp_path / "lite_fp32.onnx")["checkpoint_sha256"] == file_sha256(exported["ckpt"])
