"""The cohort's output folder: ``manifest.jsonl``, ``cohort.csv``, ``report.html`` and one
folder per pair under ``pairs/``. One cohort run at a time holds it (an advisory lock); an
existing folder is resumed, any other non-empty folder is refused."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CohortError
from .manifest import NAME as MANIFEST
from .worker import THUMBNAIL

PAIRS = "pairs"
LOCK = ".cohort.lock"


def prepare(out: str | os.PathLike[str]) -> Path:
    """``out`` ready to hold a cohort: created if missing, refused if it is something else."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CohortError(f"output {path}: exists and is not a folder")
    if path.is_dir() and not (path / MANIFEST).exists() and any(
            p.name != LOCK for p in path.iterdir()):
        raise CohortError(f"output {path}: a non-empty folder that is not a cohort's "
                          f"(no {MANIFEST}); choose a new or empty folder")
    if not path.absolute().parent.is_dir():
        raise CohortError(f"output {path}: parent folder {path.absolute().parent} does not exist")
    try:
        (path / PAIRS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CohortError(f"output {path}: cannot create it ({exc.strerror})") from None
    return path


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out`` for this run; CohortError if another cohort run holds it."""
    with open(out / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CohortError(f"output {out}: another regrisk cohort is running on it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_leftovers(out: Path) -> list[str]:
    """Remove the temporary folders and files a killed worker or run left behind (names made
    by io.OutputFolder / io.atomic_file: ``.<name>.tmp-*``, ``.<name>.old-*``); their names."""
    gone = []
    for parent in (out, out / PAIRS):
        for p in parent.glob(".*.*-*"):
            if ".tmp-" in p.name or ".old-" in p.name:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p.name)
    return gone


def is_complete(pair_dir: Path) -> bool:
    """Whether a pair's folder holds a whole result: its summary.json and every file it lists,
    and the overview thumbnail."""
    try:
        summary = json.loads((pair_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    files = summary.get("files") if isinstance(summary, dict) else None
    if not isinstance(files, list):
        return False
    return all((pair_dir / str(f)).is_file() for f in [*files, THUMBNAIL])
