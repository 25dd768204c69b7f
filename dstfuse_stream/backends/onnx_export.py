"""Export ``DSTFuse.forward(ir, vis) -> fused`` to ONNX (fp32 and fp16) with metadata and a parity check.

Part of the runtime (``create_backend("onnx"/"auto")`` exports on first use, see
:mod:`dstfuse_stream.backends.onnx_cache`), imported only when an export is needed. ``onnx``,
``onnxscript`` and ``onnx-ir`` are optional dependencies: a missing one is a
:class:`~dstfuse_stream.errors.BackendError`, so ``auto`` falls back to torch. ``dstfuse-export``
(``export/``) is the command line on top of this module.

The exported graph has inputs ``ir`` and ``vis`` and output ``fused``, all float32
``(batch, 1, height, width)`` with values in [0, 1]; ``batch``, ``height`` and ``width`` are named
dynamic axes and any size works, odd and non-square included.

How (measured with torch 2.13, see ``docs/export.md``):

* **Exporter: the TorchScript tracer** (``torch.onnx.export(..., dynamo=False)``). The dynamo exporter
  (default since torch 2.9) traces ``DSTFuse.pad_to_multiple``'s ``if pad == 0`` branch as a shape
  guard: exported at 64 x 64 the graph has no padding and fails at 97 x 131 in ONNX Runtime; exported
  at an odd size with named ``Dim``s ``torch.export`` stops with a constraint error. The tracer,
  run at :data:`TRACE_SIZE_HW` (neither side a multiple of 4), records the padding branch with the pad
  amounts computed from the input shape (``(-h) % 4``), which is a plain ``Pad`` of 0 for sizes that
  are already multiples of 4. Every export is checked at multiple-of-4, odd and non-square sizes.
* **Opset 17** (:data:`DEFAULT_OPSET`): the newest opset that TensorRT 8.6's ONNX parser accepts
  (TensorRT 10 and ONNX Runtime >= 1.14 accept it too); the graph uses no op that changed later.
* **Simplification**: the onnxscript optimizer (constant folding, shape-op cleanup) cuts the traced
  graph's node count; the result is kept only if ONNX Runtime gives the same output as the raw graph.
* **fp16**: onnxruntime's ``float16.convert_float_to_float16(keep_io_types=True)`` converts weights
  and activations to float16; inputs and output stay float32 (casts inside the graph), so callers
  feed the same arrays to either variant.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from dstfuse_stream import __version__
from dstfuse_stream.backends.onnx_cache import DEFAULT_OPSET
from dstfuse_stream.backends.work_scale import format_work_scale
from dstfuse_stream.errors import BackendError, ConfigError, require_module
from dstfuse_stream.model import DSTFuse

if TYPE_CHECKING:
    from dstfuse_stream.backends.onnx_parity import ParityReport

_INSTALL = "pip install onnx onnxscript onnx-ir onnxruntime (all part of dstfuse-stream's dependencies)"
onnx = require_module("onnx", purpose="ONNX export", install=_INSTALL)

__all__ = [
    "DEFAULT_OPSET",
    "SUPPORTED_OPSETS",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "DYNAMIC_AXES",
    "TRACE_SIZE_HW",
    "PRECISIONS",
    "check_precision",
    "require_dependencies",
    "GraphInfo",
    "ExportResult",
    "trace_onnx",
    "simplify_graph",
    "convert_to_fp16",
    "build_fp32_graph",
    "build_metadata",
    "read_metadata",
    "count_nodes",
    "state_dict_sha256",
    "export_onnx",
]

logger = logging.getLogger(__name__)

#: 17: TensorRT 8.6's parser maximum; 18: accepted by TensorRT 10 and ONNX Runtime.
SUPPORTED_OPSETS = (17, 18)
INPUT_NAMES = ("ir", "vis")
OUTPUT_NAMES = ("fused",)
_AXES = {0: "batch", 2: "height", 3: "width"}
DYNAMIC_AXES = {name: dict(_AXES) for name in INPUT_NAMES + OUTPUT_NAMES}
#: Trace size (H, W): neither is a multiple of 4, so the padding branch is recorded.
TRACE_SIZE_HW = (61, 67)
#: Precisions an export writes directly (int8 is a quantized fp32 export: :mod:`~dstfuse_stream.backends.onnx_quant`).
PRECISIONS = ("fp32", "fp16")
#: Raw and simplified graphs must agree this closely in ONNX Runtime for the simplification to be kept.
_SIMPLIFY_TOL = 1e-5
_SIMPLIFY_CHECK_SHAPES = ((1, 1, 64, 64), (2, 1, 37, 53))


@dataclass(frozen=True)
class GraphInfo:
    """How the fp32 graph was produced: node counts and whether the simplified graph was kept."""

    opset: int
    nodes_traced: int
    nodes_simplified: int | None
    simplified: bool
    simplify_max_abs_diff: float | None
    trace_s: float
    simplify_s: float


@dataclass
class ExportResult:
    """One written ``.onnx`` file and what was checked about it."""

    path: Path
    precision: str
    graph: GraphInfo
    nodes: int
    metadata: dict[str, str]
    parity: ParityReport | None = None
    parity_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "precision": self.precision,
            "nodes": self.nodes,
            "graph": asdict(self.graph),
            "metadata": self.metadata,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "parity_path": None if self.parity_path is None else str(self.parity_path),
        }


def count_nodes(model: onnx.ModelProto) -> int:
    """Nodes in the main graph (``Constant`` nodes included)."""
    return len(model.graph.node)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Hex SHA-256 over the model's state_dict (names, dtypes, shapes, bytes): a key for in-memory models."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset {opset}: expected one of {list(SUPPORTED_OPSETS)} (TensorRT and ONNX Runtime both accept these)")


def trace_onnx(model: DSTFuse, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``model.forward`` (fp32, CPU) to an ONNX graph with named dynamic axes; no simplification."""
    _check_opset(opset)
    model = copy.deepcopy(model).float().cpu().eval()
    height, width = TRACE_SIZE_HW
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(1, 1, height, width, generator=gen) for _ in INPUT_NAMES)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation and the tracer warns about the input checks
        # and the pad branch it records; the parity checks below are what guard the result.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        try:
            torch.onnx.export(
                model,
                example,
                buffer,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=DYNAMIC_AXES,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # torch.onnx raises OnnxExporterError/RuntimeError for unsupported ops
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(
                f"ONNX export of model {model.config.name!r} failed ({type(exc).__name__}: {first_line[:300]})"
            ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    _fix_io_shapes(proto)
    return proto


def _fix_io_shapes(proto: onnx.ModelProto) -> None:
    """Inputs/outputs get ``(batch, 1, height, width)`` (the tracer names the output's channel axis after a Slice)."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise BackendError(f"traced graph {value.name!r}: expected rank 4, got rank {len(dims)}")
        for axis, dim in enumerate(dims):
            if axis == 1:
                dim.Clear()
                dim.dim_value = 1
            else:
                dim.Clear()
                dim.dim_param = _AXES[axis]


def _run_cpu(proto: onnx.ModelProto, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    ort = require_module("onnxruntime", purpose="ONNX Runtime", install=_INSTALL)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = []
    for i, shape in enumerate(shapes):
        rng = np.random.default_rng(i)
        feeds = {name: rng.random(shape, dtype=np.float32) for name in INPUT_NAMES}
        outputs.append(session.run(None, feeds)[0])
    return outputs


def simplify_graph(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, float]:
    """Run the onnxscript optimizer; return the new graph and its max |difference| to ``proto`` in ORT."""
    optimizer = require_module("onnxscript.optimizer", purpose="ONNX graph simplification", install=_INSTALL)
    simplified = optimizer.optimize(copy.deepcopy(proto))
    _fix_io_shapes(simplified)
    before = _run_cpu(proto, _SIMPLIFY_CHECK_SHAPES)
    after = _run_cpu(simplified, _SIMPLIFY_CHECK_SHAPES)
    diff = max(float(np.abs(a - b).max()) if a.shape == b.shape else float("inf") for a, b in zip(before, after))
    return simplified, diff


def build_fp32_graph(model: DSTFuse, *, opset: int = DEFAULT_OPSET, simplify: bool = True) -> tuple[onnx.ModelProto, GraphInfo]:
    """Trace and (optionally) simplify; the simplified graph is kept only if ORT output is unchanged."""
    t0 = time.perf_counter()
    traced = trace_onnx(model, opset=opset)
    trace_s = time.perf_counter() - t0
    nodes_traced = count_nodes(traced)
    if not simplify:
        return traced, GraphInfo(opset, nodes_traced, None, False, None, trace_s, 0.0)
    t0 = time.perf_counter()
    simplified, diff = simplify_graph(traced)
    simplify_s = time.perf_counter() - t0
    keep = diff <= _SIMPLIFY_TOL
    if keep:
        logger.info("simplified graph: %d -> %d nodes (ORT max |diff| %.3g)", nodes_traced, count_nodes(simplified), diff)
    else:
        logger.warning(
            "simplified graph differs from the traced one by %.3g > %.0e in ONNX Runtime; keeping the traced graph",
            diff,
            _SIMPLIFY_TOL,
        )
    info = GraphInfo(opset, nodes_traced, count_nodes(simplified), keep, diff, trace_s, simplify_s)
    return (simplified if keep else traced), info


def convert_to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and activations; inputs/output stay float32 (``keep_io_types=True``)."""
    float16 = require_module("onnxruntime.transformers.float16", purpose="fp16 ONNX conversion", install=_INSTALL)
    converted = float16.convert_float_to_float16(copy.deepcopy(proto), keep_io_types=True)
    # The converter appends the input casts at the end of the node list; ONNX requires topological order.
    onnx_ir = require_module("onnx_ir", purpose="fp16 ONNX conversion", install=_INSTALL)
    ir_model = onnx_ir.serde.deserialize_model(converted)
    ir_model.graph.sort()
    converted = onnx_ir.serde.serialize_model(ir_model)
    _fix_io_shapes(converted)
    return converted


def build_metadata(
    model: DSTFuse,
    *,
    precision: str,
    opset: int,
    checkpoint_sha256: str | None = None,
    checkpoint_name: str | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` written into every exported file (all values are strings)."""
    return {
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "checkpoint_sha256": checkpoint_sha256 or "",
        "checkpoint": checkpoint_name or "",
        "state_dict_sha256": state_dict_sha256(model),
        "input_names": ",".join(INPUT_NAMES),
        "output_names": ",".join(OUTPUT_NAMES),
        "value_range": "[0, 1]",
        "layout": "(B, 1, H, W)",
        "dynamic_axes": "batch,height,width",
        "io_dtype": "float32",
        "precision": precision,
        "work_scale": format_work_scale(float(getattr(model, "work_scale", 1.0))),
        "opset": str(opset),
        "exporter": f"torch.onnx TorchScript tracer (torch {torch.__version__})",
        "dstfuse_stream_version": __version__,
    }


def _set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "DSTFuse fused = f(ir, vis); float32 (B, 1, H, W) in [0, 1]"
    proto.producer_name = "dstfuse-stream"
    proto.producer_version = __version__


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (weights are not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def require_dependencies(*, precision: str = "fp32", simplify: bool = True) -> None:
    """Raise :class:`BackendError` now, before any work, if a package the export needs is missing."""
    require_module("onnxruntime", purpose="the ONNX parity check", install=_INSTALL)
    if simplify:
        require_module("onnxscript.optimizer", purpose="ONNX graph simplification", install=_INSTALL)
    if precision == "fp16":
        require_module("onnx_ir", purpose="fp16 ONNX conversion", install=_INSTALL)


def check_precision(precision: str) -> None:
    """An export needs an explicit precision it can write (:data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        extra = "; int8 quantizes an fp32 export (dstfuse-export int8)" if precision == "int8" else ""
        raise ConfigError(f"precision {precision!r}: an export needs one of {list(PRECISIONS)}{extra}")


def export_onnx(
    model: DSTFuse,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    checkpoint_sha256: str | None = None,
    checkpoint_name: str | None = None,
    check: bool = True,
    real_pairs: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    parity_shapes: Sequence[Sequence[int]] | None = None,
    tolerance: float | None = None,
    graph: tuple[onnx.ModelProto, GraphInfo] | None = None,
    references: dict[str, np.ndarray] | None = None,
) -> ExportResult:
    """Write ``model`` to ``path`` as ONNX and (``check=True``) verify it against PyTorch.

    Args:
        model: the network (any device/dtype; exported as fp32 on CPU from a copy).
        path: output ``.onnx`` file; the parity report goes to ``<path stem>.parity.json`` beside it.
        precision: ``"fp32"`` or ``"fp16"`` (fp16 weights/activations, float32 inputs/output).
        opset: 17 (default) or 18.
        simplify: run the onnxscript optimizer (kept only if ONNX Runtime output is unchanged).
        checkpoint_sha256, checkpoint_name: source checkpoint, stored in the metadata.
        check: run :func:`~dstfuse_stream.backends.onnx_parity.check_parity` on CPU and raise :class:`BackendError` if the
            max abs difference exceeds ``tolerance``.
        real_pairs: ``(ir, vis, label)`` float32 ``(H, W)`` images checked at native size.
        parity_shapes: random-input shapes ``(B, 1, H, W)``; default
            :data:`~dstfuse_stream.backends.onnx_parity.DEFAULT_SHAPES`.
        tolerance: default :data:`~dstfuse_stream.backends.onnx_parity.DEFAULT_TOLERANCE` of the precision.
        graph: a prebuilt fp32 graph from :func:`build_fp32_graph` (to export several precisions
            from one trace).
        references: PyTorch-output cache shared between exports of one model (see ``check_parity``).
    """
    from dstfuse_stream.backends.onnx_parity import DEFAULT_SHAPES, check_parity

    check_precision(precision)
    path = Path(path)
    proto, info = graph if graph is not None else build_fp32_graph(model, opset=opset, simplify=simplify)
    proto = copy.deepcopy(proto)
    if precision == "fp16":
        proto = convert_to_fp16(proto)
    metadata = build_metadata(
        model, precision=precision, opset=info.opset, checkpoint_sha256=checkpoint_sha256, checkpoint_name=checkpoint_name
    )
    _set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: two processes may fill one cache
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    result = ExportResult(path=path, precision=precision, graph=info, nodes=count_nodes(proto), metadata=metadata)
    logger.info("wrote %s (%s, %d nodes)", path, precision, result.nodes)
    if check:
        report = check_parity(
            model,
            path,
            shapes=DEFAULT_SHAPES if parity_shapes is None else parity_shapes,
            real_pairs=real_pairs,
            tolerance=tolerance,
            references=references,
        )
        result.parity = report
        result.parity_path = path.with_name(path.stem + ".parity.json")
        result.parity_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if not report.passed:
            raise BackendError(
                f"ONNX parity check failed for {str(path)!r}: max abs difference {report.max_abs_diff:.3g} "
                f"> tolerance {report.tolerance:.3g} (worst case {report.worst_case}); report: {result.parity_path}"
            )
    return result
