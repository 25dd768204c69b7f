"""``dstfuse-export triton``: an NVIDIA Triton Inference Server model repository around an ONNX export.

::

    REPO/
      dstfuse/
        config.pbtxt          # onnxruntime backend, inputs/outputs read from the ONNX graph
        1/model.onnx          # the exported (ir, vis) -> fused graph

The batch dimension of the export is Triton's (``max_batch_size``); the other dimensions are
copied from the graph, so the dynamic height and width become ``-1`` and any frame size is
accepted. Dynamic batching only merges requests of the same shape, so cameras of one resolution
share batches. Serve it with ``tritonserver --model-repository REPO``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dstfuse_stream.errors import ConfigError, require_module

__all__ = ["write_triton_repository", "config_pbtxt", "KINDS"]

KINDS = ("KIND_GPU", "KIND_CPU")
#: ONNX TensorProto element type -> Triton data type
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 7: "TYPE_INT64"}


def _tensors(values: list, what: str) -> list[str]:
    entries = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = _TRITON_TYPES.get(tensor.elem_type)
        if dtype is None:
            raise ConfigError(f"ONNX {what} {value.name!r}: element type {tensor.elem_type} has no Triton mapping here")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:]  # [0] is the batch
        entries.append(f'  {{\n    name: "{value.name}"\n    data_type: {dtype}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}')
    return entries


def config_pbtxt(onnx_path: str | os.PathLike[str], *, name: str, max_batch_size: int = 8, instances: int = 1,
                 kind: str = "KIND_GPU", max_queue_delay_us: int = 2000) -> str:
    """The ``config.pbtxt`` text for the ONNX file at ``onnx_path`` (inputs and outputs from its graph)."""
    onnx = require_module("onnx", purpose="dstfuse-export triton", install="pip install onnx")
    if kind not in KINDS:
        raise ConfigError(f"instance kind {kind!r}: expected one of {list(KINDS)}")
    if max_batch_size < 1 or instances < 1:
        raise ConfigError(f"max batch size and instances: expected >= 1, got {max_batch_size} and {instances}")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return "\n".join([
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensors(inputs, "input")) + "\n]",
        "output [\n" + ",\n".join(_tensors(list(graph.output), "output")) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
        "",
    ])


def write_triton_repository(onnx_path: str | os.PathLike[str], repo: str | os.PathLike[str], *, name: str = "dstfuse",
                            version: int = 1, **config: object) -> Path:
    """Copy ``onnx_path`` to ``repo/name/version/model.onnx`` and write ``repo/name/config.pbtxt``;
    returns the model folder. ``config``: :func:`config_pbtxt` options."""
    text = config_pbtxt(onnx_path, name=name, **config)  # type: ignore[arg-type]
    model_dir = Path(repo) / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / str(version) / "model.onnx")
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir
