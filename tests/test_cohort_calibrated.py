"""A cohort with a calibration: each pair's QC verdict and predicted mean error are the ones its
summary.json holds, shown in cohort.csv and the report; a calibration made for another model is
refused before anything runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import blob, com_model
from cohort_builders import GRID, SETTINGS, make_cohort, pair_ids

import regrisk
from regrisk import io
from regrisk.calibration import build, cases, store
from regrisk.cohort import EstimateSettings, folder, run_cohort
from regrisk.engine import Estimator


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(pairs.csv, model, calibration JSON): a real calibration of the cohort's model, made
    from a small blob image (8 known-deformation cases, K = 4)."""
    base = tmp_path_factory.mktemp("cohort_calibrated")
    pairs, model = make_cohort(base, good=3)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = io.load_image((blob(GRID, (8, 8, 8), 3.0) * 100 + 1, affine), "blob")
    with Estimator(model, threads=1) as est:
        records = cases.collect(est, [image], 8, samples=4, seed=3)
        identity = store.model_identity(est)
    path = base / "com.calibration.json"
    store.save(build.make(records, 0.9, identity, [image], 4, 3, "test"), path)
    return pairs, model, path


def test_verdicts_come_from_each_pairs_summary(calibrated, tmp_path: Path) -> None:
    pairs, model, cal = calibrated
    settings = EstimateSettings(estimate=dict(SETTINGS), estimator={"threads": 1},
                                calibration={"path": str(cal)})
    summary = run_cohort(pairs, tmp_path / "out", model=model, settings=settings)
    assert summary.done == 3
    with open(tmp_path / "out" / "cohort.csv", newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    report = (tmp_path / "out" / "report.html").read_text()
    for pid in pair_ids(3):
        pair_dir = tmp_path / "out" / folder.PAIRS / pid
        qc = json.loads((pair_dir / "summary.json").read_text())["qc"]
        assert rows[pid]["verdict"] == qc["verdict"] in ("pass", "review", "fail")
        assert float(rows[pid]["predicted_error_mm"]) == pytest.approx(
            qc["predicted_mean_error_mm"], rel=1e-5)
        assert (pair_dir / "error_mm.nii.gz").is_file()
        assert f'<span class="badge {qc["verdict"]}">' in report
    assert "uncalibrated" not in report


def test_a_calibration_for_another_model_is_refused_first(calibrated, tmp_path: Path) -> None:
    pairs, _, cal = calibrated
    # the same graph under another card name: another file, so another model
    other = com_model(tmp_path / "other.onnx", GRID, card={"name": "other"})
    env = {"PYTHONPATH": str(Path(regrisk.__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "regrisk", "cohort", "--pairs", str(pairs),
                           "--out", str(tmp_path / "out"), "--model", str(other),
                           "--calibration", str(cal), "--samples", "4"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "was made for model" in lines[0]
    assert not (tmp_path / "out").exists()
