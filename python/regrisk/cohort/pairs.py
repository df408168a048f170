"""The cohort's list of pairs: a CSV with ``id,source,target`` and an optional ``mask`` column.

Relative paths resolve against the CSV's own folder, so a cohort folder can be moved whole.
Problems with the table itself (unreadable file, missing columns, empty or unusable ids,
duplicate ids) are collected, one line each, and refuse the cohort before anything runs; a pair
whose files are missing is named up front by :func:`missing_inputs` and recorded as failed.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

REQUIRED = ("id", "source", "target")
OPTIONAL = ("mask",)
# An id names the pair's output folder: no separators, no leading dot (temp folders use one).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Pair:
    id: str
    source: Path
    target: Path
    mask: Path | None = None

    def inputs(self) -> dict[str, Path]:
        """Role -> path of every file this pair reads."""
        roles = {"source": self.source, "target": self.target}
        if self.mask is not None:
            roles["mask"] = self.mask
        return roles


class PairsError(InputError):
    """Every problem found in a pairs table, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


def read_pairs(csv_path: str | os.PathLike[str]) -> list[Pair]:
    """The pairs of ``csv_path`` in file order; PairsError listing every problem found."""
    path = Path(csv_path)
    rows, header = _read_rows(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PairsError([f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} (the header has: {', '.join(header) or 'nothing'})"])
    if not rows:
        raise PairsError([f"{path}: no pairs (only a header)"])
    base = path.absolute().parent
    pairs, problems, first_seen = [], [], {}
    for line, row in rows:
        where = f"{path} line {line}"
        pair, row_problems = _pair(row, base, where)
        if pair is not None and pair.id in first_seen:
            row_problems.append(f"{where}: duplicate id {pair.id!r} (first on line "
                                f"{first_seen[pair.id]})")
        problems += row_problems
        if pair is not None and not row_problems:
            first_seen[pair.id] = line
            pairs.append(pair)
    if problems:
        raise PairsError(problems)
    return pairs


def _read_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """((line number, row) pairs, stripped header names); PairsError when unreadable."""
    if not path.is_file():
        raise PairsError([f"pairs table {path}: no such file"])
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            # blank lines (all cells empty) are not pairs
            rows = [(reader.line_num, row) for row in reader
                    if any(isinstance(v, str) and v.strip() for v in row.values())]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PairsError([f"pairs table {path}: not a readable CSV file ({exc})"]) from None
    return rows, header


def _pair(row: dict[str, str], base: Path, where: str) -> tuple[Pair | None, list[str]]:
    """The pair a row describes, and the problems that stop it from being one."""
    cell = {k: (row.get(k) or "").strip() for k in (*REQUIRED, *OPTIONAL)}
    problems = [f"{where}: empty {k}" for k in REQUIRED if not cell[k]]
    if cell["id"] and not _ID.fullmatch(cell["id"]):
        problems.append(f"{where}: id {cell['id']!r} is not usable as a folder name (letters, "
                        "digits, '.', '_', '-'; not starting with '.'; at most 100)")
    if problems:
        return None, problems

    def resolve(text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else base / p

    mask = resolve(cell["mask"]) if cell["mask"] else None
    return Pair(cell["id"], resolve(cell["source"]), resolve(cell["target"]), mask), []


def missing_inputs(pair: Pair) -> list[str]:
    """One line for each of the pair's files that is not there (or is not a file)."""
    out = []
    for role, path in pair.inputs().items():
        if not path.exists():
            out.append(f"pair {pair.id}: {role} {path}: no such file")
        elif not path.is_file():
            out.append(f"pair {pair.id}: {role} {path}: not a file")
    return out
