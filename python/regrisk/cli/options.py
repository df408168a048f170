"""Options and checks several subcommands share, so that each is spelled and refused once."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError


def parse_bool(text: str) -> bool:
    """argparse type for BOOL options: true/false, yes/no, on/off, 1/0."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def sample_count(text: str) -> int | str:
    """argparse type for --samples: an integer, or ``auto`` (adaptive stopping)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def add_sample_options(p: argparse.ArgumentParser, samples: int) -> None:
    """--samples (default ``samples``) and --seed."""
    p.add_argument("--samples", type=sample_count, default=samples,
                   help=f"number of perturbations K (2..100000, default {samples}), or 'auto': draw "
                   "until the map's split-half precision reaches --precision")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (NumPy Generator; 0..2^63-1, default 0)")


def add_run_options(p: argparse.ArgumentParser, overwrite: bool = True) -> None:
    """--threads, --overwrite (unless ``overwrite`` is False: a command that resumes its output
    folder has none), --quiet (after a command's own options in --help)."""
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (1..4 x cores, at most 1024; default: all cores)")
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace an existing output folder that regrisk wrote (never one "
                       "holding an input or the model)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


# What --backend may force (registered plug-ins and callables are for the Python API).
BACKENDS = ("onnxruntime", "openvino", "torch", "tensorrt", "onnxruntime-cuda")
PRECISIONS = ("auto", "f32", "bf16", "f16")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """--backend (force one; default the fastest installed for the graph) and
    --inference-precision."""
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="force a backend (one-line error when it cannot run here); default: "
                   "the fastest installed for the device and graph (see `regrisk info`)")
    p.add_argument("--inference-precision", default="auto", choices=PRECISIONS,
                   help="OpenVINO inference precision (default auto: bf16 only for graphs "
                   "whose map was measured to keep it, on CPUs with native bf16, else f32; "
                   "bf16/f16 imply --backend openvino: see benchmarks/RESULTS.md)")


def backend_choice(args: argparse.Namespace) -> tuple[str | None, dict]:
    """(backend name or None, backend options) from --backend and --inference-precision."""
    precision = args.inference_precision
    if precision == "auto":
        return args.backend, {}
    if precision == "f32":  # OpenVINO reads it; the other backends run f32 anyway
        return args.backend, {"precision": "f32"}
    if args.backend not in (None, "openvino"):
        raise InputError(f"--inference-precision {precision} is an OpenVINO precision; "
                         f"--backend {args.backend} runs f32 only")
    return "openvino", {"precision": precision}


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar only for a person watching a terminal."""
    return not args.quiet and sys.stderr.isatty()


def tune_allocator() -> None:
    """The CLI's opt-in to the engine's allocator tuning (process-wide, so never a library
    default): large per-batch buffers reuse warm heap pages instead of fresh mmaps."""
    from ..engine import keep_freed_memory

    keep_freed_memory()
