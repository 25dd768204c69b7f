"""``dstfuse-export``: checkpoints to deployable artefacts (installed as ``dstfuse_export``).

The exporter, parity check and export cache live in the runtime
(:mod:`dstfuse_stream.backends.onnx_export`, :mod:`~dstfuse_stream.backends.onnx_parity`,
:mod:`~dstfuse_stream.backends.onnx_cache`), because ``backend="auto"`` exports on first use. This
package holds the command line (:mod:`dstfuse_export.cli`) and its extras: several precisions from one
trace (:mod:`~dstfuse_export.onnx_export`), real parity pairs (:mod:`~dstfuse_export.parity`),
TensorRT engine builders (:mod:`~dstfuse_export.tensorrt_build`) and the CPU runtime comparison
(:mod:`~dstfuse_export.compare`).
"""
