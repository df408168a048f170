"""``regrisk`` command line. Each subcommand lives in its own module with a ``register``
function that adds its parser; handlers return an exit status. Heavy imports (onnxruntime,
torch) happen inside handlers so that ``regrisk --help`` stays instant.

One error path: every failure (bad option, bad input, a library's exception, an OSError) is one
stderr line with control characters escaped and exit status 2; SIGINT, SIGTERM and SIGHUP stop
a run within about one batch with one line and status 128 + the signal's number, leaving no
partial output; other libraries' output is kept off stderr (:mod:`.console`)."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from .. import signals
from . import ranges
from .console import describe, printable, third_party_quiet

# Subcommand modules, in the order their commands appear in --help.
_COMMANDS = ("estimate", "apply", "cohort", "card", "info", "export", "demo", "evaluate",
             "calibrate")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the usage itself is in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="regrisk",
        description="Per-voxel uncertainty maps for pretrained registration networks "
        "(transformation equivariance).",
    )
    parser.add_argument("--version", action="version", version=f"regrisk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    out_of_range = ranges.check(args)
    if out_of_range is not None:
        print(f"regrisk {args.command}: error: {printable(out_of_range)}", file=sys.stderr)
        return 2
    with third_party_quiet() as captured:
        status, line = _run(args)
    if line is None and captured is not None:
        sys.stderr.write(captured.text)  # a success: what other libraries said is shown
    if line is not None:
        print(f"regrisk {args.command}: {printable(line)}", file=sys.stderr)
    return status


def _run(args: argparse.Namespace) -> tuple[int, str | None]:
    """(exit status, the one line to print on failure) of the command's handler."""
    try:
        with signals.handled():
            return int(args.func(args) or 0), None
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        return 128 + signum, (f"interrupted by {signal.Signals(signum).name}; no partial "
                              "output was kept")
    except Exception as exc:  # one error path: every failure is one line
        if os.environ.get("REGRISK_TRACEBACK"):
            traceback.print_exc()
        return 2, f"error: {describe(exc)}"


if __name__ == "__main__":
    sys.exit(main())
