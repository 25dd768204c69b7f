"""``python -m dstfuse_stream``: same as the ``dstfuse-stream`` command."""

import sys

if __name__ == "__main__":
    try:
        from dstfuse_stream.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the command is still loading
        print("dstfuse-stream: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
