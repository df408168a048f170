"""SIGTERM and SIGHUP handled like Ctrl-C, promptly, and never in the middle of a rename.

A scheduler stops a job with SIGTERM, a closed terminal sends SIGHUP; by default either kills
the process on the spot (a half-written temporary folder stays behind) or, worse, is acted on
only after the run has finished. Inside :func:`handled` (the command line installs it) each of
them raises :class:`Interrupted`, a ``KeyboardInterrupt``, in the main thread as soon as Python
code runs again: between two kernel or network calls, so within about one batch. Everything
that cleans up after Ctrl-C (the temporary output folder, a temporary file) then cleans up
after them too.

:func:`deferred` marks the few steps that must not be cut in half (the renames that put a
result in place, the removal of a temporary folder): a signal that arrives inside is acted on
when the step is over.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_state = {"depth": 0, "pending": 0}


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def _raise(signum: int, frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` inside the block (main thread
    only; elsewhere the block runs with the handlers as they are)."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal that arrives inside the block is raised when the block ends. Where Python
    itself would raise (Ctrl-C's default handler, or :func:`handled`), the raise waits; a
    signal whose action is the system default is left alone. Python runs signal handlers in
    the main thread only, so elsewhere the block runs as it is."""
    if not _main_thread():
        yield
        return
    swapped: dict[int, Any] = {s: signal.signal(s, _raise) for s in HANDLED
                               if signal.getsignal(s) is signal.default_int_handler}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for s, h in swapped.items():
            signal.signal(s, h)
        if not _state["depth"] and _state["pending"]:
            signum, _state["pending"] = _state["pending"], 0
            raise Interrupted(signum)
