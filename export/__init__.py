"""Turn DSTFuse checkpoints into deployable artefacts: ONNX (fp32/fp16) and TensorRT engines.

Modules: :mod:`export.onnx_export`, :mod:`export.parity`, :mod:`export.cache`,
:mod:`export.tensorrt_build`, :mod:`export.compare`; CLI :mod:`export.cli` (``dstfuse-export``).
"""
