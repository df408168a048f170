"""The cohort's pairs table, manifest and output folder: problems are found before anything
runs, one line each; an interrupted manifest line is dropped, not misread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import regrisk
from regrisk.cohort import folder
from regrisk.cohort.manifest import Manifest
from regrisk.cohort.outcome import DONE, Outcome, qc_numbers
from regrisk.cohort.pairs import PairsError, missing_inputs, read_pairs
from regrisk.errors import CohortError


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env_path = str(Path(regrisk.__file__).resolve().parents[1])
    return subprocess.run([sys.executable, "-m", "regrisk", "cohort", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})


def test_paths_resolve_against_the_csv_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "sub" / "pairs.csv"
    csv.write_text("ID, source ,target,mask,notes\n"
                   "a,img/s.nii.gz,/abs/t.nii.gz,,first\n"
                   "\n"
                   "b-2.x,s.nii.gz,t.nii.gz,m.nii.gz,second\n")
    a, b = read_pairs(csv)
    assert (a.id, a.source, a.target, a.mask) == (
        "a", tmp_path / "sub" / "img" / "s.nii.gz", Path("/abs/t.nii.gz"), None)
    assert (b.id, b.mask) == ("b-2.x", tmp_path / "sub" / "m.nii.gz")
    assert [line.split(":")[0] for line in missing_inputs(b)] == ["pair b-2.x"] * 3


@pytest.mark.parametrize("text, expected", [
    ("id,source\nx,s.nii.gz\n", ["missing column target"]),
    ("name,moving,fixed\nx,s,t\n", ["missing columns id, source, target"]),
    ("id,source,target\n", ["no pairs"]),
    ("id,source,target\na,s,t\nb,s,t\na,s2,t2\n", ["line 4: duplicate id 'a' (first on line 2)"]),
    ("id,source,target\n../up,s,t\n.hidden,s,t\nok,,t\n",
     ["line 2: id '../up' is not usable", "line 3: id '.hidden' is not usable",
      "line 4: empty source"]),
])
def test_table_problems_are_listed_one_line_each(tmp_path: Path, text: str,
                                                 expected: list[str]) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(text)
    with pytest.raises(PairsError) as info:
        read_pairs(csv)
    problems = info.value.problems
    assert len(problems) == len(expected)
    for line, want in zip(problems, expected):
        assert want in line and "\n" not in line


def test_cli_refuses_a_bad_table_before_anything_runs(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("id,source,target\na,s.nii.gz,t.nii.gz\na,s.nii.gz,t.nii.gz\nb/c,s,t\n")
    done = _cli("--pairs", str(csv), "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 2 and all(line.startswith("regrisk cohort: error: ") for line in lines)
    assert "duplicate id 'a'" in lines[0] and "'b/c' is not usable" in lines[1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_output_folder_is_a_cohorts_or_new(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(CohortError, match="not a cohort's"):
        folder.prepare(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = folder.prepare(tmp_path / "new")
    assert (out / folder.PAIRS).is_dir()
    with folder.locked(out):
        with pytest.raises(CohortError, match="another regrisk cohort is running"):
            with folder.locked(out):
                pass


def test_manifest_drops_a_cut_line_and_keeps_the_latest(tmp_path: Path) -> None:
    first = Manifest(tmp_path)
    first.record(Outcome("a", "failed", 1.0, error="boom"), None)
    first.record(Outcome("a", DONE, 2.0), {"inputs": {"source": "x"}})
    with open(first.path, "a") as fh:
        fh.write('{"id": "b", "status": "do')         # a crash in the middle of a write
    again = Manifest(tmp_path)
    assert again.get("b") is None
    assert again.is_current("a", {"inputs": {"source": "x"}})
    assert not again.is_current("a", {"inputs": {"source": "y"}})
    again.record(Outcome("b", DONE, 3.0), None)
    lines = first.path.read_text().splitlines()
    assert json.loads(lines[-1])["id"] == "b"          # on its own line, readable
    assert Manifest(tmp_path).get("b")["seconds"] == 3.0


def test_qc_numbers_only_from_a_calibrated_summary() -> None:
    assert qc_numbers({"statistics": {}}) is None
    assert qc_numbers({"qc": "uncalibrated"}) is None
    assert qc_numbers({"qc": {"verdict": "review", "predicted_mean_error_mm": 2.5}}) == {
        "verdict": "review", "predicted_error_mm": 2.5}
