"""What the command line leaves on stderr: one sanitised line per failure.

- :func:`printable` escapes control characters (a newline or an escape sequence in a path
  would otherwise split the line, or print a fake second line such as a success message).
- :func:`third_party_quiet` keeps other libraries' output out of regrisk's stderr while a
  command runs: native writes to file descriptor 2 (ONNX Runtime, OpenVINO, ITK, CUDA),
  Python logging (nibabel's logger) and warnings go to a temporary file instead. regrisk's own
  stderr (progress bars, messages) still reaches the terminal through a copy of the original
  descriptor. After a success the captured text is shown; after a failure it is dropped, so
  the error is the one line.
- :func:`describe` turns any exception into that line's text.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from ..errors import RegriskError, first_line

_REPLAY_LIMIT = 64 << 10
_ESCAPED = ("Cc", "Cf", "Zl", "Zp")  # controls, format characters, line/paragraph separators


def printable(text: str) -> str:
    """``text`` with every control or line-breaking character escaped (``\\n``, ``\\x1b``)."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in _ESCAPED else ch for ch in text)


def describe(exc: BaseException) -> str:
    """The one-line text of the error ``exc``."""
    if isinstance(exc, RegriskError):  # one line by construction; a path may hold a newline
        return str(exc).strip()[:1000] or type(exc).__name__
    if isinstance(exc, ImportError):
        return (f"needs the optional package {exc.name or 'that is missing'} "
                f"({first_line(exc, limit=200)})")
    if isinstance(exc, MemoryError):
        return "ran out of memory (a smaller --batch or --memory-budget keeps runs smaller)"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or first_line(exc)}{where}"
    return (f"unexpected {first_line(exc, typed=True, limit=400)} "
            "(REGRISK_TRACEBACK=1 shows where)")


class Captured:
    """What third-party code wrote while :func:`third_party_quiet` was active (``text`` is
    filled in when the block ends; at most 64 KiB)."""

    text = ""


@contextmanager
def third_party_quiet() -> Iterator[Captured | None]:
    """Redirect file descriptor 2, Python logging and warnings to a temporary file for the
    block (yields None and changes nothing where stderr has no descriptor to redirect)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield None
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace") as log:
        ours, replaced = _own_stderr(saved)
        handler = logging.StreamHandler(log)
        logging.root.addHandler(handler)
        shown = warnings.showwarning
        warnings.showwarning = _to(log)
        os.dup2(log.fileno(), 2)
        captured = Captured()
        try:
            yield captured
        finally:
            for stream in (sys.stderr, log):
                stream.flush()
            log.seek(0)
            captured.text = log.read(_REPLAY_LIMIT)
            os.dup2(saved, 2)
            os.close(saved)
            warnings.showwarning = shown
            logging.root.removeHandler(handler)
            if replaced:
                sys.stderr.close()
                sys.stderr = ours


def _own_stderr(saved: int) -> tuple[Any, bool]:
    """When sys.stderr writes to descriptor 2 itself, point it at a copy of the original
    descriptor, so that regrisk's own messages and progress bars still show."""
    ours = sys.stderr
    try:
        on_fd2 = ours.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO, ...
        on_fd2 = False
    if not on_fd2:
        return ours, False
    sys.stderr = open(os.dup(saved), "w", encoding=getattr(ours, "encoding", None) or "utf-8",
                      errors="backslashreplace", buffering=1)
    return ours, True


def _to(log: IO[str]) -> Any:
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show
