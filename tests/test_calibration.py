"""Calibrated error maps: the split-conformal bound's guarantee, a calibration tied to its model
and grid, estimate with and without a calibration, and the verdict on a failed registration.

The model under calibration is a small callable: it registers by the centres of mass but can
follow a shift of at most ``REACH`` voxels (a network with a limited capture range), so shifts
beyond it are real failures with a known true error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regrisk import io
from regrisk.calibration import apply, build, cases, model, qc, store
from regrisk.cli import main
from regrisk.engine import Estimator
from regrisk.errors import InputError, ModelError
from builders import com_model, phantom, write_nifti

GRID = (24, 24, 24)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
REACH = 2.0  # voxels


def limited_reach(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Displacement = difference of the centres of mass, clipped to REACH voxels per axis."""
    out = np.empty((source.shape[0], 3, *source.shape[2:]), np.float32)
    idx = np.indices(source.shape[2:], dtype=np.float64)
    for b in range(source.shape[0]):
        s, t = np.maximum(source[b, 0], 0), np.maximum(target[b, 0], 0)
        com = [(idx[c] * s).sum() / s.sum() - (idx[c] * t).sum() / t.sum() for c in range(3)]
        out[b] = np.clip(np.array(com), -REACH, REACH)[:, None, None, None]
    return out


@pytest.fixture(scope="module")
def image() -> io.Image:
    return io.load_image((phantom(GRID, AFFINE) * 100.0, AFFINE), "phantom")


@pytest.fixture(scope="module")
def calibration(image):
    """A real calibration of the limited-reach model on 12 small cases (K = 4)."""
    with Estimator(limited_reach, threads=1) as est:
        records = cases.collect(est, [image], 12, samples=4, seed=3)
        identity = store.model_identity(est)
    return build.make(records, 0.9, identity, [image], 4, 3, "test")


def test_conformal_bound_covers_within_its_finite_sample_guarantee():
    # exchangeable data: log error linear in one log cue plus noise; n calibration points give
    # coverage in [1 - alpha, 1 - alpha + 1/(n + 1)] on average over draws
    rng = np.random.default_rng(0)
    n_cal, trials, alpha = 49, 400, 0.1
    covered = []
    for _ in range(trials):
        sigma = rng.lognormal(0.0, 0.5, 300 + n_cal + 200)
        err = np.exp(0.8 * np.log(sigma + 0.05) + rng.normal(0.0, 0.4, sigma.size)) - 0.05
        x = np.log(sigma + 0.05)[:, None]
        m = model.fit(x[:300], err[:300], x[300:300 + n_cal], err[300:300 + n_cal], 1 - alpha,
                      names=("log_sigma",))
        covered.append(np.mean(err[300 + n_cal:] <= m.bound(x[300 + n_cal:])))
    mean, se = float(np.mean(covered)), float(np.std(covered) / np.sqrt(trials))
    assert 1 - alpha - 3 * se <= mean <= 1 - alpha + 1 / (n_cal + 1) + 3 * se


def test_conformal_quantile_is_the_ceil_rank_and_infinite_when_too_few():
    scores = np.arange(1.0, 20.0)  # n = 19: rank ceil(20 * 0.9) = 18
    assert model.conformal_quantile(scores, 0.9) == 18.0
    assert model.conformal_quantile(np.arange(5.0), 0.9) == float("inf")


def test_error_model_is_monotone_in_sigma(calibration):
    m = calibration.model
    # a typical row (logs of 0.5 mm, residuals of 0.1), sigma swept over three decades
    base = np.array([[np.log(0.5) if model.FEATURES[n][1] == "log" else 0.1 for n in m.names]] * 50)
    base[:, m.names.index("log_sigma")] = np.linspace(-3, 2, 50)
    assert (np.diff(m.expected(base)) >= 0).all() and (np.diff(m.bound(base)) >= 0).all()
    assert (m.bound(base) >= m.expected(base)).all() or m.quantile < 0


def test_calibration_round_trips_and_refuses_another_model_or_grid(calibration, tmp_path):
    path = tmp_path / "cal.json"
    store.save(calibration, path)
    cal = store.load(path)
    assert cal.id == calibration.id and cal.payload["model"]["sha256"] == "callable:limited_reach"
    cal.check_model({"sha256": "callable:limited_reach", "label": "x", "grid": list(GRID)})
    with pytest.raises(ModelError, match="made for model"):
        cal.check_model({"sha256": "0" * 64, "label": "other.onnx", "grid": list(GRID)})
    with pytest.raises(ModelError, match="made for grid"):
        cal.check_model({"sha256": "callable:limited_reach", "label": "x", "grid": [16, 16, 16]})
    edited = json.loads(path.read_text())
    edited["error_model"]["weights"][0] += 1.0
    path.write_text(json.dumps(edited))
    with pytest.raises(InputError, match="does not match its id"):
        store.load(path)


def _files(tmp_path, image):
    shifted = np.roll(image.data, 1, axis=0)
    return (write_nifti(tmp_path / "s.nii.gz", shifted, AFFINE),
            write_nifti(tmp_path / "t.nii.gz", image.data, AFFINE))


def test_estimate_without_calibration_writes_no_error_map(tmp_path, image):
    src, tgt = _files(tmp_path, image)
    model_path = com_model(tmp_path / "com.onnx", GRID)
    out = tmp_path / "run"
    assert main(["estimate", "--source", str(src), "--target", str(tgt), "--model",
                 str(model_path), "--samples", "4", "--out", str(out), "--quiet"]) == 0
    assert not (out / "error_mm.nii.gz").exists() and not (out / "error_bound_mm.nii.gz").exists()
    assert json.loads((out / "summary.json").read_text())["qc"] == "uncalibrated"


def test_estimate_refuses_a_calibration_made_for_another_model(tmp_path, image, calibration,
                                                                capsys):
    src, tgt = _files(tmp_path, image)
    cal_path = tmp_path / "cal.json"
    store.save(calibration, cal_path)
    out = tmp_path / "run"
    status = main(["estimate", "--source", str(src), "--target", str(tgt), "--model",
                   str(com_model(tmp_path / "com.onnx", GRID)), "--samples", "4",
                   "--calibration", str(cal_path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "made for model" in err[0]
    assert not out.exists()


def _estimate(image: io.Image, shift_vox: int, calibration, threads: int | None = 1):
    src = (np.roll(image.data, shift_vox, axis=1), AFFINE)
    tgt = (image.data, AFFINE)
    with Estimator(limited_reach, threads=threads) as est:
        res = est.estimate(src, tgt, samples=4, seed=1)
        return apply.annotate(est, res, src, tgt, calibration)


def test_verdict_on_a_shift_far_beyond_the_model_is_not_pass(image, calibration, tmp_path):
    res = _estimate(image, 10, calibration)  # 20 mm, five times the model's reach
    block = res.summary["qc"]
    assert block["verdict"] in ("review", "fail")
    assert block["calibration_id"] == calibration.id
    assert block["predicted_mean_error_mm"] > qc.DEFAULT_THRESHOLD_MM
    assert res.error_mm.shape == GRID and (res.error_bound_mm >= res.error_mm).all()
    saved = res.save(tmp_path / "out")
    assert (saved / "error_mm.nii.gz").is_file() and (saved / "error_bound_mm.nii.gz").is_file()


def test_verdict_on_a_shift_within_reach_passes(image, calibration):
    res = _estimate(image, 1, calibration)
    assert res.summary["qc"]["verdict"] == "pass"
    # the estimator's default thread count (all cores) gives the same maps, bit for bit
    every_core = _estimate(image, 1, calibration, threads=None)
    assert np.array_equal(every_core.error_mm, res.error_mm)
    assert np.array_equal(every_core.error_bound_mm, res.error_bound_mm)


def test_evaluate_scores_the_calibrated_map_its_coverage_and_verdict(image, calibration, tmp_path):
    from regrisk.evaluation.protocol import evaluate, qc_table

    cal_path = tmp_path / "cal.json"
    store.save(calibration, cal_path)
    res = evaluate(None, model=limited_reach, source=(image.data, AFFINE),
                   target=(image.data, AFFINE), ground_truth=("translation",), samples=4,
                   baselines=("random",), plots="none", calibration=str(cal_path), base="target")
    row = next(r for r in res.rows if r["method"] == "calibrated")
    sigma = next(r for r in res.rows if r["method"].startswith("equivariance"))
    assert 0.0 <= row["coverage"] <= 1.0 and row["verdict"] in ("pass", "review", "fail")
    assert row["mean_error"] == sigma["mean_error"]  # the same case, the same true error
    assert "| translation |" in qc_table(res.rows)


def test_calibrate_cli_writes_a_calibration_that_estimate_uses(tmp_path, image, capsys):
    img = write_nifti(tmp_path / "brain.nii.gz", image.data, AFFINE)
    model_path = com_model(tmp_path / "com.onnx", GRID)
    cal_path = tmp_path / "com.calibration.json"
    assert main(["calibrate", "--model", str(model_path), "--images", str(img), "--cases", "8",
                 "--samples", "3", "--quiet"]) == 0  # default --out: beside the model
    cal = store.load(cal_path)
    assert cal.payload["model"]["sha256"] == store.model_identity(Estimator(str(model_path))
                                                                  )["sha256"]
    assert cal.payload["images"][0]["sha256"] == store.image_sha256(image.data, AFFINE)
    assert 0.0 <= cal.payload["held_out"]["coverage_pooled"] <= 1.0
    src, tgt = _files(tmp_path, image)
    out = tmp_path / "run"
    assert main(["estimate", "--source", str(src), "--target", str(tgt), "--model",
                 str(model_path), "--samples", "4",  # the calibration beside the model
                 "--qc-threshold", "3", "--out", str(out), "--quiet"]) == 0
    qc_block = json.loads((out / "summary.json").read_text())["qc"]
    assert qc_block["calibration_id"] == cal.id and qc_block["threshold_mm"] == 3.0
    assert (out / "error_mm.nii.gz").is_file() and (out / "error_bound_mm.nii.gz").is_file()
    assert main(["estimate", "--source", str(src), "--target", str(tgt), "--model",
                 str(model_path), "--samples", "4", "--no-calibration", "--out",
                 str(tmp_path / "plain"), "--quiet"]) == 0
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["qc"] == "uncalibrated"
    assert not (tmp_path / "plain" / "error_mm.nii.gz").exists()
    capsys.readouterr()
    assert main(["calibrate", "--model", str(model_path), "--images", str(img), "--coverage",
                 "1.5", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--coverage" in err[0] and not (tmp_path / "x.json").exists()


def test_estimate_reads_the_cues_with_the_calibrations_own_settings(image, calibration):
    import copy

    assert calibration.payload["cues"]["ncc_window_mm"] == 4.0  # what the cases were read with
    wider = copy.deepcopy(calibration)
    for key in ("smooth", "ncc_window", "ncc_wide_window", "flow_window"):
        wider.payload["cues"][f"{key}_mm"] *= 3.0
    legacy = copy.deepcopy(calibration)  # a file from before windows were in mm: voxels
    for key in ("smooth", "ncc_window", "ncc_wide_window", "flow_window"):
        legacy.payload["cues"][f"{key}_vox"] = legacy.payload["cues"].pop(f"{key}_mm") / 2.0
    base, wide, old = (_estimate(image, 10, c) for c in (calibration, wider, legacy))
    assert base.error_mm.max() > 0
    assert not np.array_equal(wide.error_mm, base.error_mm)
    # on this 2 mm grid, windows of 2 voxels are the 4 mm ones: the same maps bit for bit
    assert np.array_equal(old.error_mm, base.error_mm)
