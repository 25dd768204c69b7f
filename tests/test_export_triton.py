"""dstfuse-export triton: the model repository layout and config.pbtxt read from the ONNX graph."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from dstfuse_export.cli import main
from dstfuse_export.triton import config_pbtxt, write_triton_repository
from dstfuse_stream.errors import ConfigError


def tiny_fusion_onnx(path, *, io_type=TensorProto.FLOAT):
    """``fused = max(ir, vis)`` with the exporter's signature: (batch, 1, height, width) in and out."""
    dims = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Max", ["ir", "vis"], ["fused"])], "tiny",
        [helper.make_tensor_value_info(n, io_type, dims) for n in ("ir", "vis")],
        [helper.make_tensor_value_info("fused", io_type, dims)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


EXPECTED = '''name: "fuse"
backend: "onnxruntime"
max_batch_size: 4
input [
  {
    name: "ir"
    data_type: TYPE_FP32
    dims: [ 1, -1, -1 ]
  },
  {
    name: "vis"
    data_type: TYPE_FP32
    dims: [ 1, -1, -1 ]
  }
]
output [
  {
    name: "fused"
    data_type: TYPE_FP32
    dims: [ 1, -1, -1 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
}
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
'''


def test_config_has_dynamic_height_and_width_from_the_graph(tmp_path):
    model = tiny_fusion_onnx(tmp_path / "m.onnx")
    assert config_pbtxt(model, name="fuse", max_batch_size=4, instances=2, kind="KIND_CPU") == EXPECTED
    half = tiny_fusion_onnx(tmp_path / "h.onnx", io_type=TensorProto.FLOAT16)
    assert config_pbtxt(half, name="h").count("TYPE_FP16") == 3
    with pytest.raises(ConfigError, match="instance kind"):
        config_pbtxt(model, name="x", kind="GPU")


def test_cli_writes_the_repository_layout(tmp_path, capsys):
    model = tiny_fusion_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    assert main(["triton", "--onnx", str(model), "--repo", str(repo), "--name", "fuse", "--max-batch-size", "4",
                 "--instances", "2", "--kind", "KIND_CPU"]) == 0
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        "fuse/1/model.onnx", "fuse/config.pbtxt"]
    assert (repo / "fuse" / "config.pbtxt").read_text() == EXPECTED
    assert (repo / "fuse" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert write_triton_repository(model, repo, name="fuse", version=2).joinpath("2", "model.onnx").is_file()
