"""``regrisk cohort --engine ray`` on a real local Ray runtime (2 CPUs): bad pairs are recorded
and the rest complete, a worker killed mid-run is restarted and its pairs retried with nothing
half-written, a rerun does no work, and the maps equal the local engine's."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cohort_builders import SETTINGS, make_cohort, pair_ids

import regrisk
from regrisk.cohort import EstimateSettings, RayOptions, folder, run_cohort
from regrisk.cohort.outcome import Outcome

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")

SET = EstimateSettings(estimate=dict(SETTINGS), estimator={"threads": 1})
TWO = RayOptions(workers=2)


@pytest.fixture(scope="module")
def runtime():
    """One local Ray runtime for this module; its workers import this regrisk."""
    here = str(Path(regrisk.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cohort(runtime, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cohort_ray")
    pairs, model = make_cohort(base, good=4, corrupt=True, missing=True)
    summary = run_cohort(pairs, base / "out", model=model, settings=SET, engine="ray",
                         ray_options=TWO)
    return base, pairs, model, summary


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "cohort.csv", newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def _complete_and_clean(out: Path, ids: list[str]) -> None:
    """Every pair folder whole (each file it lists is there and loads), no temporary left."""
    assert sorted(p.name for p in (out / folder.PAIRS).iterdir()) == sorted(ids)
    for pid in ids:
        assert folder.is_complete(out / folder.PAIRS / pid)
        assert np.isfinite(nib.load(out / folder.PAIRS / pid / "uncertainty.nii.gz").get_fdata()).all()
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_bad_pairs_are_recorded_and_the_rest_complete(cohort) -> None:
    base, _, _, summary = cohort
    out = base / "out"
    assert (summary.done, summary.failed, summary.ran) == (4, 2, 5)
    rows = _rows(out)
    assert "corrupt.nii.gz: not a readable NIfTI image" in rows["corrupt"]["error"]
    assert rows["missing"]["error"].endswith("no_such_source.nii.gz: no such file")
    assert [rows[p]["status"] for p in pair_ids(4)] == ["done"] * 4
    _complete_and_clean(out, pair_ids(4))


def test_ray_and_local_give_the_same_maps(cohort, tmp_path: Path) -> None:
    base, pairs, model, _ = cohort
    local = run_cohort(pairs, tmp_path / "local", model=model, settings=SET)
    assert local.done == 4
    for pid in pair_ids(4):
        for name in ("uncertainty.nii.gz", "warped_source.nii.gz"):
            a = nib.load(base / "out" / folder.PAIRS / pid / name).get_fdata()
            b = nib.load(tmp_path / "local" / folder.PAIRS / pid / name).get_fdata()
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_rerun_does_no_work(cohort) -> None:
    base, pairs, model, _ = cohort
    out = base / "out"
    stamps = {p: p.stat().st_mtime_ns for p in (out / folder.PAIRS).rglob("*")}
    again = run_cohort(pairs, out, model=model, settings=SET, engine="ray", ray_options=TWO)
    # only the corrupt pair is tried again (a failure is redone); it fails the same way
    assert (again.skipped, again.ran, again.done, again.failed) == (4, 1, 4, 2)
    assert {p: p.stat().st_mtime_ns for p in (out / folder.PAIRS).rglob("*")} == stamps


def test_a_killed_worker_is_restarted_and_nothing_is_lost(runtime, tmp_path: Path) -> None:
    pairs, model = make_cohort(tmp_path, good=8)
    killed: list[int] = []

    def kill_first_worker(outcome: Outcome) -> None:
        # the worker that finished first already holds its next pair: kill it mid-run
        if not killed:
            killed.append(outcome.worker["pid"])
            os.kill(killed[0], signal.SIGKILL)

    summary = run_cohort(pairs, tmp_path / "out", model=model, settings=SET, engine="ray",
                         ray_options=TWO, on_outcome=kill_first_worker)
    assert (summary.done, summary.failed) == (8, 0)
    _complete_and_clean(tmp_path / "out", pair_ids(8))
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    records = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    pids = {json.loads(line)["worker"]["pid"] for line in records}
    assert len(records) == 8 and len(pids) == 3   # two workers, one of them restarted
