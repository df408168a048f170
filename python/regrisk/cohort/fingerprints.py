"""What a pair's result depends on, as hashes: its input files, the model, and the settings
that change the maps. A rerun redoes a pair when any of them differs from its manifest record."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .pairs import Pair
from .settings import EstimateSettings

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (read once per size and modification time in this process:
    one atlas shared by every pair of a study is hashed once)."""
    st = os.stat(path)
    return _sha256(str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(resolved: Any) -> str:
    """sha256 of a resolved model: its ONNX file and sidecar card, or a callable's name."""
    if resolved.source.path is None:  # a callable: its qualified name is all we can know
        fn = resolved.source.function
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', resolved.label)}"
        return hashlib.sha256(name.encode()).hexdigest()
    path = Path(resolved.source.path)
    digest = hashlib.sha256(file_sha256(path).encode())
    sidecar = path.with_name(path.name + ".card.json")
    if sidecar.is_file():
        digest.update(file_sha256(sidecar).encode())
    return digest.hexdigest()


def pair_key(pair: Pair, model: str, settings: EstimateSettings,
             calibration: str | None) -> dict[str, Any]:
    """Everything a finished pair's result depends on (inputs, model, settings, calibration
    id); equal keys mean the same result."""
    chosen = {"settings": settings.result_defining(), "calibration": calibration}
    text = json.dumps(chosen, sort_keys=True)
    return {"inputs": {role: file_sha256(p) for role, p in pair.inputs().items()},
            "model": model, "settings": hashlib.sha256(text.encode()).hexdigest()}
