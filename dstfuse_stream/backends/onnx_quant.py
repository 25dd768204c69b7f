"""int8 ONNX: ONNX Runtime static quantization of an fp32 export, calibrated on real (IR, visible) crops.

How (``onnxruntime.quantization.quantize_static``):

* **QDQ format, per-channel int8 weights, uint8 activations** (u8s8: the kernels ONNX Runtime runs
  with VNNI/AMX dot products on x86), MinMax calibration.
* **Only convolutions are quantized** (:data:`QUANT_OPS`): the network's decisions come from its
  convs, while the full-resolution band blending after them stays in float. Measured on real
  frames (``stream`` at work scale 0.5): convs only 61.6 dB PSNR vs fp32, every op 45.8 dB at no
  gain in speed (docs/benchmarks.md).
* The result keeps float32 inputs and output, and the fp32 file's metadata with ``precision`` set to
  ``int8`` and a ``calibration`` entry (sources, crop count and size, seed, PSNR vs fp32 on held-out
  crops), so :class:`~dstfuse_stream.backends.onnx_backend.OnnxBackend` opens it like any export.

The calibration crops come from the caller (``dstfuse-export int8`` reads them from training folders);
:func:`quantize_cached` writes the file where ``create_backend(precision="int8")`` looks for it
(:func:`~dstfuse_stream.backends.onnx_cache.cached_onnx_path`). onnxruntime is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dstfuse_stream.errors import ConfigError, require_module
from dstfuse_stream.metrics import psnr

if TYPE_CHECKING:
    from dstfuse_stream.model import DSTFuse

__all__ = ["QUANT_OPS", "CalibrationPair", "quantize_int8", "quantize_cached"]

logger = logging.getLogger(__name__)

#: Op types quantized to int8 (everything else stays float).
QUANT_OPS = ("Conv", "ConvTranspose")
#: ``(ir, vis)``: uint8 luma ``(H, W)`` of one size.
CalibrationPair = tuple[np.ndarray, np.ndarray]
_INSTALL = "pip install onnxruntime"


def _feeds(pair: CalibrationPair) -> dict[str, np.ndarray]:
    ir, vis = pair
    if ir.shape != vis.shape or ir.ndim != 2 or ir.dtype != np.uint8 or vis.dtype != np.uint8:
        raise ConfigError(f"calibration pair: expected two uint8 (H, W) arrays of one shape, got {ir.shape} {ir.dtype} and {vis.shape} {vis.dtype}")
    return {name: (x[None, None].astype(np.float32) / np.float32(255.0)) for name, x in (("ir", ir), ("vis", vis))}


def _reader(pairs: Sequence[CalibrationPair]) -> Any:
    quantization = require_module("onnxruntime.quantization", purpose="int8 quantization", install=_INSTALL)

    class PairReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(pairs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            pair = next(self._items, None)
            return None if pair is None else _feeds(pair)

    return PairReader()


def _session(path: Path) -> Any:
    ort = require_module("onnxruntime", purpose="int8 quantization", install=_INSTALL)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: Sequence[CalibrationPair],
    *,
    held_out: Sequence[CalibrationPair] = (),
    info: dict[str, Any] | None = None,
    ops: Sequence[str] = QUANT_OPS,
) -> dict[str, Any]:
    """Quantize the fp32 export ``fp32_path`` to ``out_path`` (int8 QDQ) with ``calibration`` pairs.

    ``held_out`` pairs (not used for calibration) are fused by both files and the PSNR of int8 vs
    fp32 recorded (``psnr_db``: min and mean). ``info`` (sources, seed, ...) is stored with it in
    the ``calibration`` metadata entry. Returns that entry.
    """
    onnx = require_module("onnx", purpose="int8 quantization", install="pip install onnx")
    quantization = require_module("onnxruntime.quantization", purpose="int8 quantization", install=_INSTALL)
    shape_inference = require_module("onnxruntime.quantization.shape_inference", purpose="int8 quantization", install=_INSTALL)
    if not calibration:
        raise ConfigError("int8 calibration: expected at least one (ir, vis) pair, got none")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = onnx.load(str(fp32_path))
    metadata = {p.key: p.value for p in source.metadata_props}
    if metadata.get("precision", "fp32") != "fp32":
        raise ConfigError(f"int8 quantization: expected an fp32 export, {fp32_path} is {metadata.get('precision')!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dstfuse-int8-", dir=out_path.parent) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # ORT graph optimisation + ONNX shape inference (symbolic inference cannot follow the pad arithmetic)
        shape_inference.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared),
            str(quantized),
            _reader(calibration),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(ops),
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        entry: dict[str, Any] = {**(info or {}), "pairs": len(calibration), "ops": list(ops), "format": "QDQ u8s8 per-channel, MinMax"}
        if held_out:
            ref, q8 = _session(fp32_path), _session(quantized)
            scores = [psnr(q8.run(None, _feeds(p))[0][0, 0], ref.run(None, _feeds(p))[0][0, 0]) for p in held_out]
            entry["psnr_db"] = {"pairs": len(scores), "min": min(scores), "mean": float(np.mean(scores))}
        model = onnx.load(str(quantized))
        del model.metadata_props[:]
        for key, value in {**metadata, "precision": "int8", "calibration": json.dumps(entry, sort_keys=True)}.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        tmp_out = out_path.with_name(f"{out_path.name}.{os.getpid()}.tmp")
        onnx.save(model, str(tmp_out))
        os.replace(tmp_out, out_path)
    logger.info("wrote int8 model %s (%s)", out_path, entry)
    return entry


def quantize_cached(
    calibration: Sequence[CalibrationPair],
    *,
    weights: str | os.PathLike[str] | None = None,
    model: DSTFuse | None = None,
    work_scale: Any = "auto",
    held_out: Sequence[CalibrationPair] = (),
    info: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Quantize the cached fp32 export of ``weights``/``model`` at ``work_scale`` and store the int8
    file where ``create_backend(..., precision="int8")`` finds it (or at ``out``). Returns its path
    and the calibration entry."""
    from dstfuse_stream.backends.onnx_cache import export_key, get_or_export_onnx

    key = export_key(weights, model=model, work_scale=work_scale, cache_dir=cache_dir)
    fp32 = get_or_export_onnx(weights, model=model, precision="fp32", work_scale=key.work_scale, cache_dir=cache_dir)
    target = Path(out) if out is not None else key.path("int8")
    entry = quantize_int8(fp32, target, calibration, held_out=held_out, info={**(info or {}), "work_scale": key.work_scale})
    return target, entry
