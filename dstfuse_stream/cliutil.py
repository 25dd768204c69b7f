"""What every console script shares: user errors as one line and an exit code, and argparse adapters.

Every command (``dstfuse-stream``, ``dstfuse-export``, ``dstfuse-bench``, ``python -m
dstfuse_stream.preview`` ...) runs its body through :func:`run_command`: a
:class:`~dstfuse_stream.errors.DSTFuseError` becomes ``PROG: error: MESSAGE`` on stderr (one line,
however many lines the message had) and the error's ``exit_code`` (2; 3 for a lost live source);
anything else is a bug and keeps its traceback. :class:`OneLineArgumentParser` reports usage errors
the same way, and :func:`say` prints results on stdout without failing when the reader of a pipe
has gone (``dstfuse-stream ... | head -1``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

from dstfuse_stream.errors import DSTFuseError

__all__ = ["run_command", "arg_type", "one_line", "say", "OneLineArgumentParser", "sigint_deferred", "import_deferring_sigint",
           "EXIT_USER_ERROR", "MAX_MESSAGE_CHARS"]

EXIT_USER_ERROR = 2
#: longest error line printed; longer messages (a library's multi-line text inside ours) are cut
MAX_MESSAGE_CHARS = 400
T = TypeVar("T")


def one_line(message: str, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` with every run of whitespace (newlines included) made one space, cut at ``limit``."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 4].rstrip() + " ..."


def run_command(prog: str, body: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """``body(*args, **kwargs)``; its return value (``None`` = 0), or the error's exit code after one
    error line."""
    try:
        code = body(*args, **kwargs)
    except DSTFuseError as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    return 0 if code is None else int(code)


def say(text: str) -> None:
    """Print ``text`` on stdout; if its reader has gone (``BrokenPipeError``), send the rest of stdout
    to ``/dev/null`` so the command finishes its work (outputs, summary) and exits normally."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``PROG: error: MESSAGE (see PROG
    --help)``, and exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser raising :class:`DSTFuseError` for argparse, so its message reaches the usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except DSTFuseError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise :class:`KeyboardInterrupt`.

    A KeyboardInterrupt raised while a C extension initialises (numpy, OpenCV, PyAV, torch) can surface
    as an unrelated ``ImportError`` with a page of advice; importing them with SIGINT held turns a Ctrl-C
    during start-up into the CLI's one line and exit code 130. Only in the main thread (elsewhere
    signals cannot be handled); a SIGINT that was ignored stays ignored.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def import_deferring_sigint(*modules: str) -> None:
    """Import ``modules`` (missing ones are skipped: their users report them) with Ctrl-C held."""
    with sigint_deferred():
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
