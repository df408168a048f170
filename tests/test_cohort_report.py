"""The cohort's report.html, opened in a real headless Chromium (installed from Debian's
packages by tests/browser.py when missing): one row per pair, sorting by risk reorders them,
nothing is fetched from anywhere; and calibrated QC numbers are shown only where they exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from browser import chromium_or_reason
from cohort_builders import SETTINGS, make_cohort

from regrisk.cohort import EstimateSettings, report, run_cohort
from regrisk.cohort.table import Row


@pytest.fixture(scope="module")
def chromium() -> str:
    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cohort_report")
    pairs, model = make_cohort(base, good=3, corrupt=True)
    run_cohort(pairs, base / "out", model=model,
               settings=EstimateSettings(estimate=dict(SETTINGS), estimator={"threads": 1}))
    return base / "out" / "report.html"


def _browse(chromium: str, url: str, *args: str) -> str:
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *args, url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _row_ids(dom: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', dom)


def test_report_in_a_browser_sorts_by_risk(chromium: str, page: Path, tmp_path: Path) -> None:
    url = page.as_uri()
    shot = tmp_path / "report.png"
    _browse(chromium, url + "#sort=risk", "--window-size=1300,1000", f"--screenshot={shot}")
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1000, 1300) and float(pixels[..., :3].std()) > 0.05
    as_written = _browse(chromium, url, "--dump-dom")
    assert _row_ids(as_written) == ["p0", "p1", "p2", "corrupt"]   # the CSV's order
    assert as_written.count('class="thumb"') == 3                 # one per finished pair
    # a click on the risk column (scripted through the page's #sort= link): failed first,
    # then the highest sigma; pair i has (1 + 0.5 i) mm voxels, so sigma grows with i
    by_risk = _browse(chromium, url + "#sort=risk", "--dump-dom")
    assert _row_ids(by_risk) == ["corrupt", "p2", "p1", "p0"]
    assert re.search(r'<th data-key="risk" data-dir="desc">', by_risk)


def test_report_is_self_contained(page: Path) -> None:
    text = page.read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert links and all(x.startswith(("data:image/png;base64,", "pairs/")) for x in links)
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text).lower()
    assert "<link" not in markup and "http" not in markup and "url(" not in markup


def test_qc_numbers_are_shown_only_where_they_exist(tmp_path: Path) -> None:
    rows = [Row("a", "done", sigma_mean_mm=0.5, sigma_max_mm=1.0, seconds=1.0),
            Row("b", "done", sigma_mean_mm=0.4, sigma_max_mm=0.9, predicted_error_mm=2.5,
                verdict="review", seconds=1.0)]
    (tmp_path / "pairs").mkdir()
    text = report.write(tmp_path, rows, {"model": "m", "settings": {}}).read_text()
    a, b = (re.search(rf'<tr data-id="{i}".*?</tr>', text).group(0) for i in "ab")
    assert 'data-risk="2.5"' in b and '<span class="badge review">review</span>' in b
    assert 'data-risk="0.5"' in a and 'data-error="-Infinity"' in a and "uncalibrated" in a
    assert "1 pair(s) with a calibrated QC verdict" in text
    assert np.isinf(Row("c", "failed").risk)
