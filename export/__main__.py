"""``python -m export``: same as the ``dstfuse-export`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
