"""What every console script shares: user errors as one line + exit code 2, and argparse adapters.

Every command (``dstfuse-stream``, ``dstfuse-export``, ``dstfuse-bench``, ``python -m
dstfuse_stream.preview`` ...) runs its body through :func:`run_command`: a
:class:`~dstfuse_stream.errors.DSTFuseError` becomes ``PROG: error: MESSAGE`` on stderr and exit code
2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from dstfuse_stream.errors import DSTFuseError

__all__ = ["run_command", "arg_type", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
T = TypeVar("T")


def run_command(prog: str, body: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """``body(*args, **kwargs)``; its return value (``None`` = 0), or 2 after one error line."""
    try:
        code = body(*args, **kwargs)
    except DSTFuseError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if code is None else int(code)


def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser raising :class:`DSTFuseError` for argparse, so its message reaches the usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except DSTFuseError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert
