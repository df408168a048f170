"""`regrisk estimate` end to end on real NIfTI files and a real ONNX model, and every bad
input: one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from regrisk.cli import main
from builders import blob, com_model, oblique_affine, write_nifti

GRID = (16, 18, 20)
AFF_T = oblique_affine(spacing=(1.5, 1.0, 2.0), angle_deg=25.0)
AFF_S = oblique_affine(spacing=(1.5, 1.0, 2.0), angle_deg=25.0, origin=(-9.0, 4.0, 2.0))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    S = blob(GRID, (7.0, 9.5, 10.0))
    T = blob(GRID, (8.0, 8.5, 9.0))
    return {
        "dir": d,
        "source": write_nifti(d / "source.nii.gz", S * 100, AFF_S),
        "target": write_nifti(d / "target.nii.gz", T * 100, AFF_T),
        "model": com_model(d / "com.onnx", GRID, card={"preprocess": {"method": "minmax"}}),
    }


def _run(files, out, *extra):
    return main(["estimate", "--source", str(files["source"]), "--target", str(files["target"]),
                 "--model", str(files["model"]), "--out", str(out), "--quiet", *extra])


def test_end_to_end_outputs_on_target_grid(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(files, out, "--samples", "6", "--perturbation", "scale", "--seed", "3") == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and "6 samples" in line[0] and "sigma" in line[0]
    names = {"uncertainty.nii.gz": GRID, "uncertainty_axes.nii.gz": (*GRID, 3),
             "displacement.nii.gz": (*GRID, 1, 3), "mean_displacement.nii.gz": (*GRID, 1, 3),
             "warped_source.nii.gz": GRID}
    for name, shape in names.items():
        img = nib.load(str(out / name))
        assert img.shape == shape, name
        np.testing.assert_allclose(img.affine, AFF_T, atol=1e-5)
        assert np.all(np.isfinite(img.get_fdata()))
    disp = nib.load(str(out / "displacement.nii.gz"))
    assert disp.header.get_intent()[0] == "vector"
    sigma = nib.load(str(out / "uncertainty.nii.gz")).get_fdata()
    assert sigma.max() > 0.05  # scale is not an equivariance of the centre-of-mass model
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["parameters"]["samples"] == 6
    assert summary["card"]["name"] == "com"
    for stage in ("load", "to_grid", "inference", "perturb", "compose", "accumulate", "total"):
        assert stage in summary["timings"]
    assert "onnxruntime" in summary["versions"]
    # source and target differ only by their origin and the blob shift: the world displacement
    # is (world position of the matched source point) - (world position of the voxel)
    world_shift = np.asarray(summary["inputs"]["source"]["affine"])[:3, 3] - AFF_T[:3, 3]
    L = AFF_T[:3, :3]
    expected = L @ (np.array([7.0, 9.5, 10.0]) - np.array([8.0, 8.5, 9.0])) + world_shift
    # the file holds it in ITK's LPS+ axes (RAS+ with x and y negated), as ANTs reads it
    np.testing.assert_allclose(disp.get_fdata()[8, 9, 10, 0], expected * [-1, -1, 1], atol=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp folder left


def test_python_m_entry_point_and_overwrite(files, tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "regrisk", "estimate", "--source", str(files["source"]),
           "--target", str(files["target"]), "--model", str(files["model"]), "--out", str(out),
           "--samples", "2", "--perturbation", "translation"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def check_refused(files, tmp_path, capsys, match, **override):
    args = {"source": str(files["source"]), "target": str(files["target"]),
            "model": str(files["model"]), "out": str(tmp_path / "out"), "samples": "3"}
    args.update(override)
    argv = ["estimate", "--quiet"]
    for k, v in args.items():
        argv += [f"--{k.replace('_', '-')}", v]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]
    assert leftovers == []


def test_bad_images(files, tmp_path, capsys):
    d = tmp_path / "inputs"
    d.mkdir()
    check_refused(files, tmp_path, capsys, "no such file", source=str(d / "missing.nii.gz"))
    raw = (files["dir"] / "source.nii.gz").read_bytes()
    (d / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    check_refused(files, tmp_path, capsys, "truncated or corrupt", source=str(d / "trunc.nii.gz"))
    (d / "junk.nii").write_bytes(b"not a nifti file" * 40)
    check_refused(files, tmp_path, capsys, "not a readable NIfTI", target=str(d / "junk.nii"))
    v = blob(GRID, (8, 8, 8))
    v[2, 2, 2] = np.nan
    check_refused(files, tmp_path, capsys, "NaN or Inf", source=str(write_nifti(d / "nan.nii.gz", v, AFF_S)))
    check_refused(files, tmp_path, capsys, "constant",
         target=str(write_nifti(d / "c.nii.gz", np.ones(GRID, np.float32), AFF_T)))
    check_refused(files, tmp_path, capsys, "3-D scalar",
         source=str(write_nifti(d / "4d.nii.gz", np.random.rand(*GRID, 2).astype(np.float32), AFF_S)))


def test_bad_models_and_parameters(files, tmp_path, capsys):
    d = tmp_path / "models"
    d.mkdir()
    (d / "x.onnx").write_bytes(b"definitely not onnx" * 5)
    check_refused(files, tmp_path, capsys, "not an ONNX model", model=str(d / "x.onnx"))
    check_refused(files, tmp_path, capsys, "no model card",
         model=str(com_model(d / "nc.onnx", GRID, card=False)))
    check_refused(files, tmp_path, capsys, "card contradicts the graph",
         model=str(com_model(d / "w.onnx", GRID, card={"grid": [16, 18, 21]})))
    check_refused(files, tmp_path, capsys, "samples", samples="1")
    check_refused(files, tmp_path, capsys, "exceeds the budget", memory_budget="1M")
    check_refused(files, tmp_path, capsys, "unknown family", perturbation="wobble")
    (tmp_path / "out").mkdir()
    assert _run(files, tmp_path / "out") == 2
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_backend_asked_for_by_name_that_cannot_run_is_one_line(files, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") and importlib.util.find_spec("cupy"):
        pytest.skip("TensorRT and CuPy are installed here: the backend may really run")
    check_refused(files, tmp_path, capsys, "backend 'tensorrt' cannot run here", backend="tensorrt")


def test_interrupt_while_saving_leaves_nothing(files, tmp_path, monkeypatch, capsys):
    from regrisk import io

    real = io.save_nifti
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(io, "save_nifti", interrupted)
    assert _run(files, tmp_path / "out", "--samples", "2") == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_info_reports_versions_build_and_providers(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    import onnxruntime

    assert info["versions"]["onnxruntime"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert "openmp" in info["build"]
    assert "onnxruntime" in info["backends"]
    # the shipped calibration, as its file says (read here as plain JSON)
    from regrisk.calibration import store

    shipped = json.loads(store.default_path().read_text())
    cal = info["default_calibration"]
    assert cal["id"] == shipped["id"] and cal["coverage"] == 0.9
    assert cal["held_out"]["coverage_per_case_min"] == shipped["held_out"]["coverage_per_case_min"]
    weights = dict(zip(shipped["error_model"]["features"], shipped["error_model"]["weights"]))
    assert cal["features"] == [n for n, w in weights.items() if w > 0]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "providers:" in out and f"calibration default: {shipped['id']}" in out


def test_allocator_tuning_is_an_opt_in_the_cli_makes(files, tmp_path, monkeypatch):
    """Tuning glibc's allocator is process-wide: the library never does it on its own, the
    command line asks for it once before building the estimator."""
    from regrisk import Estimator, engine, memory

    calls: list[str] = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("memory") or True)
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append("engine") or True)
    with Estimator(str(files["model"])) as est:
        S = blob(GRID, (7.0, 9.5, 10.0))
        est.estimate((S, AFF_S), (S, AFF_S), samples=2, perturbation="translation")
    assert calls == []
    assert _run(files, tmp_path / "o", "--samples", "2", "--perturbation", "translation") == 0
    assert calls == ["engine"]
