"""``dstfuse-eval`` as a library: each evaluation is a function that writes its report and returns it.

Modules (numpy/OpenCV; torch only inside :class:`~.methods.DSTFuseMethod`, when the network runs):

* :mod:`.data`: 8-bit luma pairs, frame folders, video pairs, sub-sampling.
* :mod:`.methods`: the compared methods (network, classic baselines, folders of fused images).
* :mod:`.fusion_eval`: metrics per dataset and method, best-of-8 counts, grain and halo.
* :mod:`.blur_eval`: fused(ir, blurred vis) against the sharp sources; CST deblur gain.
* :mod:`.temporal_eval`: temporal stability of fused video.
* :mod:`.attention_eval`: the mapping attention on sharp vs blurred frames and regions.
* :mod:`.scorecard`: all of the above against issue 14's criteria, PASS/FAIL.
* :mod:`.tables`, :mod:`.figures`: Markdown/CSV/JSON and PNG outputs; :mod:`.cli`: ``dstfuse-eval``.
"""

from .attention_eval import run_attention_eval
from .blur_eval import MotionKernel, motion_kernels, run_blur_eval
from .fusion_eval import run_fusion_eval
from .methods import METHOD_NAMES, MethodSpec
from .scorecard import run_scorecard
from .temporal_eval import run_temporal_eval

__all__ = [
    "METHOD_NAMES",
    "MethodSpec",
    "MotionKernel",
    "motion_kernels",
    "run_attention_eval",
    "run_blur_eval",
    "run_fusion_eval",
    "run_scorecard",
    "run_temporal_eval",
]
