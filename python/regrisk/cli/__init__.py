"""``regrisk`` command line. Each subcommand lives in its own module with a ``register``
function that adds its parser; handlers return an exit status. Heavy imports (onnxruntime,
torch) happen inside handlers so that ``regrisk --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import RegriskError

# Subcommand modules, in the order their commands appear in --help.
_COMMANDS = ("estimate", "apply", "cohort", "card", "info", "export", "demo", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RegriskError as exc:
        print(f"regrisk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"regrisk {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
