"""What a backend checks of the feeds it is given, written once for every backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ModelError


def check_feeds(backend: str, input_names: Sequence[str], feeds: Mapping[str, Any]) -> None:
    """ModelError naming every graph input that ``feeds`` lacks."""
    missing = [n for n in input_names if n not in feeds]
    if missing:
        raise ModelError(f"{backend}: missing input(s) {', '.join(missing)}")


def device_feeds(backend: str, input_names: Sequence[str], feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The graph inputs as float32 C-contiguous CuPy arrays on the current device, in
    ``input_names`` order (no copy when they already are)."""
    import cupy

    check_feeds(backend, input_names, feeds)
    return {n: cupy.ascontiguousarray(feeds[n], dtype=cupy.float32) for n in input_names}
