"""``regrisk cohort`` on the local engine: bad pairs are recorded and the cohort goes on, a
pair's maps are what ``Estimator.estimate`` gives for it, reruns redo only what changed, and
Ctrl-C stops cleanly with a rerun that resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cohort_builders import SETTINGS, make_cohort, pair_ids

import regrisk
from regrisk import Estimator
from regrisk.cohort import EstimateSettings, folder, run_cohort

SET = EstimateSettings(estimate=dict(SETTINGS), estimator={"threads": 1})


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "cohort.csv", newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def _stamps(out: Path) -> dict[str, int]:
    """Modification times of every file of every pair folder (a rewritten file changes it)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in (out / folder.PAIRS).rglob("*") if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in (*out.iterdir(), *(out / folder.PAIRS).iterdir())
            if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    base = tmp_path_factory.mktemp("cohort_local")
    pairs, model = make_cohort(base, good=3, corrupt=True, missing=True)
    refused: list[str] = []
    summary = run_cohort(pairs, base / "out", model=model, settings=SET,
                         on_refused=refused.append)
    assert refused == [f"pair missing: source {base / 'no_such_source.nii.gz'}: no such file"]
    return base, model, summary


def test_bad_pairs_are_recorded_and_the_rest_complete(cohort) -> None:
    base, _, summary = cohort
    out = base / "out"
    assert (summary.done, summary.failed, summary.ran) == (3, 2, 4)
    rows = _rows(out)
    assert list(rows) == [*pair_ids(3), "corrupt", "missing"]
    assert rows["corrupt"]["status"] == "failed"
    assert "corrupt.nii.gz: not a readable NIfTI image" in rows["corrupt"]["error"]
    assert rows["missing"]["error"].endswith("no_such_source.nii.gz: no such file")
    for pid in pair_ids(3):
        assert rows[pid]["status"] == "done" and rows[pid]["error"] == ""
        assert folder.is_complete(out / folder.PAIRS / pid)
        sigma = nib.load(out / folder.PAIRS / pid / "uncertainty.nii.gz").get_fdata()
        assert float(rows[pid]["sigma_mean_mm"]) == pytest.approx(sigma.mean(), rel=1e-5)
        assert float(rows[pid]["sigma_max_mm"]) == pytest.approx(sigma.max(), rel=1e-5)
        assert rows[pid]["verdict"] == "" and rows[pid]["predicted_error_mm"] == ""
    assert sorted(p.name for p in (out / folder.PAIRS).iterdir()) == pair_ids(3)
    assert _leftovers(out) == []


def test_a_pairs_maps_are_the_estimators(cohort) -> None:
    base, model, _ = cohort
    with Estimator(model, threads=1) as est:
        direct = est.estimate(str(base / "s2.nii.gz"), str(base / "t2.nii.gz"), **SETTINGS)
    saved = base / "out" / folder.PAIRS / "p2"
    for name in ("uncertainty", "warped_source"):
        data = np.asarray(nib.load(saved / f"{name}.nii.gz").dataobj, dtype=np.float32)
        np.testing.assert_allclose(data, getattr(direct, name), rtol=0, atol=1e-6)
    # spacing 2 mm here against 1 mm for p0: sigma is linear in the voxel size (builders.py)
    rows = _rows(base / "out")
    assert float(rows["p2"]["sigma_mean_mm"]) == pytest.approx(
        2 * float(rows["p0"]["sigma_mean_mm"]), rel=1e-4)


def test_rerun_redoes_only_what_is_not_complete_and_current(tmp_path: Path) -> None:
    pairs, model = make_cohort(tmp_path, good=3)
    out = tmp_path / "out"
    assert run_cohort(pairs, out, model=model, settings=SET).ran == 3
    stamps, lines = _stamps(out), (out / "manifest.jsonl").read_text()
    again = run_cohort(pairs, out, model=model, settings=SET)
    assert (again.ran, again.skipped, again.done) == (0, 3, 3)
    assert _stamps(out) == stamps and (out / "manifest.jsonl").read_text() == lines
    # a changed input redoes its pair only; a half-deleted result is redone too
    img = nib.load(tmp_path / "s1.nii.gz")
    nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 1, axis=0), img.affine),
             tmp_path / "s1.nii.gz")
    (out / folder.PAIRS / "p2" / "uncertainty_axes.nii.gz").unlink()
    redo = run_cohort(pairs, out, model=model, settings=SET)
    assert (redo.ran, redo.skipped) == (2, 1)
    changed = {k for k, v in _stamps(out).items() if stamps.get(k) != v}
    assert {Path(k).parts[1] for k in changed} == {"p1", "p2"}
    # other settings (another seed) make every result stale
    reseeded = EstimateSettings(estimate={**SETTINGS, "seed": 4}, estimator={"threads": 1})
    assert run_cohort(pairs, out, model=model, settings=reseeded).ran == 3


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(regrisk.__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-m", "regrisk", "cohort", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    pairs, model = make_cohort(tmp_path, good=8)
    args = ["--pairs", str(pairs), "--out", "out", "--model", str(model), "--samples", "4",
            "--perturbation", "scale", "--seed", "3", "--threads", "1"]
    proc = _cli(args, tmp_path)
    manifest = tmp_path / "out" / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while not (manifest.exists() and manifest.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("regrisk cohort: interrupted;")
    finished = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    assert 2 <= len(finished) < 8
    out = tmp_path / "out"
    assert _leftovers(out) == []
    assert sorted(p.name for p in (out / folder.PAIRS).iterdir()) == sorted(finished)
    rows = _rows(out)
    assert {pid for pid, row in rows.items() if row["status"] == "pending"} == \
        set(pair_ids(8)) - set(finished)
    rerun = _cli(args, tmp_path)
    stdout, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"8 of 8 pairs done ({len(finished)} already complete, {8 - len(finished)} run)" \
        in stdout
    assert all(folder.is_complete(out / folder.PAIRS / pid) for pid in pair_ids(8))


def test_a_mask_is_the_region_of_the_statistics(tmp_path: Path) -> None:
    pairs, model = make_cohort(tmp_path, good=2, mask=True)
    # pair p1's mask on another grid than its target: that pair fails, naming the mask
    region = nib.load(tmp_path / "m1.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(region.dataobj)[:-2], region.affine), tmp_path / "m1.nii.gz")
    summary = run_cohort(pairs, tmp_path / "out", model=model, settings=SET)
    assert (summary.done, summary.failed) == (1, 1)
    rows = _rows(tmp_path / "out")
    assert "m1.nii.gz: not on the target's grid" in rows["p1"]["error"]
    sigma = nib.load(tmp_path / "out" / folder.PAIRS / "p0" / "uncertainty.nii.gz").get_fdata()
    inside = np.asarray(nib.load(tmp_path / "m0.nii.gz").dataobj) > 0
    assert float(rows["p0"]["sigma_mean_mm"]) == pytest.approx(sigma[inside].mean(), rel=1e-5)
    assert float(rows["p0"]["sigma_mean_mm"]) != pytest.approx(sigma.mean(), rel=1e-3)
