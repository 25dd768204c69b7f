"""dstfuse-stream: real-time infrared/visible video fusion with the DSTFuse network."""

from dstfuse_stream.checkpoint import load_model
from dstfuse_stream.config import DSTFuseConfig, get_config
from dstfuse_stream.errors import DSTFuseError
from dstfuse_stream.model import DSTFuse

__all__ = ["DSTFuse", "DSTFuseConfig", "DSTFuseError", "get_config", "load_model", "__version__"]
__version__ = "0.1.0"
