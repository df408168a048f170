"""`regrisk evaluate` end to end on small cases with real (small) registration models:

- ``demons``: a classical Thirion-demons registration written here as a Python callable;
- ``com``: a real ONNX graph (built with onnx.helper) that registers by the difference of the
  images' centres of mass, a translation; its ``_stochastic`` sibling applies dropout to the
  inputs (training_mode on), a genuine stochastic graph for the MC-dropout baseline.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from regrisk.card import ModelCard, Preprocess, write_card
from regrisk.cli import main
from regrisk.evaluation import evaluate, groundtruth
from regrisk.evaluation.protocol import EvaluationConfig, build_cases

SHAPE = (22, 26, 24)
# Permuted, flipped, anisotropic axes: array axis 0 -> world z (1.5 mm), 1 -> -y, 2 -> x.
AFFINE = np.array([[0, 0, 1.2, -10.0], [0, -1.0, 0, 20.0], [1.5, 0, 0, 5.0], [0, 0, 0, 1]])


def phantom(seed: int = 0) -> np.ndarray:
    """An ellipsoid 'head' with smooth internal texture, background 0."""
    rng = np.random.default_rng(seed)
    x = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij"))
    c = (np.array(SHAPE) - 1) / 2
    r = np.sqrt((((x - c[:, None, None, None]) / (0.33 * np.array(SHAPE))[:, None, None, None]) ** 2).sum(0))
    tex = ndimage.gaussian_filter(rng.random(SHAPE), 1.5)
    img = (r < 1) * (0.5 + 2.0 * (tex - tex.mean()) + 0.3 * np.cos(r * 4))
    return ndimage.gaussian_filter(np.clip(img, 0, None), 0.6).astype(np.float32)


def demons(source: np.ndarray, target: np.ndarray, iterations: int = 20,
           sigma: float = 1.5) -> np.ndarray:
    """Thirion demons: S(x + u) ~ T, (B,1,D,H,W) -> (B,3,D,H,W) voxels."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in source.shape[2:]],
                                indexing="ij"))
    out = np.zeros((source.shape[0], 3, *source.shape[2:]), np.float32)
    for b in range(source.shape[0]):
        s, t = source[b, 0], target[b, 0]
        u = np.zeros((3, *s.shape), np.float32)
        for _ in range(iterations):
            w = ndimage.map_coordinates(s, grid + u, order=1, mode="nearest")
            g = np.stack(np.gradient(w))
            diff = t - w
            u = u + diff * g / ((g * g).sum(0) + diff * diff + 1e-6)
            u = np.stack([ndimage.gaussian_filter(c, sigma) for c in u])
        out[b] = u
    return out


def com_translation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Centre-of-mass registration as a callable: u = com(S) - com(T) everywhere."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in source.shape[2:]],
                                indexing="ij"))

    def com(v: np.ndarray) -> np.ndarray:
        return (grid * v).reshape(3, -1).sum(1) / v.sum()

    out = np.empty((source.shape[0], 3, *source.shape[2:]), np.float32)
    for b in range(source.shape[0]):
        out[b] = (com(source[b, 0]) - com(target[b, 0]))[:, None, None, None]
    return out


def com_onnx(path: Path, grid: tuple[int, int, int], stochastic: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in grid],
                                  indexing="ij"))[None]
    inits = [numpy_helper.from_array(coords, "coords"),
             numpy_helper.from_array(np.zeros((1, 3, *grid), np.float32), "zeros"),
             numpy_helper.from_array(np.array([2, 3, 4], np.int64), "axes")]
    nodes = []
    for name in ("source", "target"):
        x = name
        if stochastic:
            inits += [numpy_helper.from_array(np.array(0.3, np.float32), f"ratio_{name}"),
                      numpy_helper.from_array(np.array(True), f"train_{name}")]
            nodes.append(helper.make_node("Dropout", [name, f"ratio_{name}", f"train_{name}"],
                                          [f"{name}_d"]))
            x = f"{name}_d"
        nodes += [helper.make_node("Mul", [x, "coords"], [f"{name}_wc"]),
                  helper.make_node("ReduceSum", [f"{name}_wc", "axes"], [f"{name}_num"], keepdims=1),
                  helper.make_node("ReduceSum", [x, "axes"], [f"{name}_den"], keepdims=1),
                  helper.make_node("Div", [f"{name}_num", f"{name}_den"], [f"{name}_com"])]
    nodes += [helper.make_node("Sub", ["source_com", "target_com"], ["shift"]),
              helper.make_node("Add", ["shift", "zeros"], ["displacement"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 1, *grid]) for n in ("source", "target")]
    out = helper.make_tensor_value_info("displacement", TensorProto.FLOAT, ["B", 3, *grid])
    model = helper.make_model(helper.make_graph(nodes, "com", ins, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_card(path, ModelCard(name="com" + ("-stochastic" if stochastic else ""), grid=grid,
                               preprocess=Preprocess(method="none"), stochastic=stochastic))
    return path


def _pair() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return (phantom(1), AFFINE), (phantom(2), AFFINE)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_true_error_of_a_zero_model_is_the_truth_in_mm() -> None:
    # A model that predicts no motion has error |M u_gt| exactly: checks the mm conversion and
    # the region against a direct computation from the ground-truth draw.
    def zero(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.zeros((source.shape[0], 3, *source.shape[2:]), np.float32)

    src, tgt = _pair()
    cfg = EvaluationConfig(model=zero, source=src, target=tgt, ground_truth=("affine",),
                           samples=2, base="target", baselines=("random",), plots="none")
    res = evaluate(None, config=cfg)
    cfg2 = EvaluationConfig(model=zero, source=src, target=tgt, ground_truth=("affine",),
                            samples=2, base="target")
    cfg2.check()
    (case,) = build_cases(cfg2)
    expect = np.linalg.norm(np.einsum("ij,j...->i...", AFFINE[:3, :3],
                                      case.truth.displacement.astype(np.float64)), axis=0)
    row = next(r for r in res.rows if r["method"] == "random")
    assert row["mean_error"] == pytest.approx(expect[case.region].mean(), rel=1e-4)
    assert row["voxels"] == int(case.region.sum())


def test_translation_direction_end_to_end() -> None:
    # Centre-of-mass registration recovers a pure translation almost exactly, so the true error
    # is small only if u_gt, the engine's mm output and the comparison agree in direction.
    src, tgt = _pair()
    res = evaluate(None, model=com_translation, source=src, target=tgt,
                   ground_truth=("translation",), samples=4, base="target",
                   baselines=("random",), plots="none", repeats=2, seed=5)
    (case0, case1) = build_cases(EvaluationConfig(model=com_translation, source=src, target=tgt,
                                                  ground_truth=("translation",), base="target",
                                                  repeats=2, seed=5))
    for case in (case0, case1):
        t_mm = np.linalg.norm(AFFINE[:3, :3] @ np.array(case.truth.params["translation_vox"]))
        row = next(r for r in res.rows if r["method"] == "equivariance:paper"
                   and r["repeat"] == case.repeat)
        assert t_mm > 0.5
        assert row["mean_error"] < 0.15 * t_mm, (row["mean_error"], t_mm)


def test_evaluate_end_to_end_with_demons(tmp_path: Path) -> None:
    src, tgt = _pair()
    out = tmp_path / "eval"
    res = evaluate(out, model=demons, source=src, target=tgt, ground_truth=("all",), samples=4,
                   base="target", seed=3)
    rows = _rows(out / "metrics.csv")
    methods = {"equivariance:paper", "inverse_consistency", "random"}
    assert {r["method"] for r in rows} == methods  # no stochastic graph for a callable
    assert {r["ground_truth"] for r in rows} == set(groundtruth.KINDS)
    assert len(rows) == 9 == len(res.rows)
    for r in rows:
        assert np.isfinite(float(r["pearson"])) and np.isfinite(float(r["naurc"]))
        assert float(r["aurc_oracle"]) <= float(r["aurc"]) + 1e-9
        if r["method"] == "random":
            assert abs(float(r["naurc"]) - 1.0) < 0.25 and abs(float(r["pearson"])) < 0.2
    summary = (out / "summary.md").read_text()
    assert "equivariance:paper" in summary and "0.71-0.78" in summary
    pngs = sorted(p.name for p in (out / "plots").iterdir())
    for kind in groundtruth.KINDS:
        assert f"sparsification_{kind}_r0_target.png" in pngs
        assert f"montage_{kind}_r0_target.png" in pngs
        assert f"hexbin_{kind}_r0_target_equivariance_paper.png" in pngs
    assert not list(tmp_path.glob(".eval*"))  # temp folder renamed away


def test_convergence_independent_and_sobol(tmp_path: Path) -> None:
    src, tgt = _pair()
    res = evaluate(tmp_path / "c", model=demons, source=src, target=tgt,
                   ground_truth=("nonlinear",), samples=4, base="target", convergence=True,
                   convergence_samples=(4, 8, 16), baselines=(), perturbation=("affine",))
    assert len(_rows(tmp_path / "c" / "convergence.csv")) == 6
    assert (tmp_path / "c" / "plots" / "convergence_nonlinear.png").is_file()
    assert "Sample efficiency" in (tmp_path / "c" / "summary.md").read_text()
    conv = res.convergence
    assert [(r["draws"], r["samples"]) for r in conv] == [
        ("independent", 4), ("independent", 8), ("independent", 16),
        ("sobol", 4), ("sobol", 8), ("sobol", 16)]
    for r in conv:
        assert -1.0 <= r["agreement_spearman"] <= 1.0
    # More samples agree better with the independent K_max map (a noisy but large effect here).
    ind = [r["agreement_spearman"] for r in conv if r["draws"] == "independent"]
    assert ind[-1] > ind[0]


@pytest.fixture(scope="module")
def nifti_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pair")
    (s, a), (t, _) = _pair()
    paths = {"source": d / "s.nii.gz", "target": d / "t.nii.gz", "mask": d / "m.nii.gz",
             "badmask": d / "bm.nii.gz"}
    nib.save(nib.Nifti1Image(s, a), paths["source"])
    nib.save(nib.Nifti1Image(t, a), paths["target"])
    nib.save(nib.Nifti1Image((t > 0.2).astype(np.uint8), a), paths["mask"])
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), a), paths["badmask"])
    com_onnx(d / "com.onnx", SHAPE, stochastic=False)
    com_onnx(d / "com_stochastic.onnx", SHAPE, stochastic=True)
    paths["model"] = d / "com.onnx"
    return paths


def test_cli_with_onnx_model_and_mc_dropout(nifti_pair: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["evaluate", "--model", str(nifti_pair["model"]), "--source", str(nifti_pair["source"]),
               "--target", str(nifti_pair["target"]), "--mask", str(nifti_pair["mask"]),
               "--ground-truth", "translation,affine", "--samples", "4", "--out", str(out),
               "--repeats", "2", "--quiet", "--plots", "none"])
    assert rc == 0
    rows = _rows(out / "metrics.csv")
    assert {r["method"] for r in rows} == {"equivariance:paper", "inverse_consistency",
                                           "mc_dropout", "random"}
    # 2 kinds x 2 repeats x 2 base images, 4 methods each.
    assert len(rows) == 2 * 2 * 2 * 4
    mc = [r for r in rows if r["method"] == "mc_dropout"]
    assert all(float(r["mean_uncertainty"]) > 0 for r in mc)  # dropout really is on
    trans = [r for r in rows if r["ground_truth"] == "translation" and r["method"] == "random"]
    assert all(float(r["mean_error"]) < 1.0 for r in trans)  # COM recovers translations
    assert "equivariance:paper" in capsys.readouterr().out


@pytest.mark.parametrize("change,message", [
    ({"--source": "/nonexistent/s.nii.gz"}, "no such file"),
    ({"--ground-truth": "rotation"}, "--ground-truth"),
    ({"--samples": "1"}, "--samples"),
    ({"--mask": "badmask"}, "mask shape"),
    ({"--model": "/nonexistent/m.onnx"}, "no such file"),
])
def test_cli_bad_input_one_line_exit_2(nifti_pair: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], change: dict[str, str],
                                       message: str) -> None:
    args = {"--model": str(nifti_pair["model"]), "--source": str(nifti_pair["source"]),
            "--target": str(nifti_pair["target"]), "--ground-truth": "translation",
            "--samples": "4", "--out": str(tmp_path / "o")}
    for k, v in change.items():
        args[k] = str(nifti_pair[v]) if v in nifti_pair else v
    argv = ["evaluate", "--quiet", "--plots", "none"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_existing_output_and_failing_model_leave_nothing(tmp_path: Path) -> None:
    from regrisk.errors import ModelError, OutputError

    src, tgt = _pair()
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="exists"):
        evaluate(tmp_path / "taken", model=demons, source=src, target=tgt)
    calls = {"n": 0}

    def flaky(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 1:  # the first batch of perturbed samples fails
            raise RuntimeError("device lost")
        return com_translation(source, target)

    with pytest.raises(ModelError, match="device lost"):
        evaluate(tmp_path / "new", model=flaky, source=src, target=tgt, samples=4,
                 ground_truth=("translation",), base="target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
