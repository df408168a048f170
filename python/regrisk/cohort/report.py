"""``report.html``: one self-contained static page for the cohort (no server, no network; it
works from a file:// URL). Thumbnails are embedded as data URIs, the table sorts by risk with a
few lines of inline JavaScript, verdicts show as badges, and each pair links to its folder."""

from __future__ import annotations

import base64
import html
import math
import time
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from .. import io
from .folder import PAIRS
from .table import Row
from .worker import THUMBNAIL

TEMPLATE = "report_template.html"


def _number(value: float | None) -> str:
    """A data-attribute value JavaScript's parseFloat reads (absent numbers sort last)."""
    if value is None:
        return "-Infinity"
    return "Infinity" if math.isinf(value) and value > 0 else repr(float(value))


def _shown(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _thumbnail(pair_dir: Path) -> str:
    path = pair_dir / THUMBNAIL
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="thumb" alt="overview" src="data:image/png;base64,{data}">'


def _verdict(row: Row) -> str:
    """The QC verdict's badge; a finished uncalibrated pair says so, others show nothing."""
    if row.verdict:
        return f'<span class="badge {html.escape(row.verdict)}">{html.escape(row.verdict)}</span>'
    return '<span class="badge none">uncalibrated</span>' if row.status == "done" else ""


def _row(row: Row, out: Path) -> str:
    e = html.escape
    pid = e(row.id)
    risk = None if math.isinf(row.risk) and row.risk < 0 else row.risk
    attrs = (f'data-id="{pid}" data-risk="{_number(risk)}" '
             f'data-error="{_number(row.predicted_error_mm)}" '
             f'data-sigma="{_number(row.sigma_mean_mm)}" '
             f'data-sigmamax="{_number(row.sigma_max_mm)}" data-seconds="{_number(row.seconds)}"')
    cells = [
        _thumbnail(out / PAIRS / row.id) if row.status == "done" else "",
        f'<a href="{PAIRS}/{pid}/">{pid}</a>',
        f'<span class="badge {e(row.status)}">{e(row.status)}</span>',
        _verdict(row),
        "failed" if math.isinf(row.risk) and row.risk > 0 else _shown(risk),
        _shown(row.predicted_error_mm), _shown(row.sigma_mean_mm), _shown(row.sigma_max_mm),
        _shown(row.seconds, 2), e(row.error or ""),
    ]
    classes = ["", "", "", "", "num", "num", "num", "num", "num", "error"]
    tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                  for c, v in zip(classes, cells))
    return f"<tr {attrs}>{tds}</tr>"


def write(out: Path, table: list[Row], context: dict[str, Any]) -> Path:
    """Write ``out/report.html`` for ``table``; ``context``: model label and settings."""
    counts = {s: sum(r.status == s for r in table) for s in ("done", "failed", "pending")}
    calibrated = sum(r.verdict is not None for r in table)
    page = Template(resources.files(__package__).joinpath(TEMPLATE).read_text("utf-8"))
    text = page.substitute(
        title="regrisk cohort report",
        counts=html.escape(f"{len(table)} pairs: {counts['done']} done, {counts['failed']} "
                           f"failed, {counts['pending']} pending; written "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S')}"),
        settings=html.escape(f"model {context.get('model', '?')}; "
                             + ", ".join(f"{k} {v}" for k, v in context.get('settings', {}).items())),
        calibration=html.escape(
            f"{calibrated} pair(s) with a calibrated QC verdict; risk is the predicted mean error "
            "where calibrated, else the mean sigma." if calibrated else
            "No calibrated estimates: no verdicts or predicted errors; risk is the mean sigma "
            "(the spread of the estimates, not an error)."),
        rows="\n".join(_row(r, out) for r in table))
    path = out / "report.html"
    io.write_text_atomic(path, text)
    return path
