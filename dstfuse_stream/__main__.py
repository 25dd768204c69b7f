"""``python -m dstfuse_stream``: same as the ``dstfuse-stream`` command."""

import sys

from dstfuse_stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
