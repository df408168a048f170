"""Which output folders regrisk may replace, and how it puts a new one in place.

``--overwrite`` replaces only a folder that regrisk itself wrote, recognised by its marker: a
``summary.json`` (or, for ``regrisk evaluate``, ``config.json``) holding a JSON object with a
top-level ``"regrisk"`` key; an empty folder holds nothing to lose and may be replaced too. It
never replaces a folder that is, or contains, an input or the model, nor a symbolic link.

The final rename is race-safe: two runs that replace the same folder at once both finish
without an error, the last one's result stays, and no moved-aside folder is left behind.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError

MARKER_FILES = ("summary.json", "config.json")
MARKER_KEY = "regrisk"
_MARKER_MAX_BYTES = 64 << 20
_ATTEMPTS = 8


def written_by_regrisk(folder: Path) -> bool:
    """Whether ``folder`` holds regrisk's marker (see the module docstring)."""
    for name in MARKER_FILES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > _MARKER_MAX_BYTES:
                continue
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict) and MARKER_KEY in payload:
            return True
    return False


def _forms(path: str | os.PathLike[str]) -> list[Path]:
    """The absolute path as given and with symbolic links resolved."""
    given = Path(os.path.abspath(path))
    try:
        return [given, given.resolve()]
    except (OSError, RuntimeError):
        return [given]


def _holds(folder: Path, path: str | os.PathLike[str]) -> bool:
    return any(f == p or f in p.parents for f in _forms(folder) for p in _forms(path))


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, change time) of ``path`` itself, None when nothing is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


def check_replaceable(out: Path, protect: Iterable[str | os.PathLike[str]] = ()) -> None:
    """OutputError unless the folder at ``out`` may be replaced (nothing there: nothing to
    check). A folder that another run replaces while it is being checked is checked again."""
    protect = list(protect)
    for _ in range(_ATTEMPTS):
        before = _identity(out)
        if before is None:
            return
        try:
            _check_once(out, protect)
            return
        except OutputError:
            if _identity(out) == before:  # the same folder throughout: a real refusal
                raise
    raise OutputError(f"output {out}: kept changing while being checked (another run writing "
                      "the same folder?)")


def _check_once(out: Path, protect: list[str | os.PathLike[str]]) -> None:
    if out.is_symlink():
        raise OutputError(f"output {out}: is a symbolic link; give the folder itself")
    for path in protect:  # a name that is no file (the model "default") holds nothing to lose
        if os.path.lexists(path) and _holds(out, path):
            raise OutputError(f"output {out}: holds the input {path}; it is never replaced")
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise OutputError(f"output {out}: cannot be listed ({exc.strerror})") from None
    if not empty and not written_by_regrisk(out):
        raise OutputError(f"output {out}: not a folder regrisk wrote (no summary.json with a "
                          f"'{MARKER_KEY}' key); it is never replaced")


def short_name(name: str, limit: int = 96) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8, so that a hidden sibling's name built from it
    stays within the file system's 255 bytes."""
    return name.encode()[:limit].decode(errors="ignore")


def _aside_name(out: Path) -> Path:
    return out.with_name(f".{short_name(out.name)}.old-{os.getpid()}-{secrets.token_hex(4)}")


def _remove(old: Path | None) -> None:
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _put_back(old: Path | None, out: Path) -> None:
    """The previous result back in place after a failed rename (best effort)."""
    if old is not None:
        try:
            os.rename(old, out)
        except OSError:
            pass


def commit(tmp: Path, out: Path, overwrite: bool,
           protect: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Rename the finished folder ``tmp`` onto ``out``. With ``overwrite``, a folder already at
    ``out`` is checked again (:func:`check_replaceable`), moved aside and removed; when another
    run gets there in between, the attempt starts over (the last result stays)."""
    protect = list(protect)
    for _ in range(_ATTEMPTS):
        old = None
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputError(f"output {out}: appeared while running; not replaced")
            check_replaceable(out, protect)
            old = _aside_name(out)
            try:
                os.rename(out, old)
            except FileNotFoundError:  # another run moved it first
                continue
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                _put_back(old, out)
                raise
            # another run put its result there first: ours replaces it on the next attempt
            _remove(old)
            continue
        _remove(old)
        return
    raise OutputError(f"output {out}: kept changing while being replaced (another run writing "
                      "the same folder?)")
