"""Reliability, tried as a hostile user would (issue 16): a broken model is never reported as
certain, nothing a user owns is deleted, bombs are refused before they are read, every bad
input gets one line.

The catalogue below runs the real command line in a child process for every case and checks
the same contract each time: exit status 2, exactly one stderr line naming the problem, no
traceback, the output folder absent (or the previous one intact), inputs and model
byte-identical, no temporary folder left; for bombs, the child's peak memory (getrusage of the
child) far below what the header claims.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_builders import array_module, array_module_params, to_host
from regrisk import kernels as K
from regrisk import reference as R


@pytest.fixture(params=array_module_params())
def xp(request):
    return array_module(request.param)


# -- (a) the statistics never turn NaN into a number ------------------------------------------


def _broken_samples(rng, shape):
    """(6, 3, *shape) samples; voxel (0,0,0) holds one NaN, voxel (1,1,1) one +Inf, voxel
    (0,1,2) a NaN in the z component only."""
    s = rng.standard_normal((6, 3) + shape).astype(np.float32)
    s[2, 0, 0, 0, 0] = np.nan
    s[4, 1, 1, 1, 1] = np.inf
    s[1, 2, 0, 1, 2] = np.nan
    return s


BROKEN = [(0, 0, 0), (1, 1, 1), (0, 1, 2)]


def test_welford_sigma_keeps_nan_native_and_reference(xp, rng):
    shape = (2, 3, 4)
    samples = _broken_samples(rng, shape)
    M = np.diag([1.5, 1.0, 2.0])
    acc = K.Welford(shape, like=xp.zeros(1, np.float32)).update(xp.asarray(samples))
    ref = R.Welford(shape).update(samples)
    bad = np.zeros(shape, bool)
    for v in BROKEN:
        bad[v] = True
    for got in (to_host(acc.sigma(M)), ref.sigma(M)):
        assert np.isnan(got[bad]).all(), got[bad]  # never 0, never a number
        assert np.isfinite(got[~bad]).all() and (got[~bad] > 0).all()
    for got in (to_host(acc.axis_sigma(M)), ref.axis_sigma(M)):
        assert np.isnan(got[:, bad]).any(axis=0).all()  # every broken voxel shows NaN
        assert np.isfinite(got[:, ~bad]).all()
    # the covariance route (count 2 sigma) too, and native equals reference where finite
    cov = acc.covariance
    for got in (to_host(K.covariance_sigma(cov, M)), R.covariance_sigma(to_host(cov), M)):
        assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
    np.testing.assert_allclose(to_host(acc.sigma(M))[~bad], ref.sigma(M)[~bad], rtol=1e-5)


def test_negative_rounding_residue_is_still_clamped_to_zero(xp):
    """The clamp that used to swallow NaN still turns a tiny negative variance into 0."""
    cov = np.zeros((6, 1, 1, 2), np.float32)
    cov[0, 0, 0, 0] = -1e-12  # rounding residue
    cov[0, 0, 0, 1] = np.nan
    got = to_host(K.covariance_sigma(xp.asarray(cov), np.eye(3)))
    assert got[0, 0, 0] == 0.0 and np.isnan(got[0, 0, 1])
    ref = R.covariance_sigma(cov, np.eye(3))
    assert ref[0, 0, 0] == 0.0 and np.isnan(ref[0, 0, 1])


# -- the command line, as a hostile user drives it -------------------------------------------

import gzip  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import regrisk  # noqa: E402
from builders import attach_card_json, blob, com_model, oblique_affine, write_nifti  # noqa: E402

GRID = (16, 18, 20)
AFF = oblique_affine()
_PACKAGE_ROOT = str(Path(regrisk.__file__).resolve().parents[1])
_CHILD = "import sys\n{prelude}\nfrom regrisk.cli import main\nsys.exit(main(sys.argv[1:]))"
# A small launcher starts the command and reports its rusage: on Linux a process's peak RSS
# starts from its parent's at fork/exec, so the parent must be small, not pytest itself.
_LAUNCH = """import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", *sys.argv[2:]], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_bytes: int  # the child's own peak resident memory (getrusage via wait4)


def child_env() -> dict[str, str]:
    """The environment for a child Python that imports this regrisk."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [_PACKAGE_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def run_cli(cwd: Path, *args: str, prelude: str = "") -> Run:
    """``regrisk ARGS`` in a child process started in ``cwd``."""
    env = child_env()
    with tempfile.TemporaryDirectory() as scratch:
        rss = Path(scratch) / "maxrss"
        child = subprocess.run([sys.executable, "-c", _LAUNCH, str(rss),
                                _CHILD.format(prelude=prelude), *args],
                               cwd=cwd, capture_output=True, env=env)
        return Run(child.returncode, child.stdout.decode(errors="replace"),
                   child.stderr.decode(errors="replace"), int(rss.read_text()) * 1024)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included): file hashes, link targets, dirs."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = _digest(p)
    return out


def _digest(path: Path) -> str:
    """sha256 of a file; of its size and both ends past 64 MiB (the sparse bombs)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= 64 << 20:
            return hashlib.file_digest(fh, "sha256").hexdigest()
        head = fh.read(1 << 20)
        fh.seek(size - (1 << 20))
        return f"{size}:" + hashlib.sha256(head + fh.read()).hexdigest()


@dataclass
class Attempt:
    """A CLI run on bad input and what it did to the workspace."""

    run: Run
    changed: list[str]  # workspace entries added, removed or modified by the run

    @property
    def breaches(self) -> list[str]:
        """The guarantees for every bad input that this run broke: exit 2, one stderr line, no
        traceback, the workspace as it was (inputs and model byte-identical, the output folder
        absent or the previous one intact, no temporary folder)."""
        lines = self.run.err.splitlines()
        out = [] if self.run.rc == 2 else [f"exit status {self.run.rc}"]
        out += ["a traceback"] if "Traceback" in self.run.err else []
        out += [] if len(lines) == 1 else [f"{len(lines)} stderr lines"]
        out += [f"workspace changed: {self.changed}"] if self.changed else []
        return out

    @property
    def line(self) -> str:
        return self.run.err.splitlines()[0] if self.run.err.strip() else ""


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("originals")
    write_nifti(d / "S.nii.gz", blob(GRID, (7.0, 9.5, 10.0)) * 100, AFF)
    write_nifti(d / "T.nii.gz", blob(GRID, (8.0, 8.5, 9.0)) * 100, AFF)
    com_model(d / "m.onnx", GRID, card={"preprocess": {"method": "minmax"}})
    return d


@pytest.fixture
def ws(originals, tmp_path) -> Path:
    """A workspace holding copies of the source, target and model."""
    w = tmp_path / "ws"
    shutil.copytree(originals, w)
    return w


ESTIMATE = ("estimate", "--source", "S.nii.gz", "--target", "T.nii.gz", "--model", "m.onnx",
            "--out", "out", "--samples", "4", "--quiet")


def estimate(*extra: str, **override: str) -> list[str]:
    """ESTIMATE with options replaced (``source="x"``) or added (``extra``)."""
    argv = list(ESTIMATE)
    for key, value in override.items():
        flag = f"--{key.replace('_', '-')}"
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv + list(extra)


def attempt(ws: Path, argv: list[str], prelude: str = "") -> Attempt:
    """Run ``regrisk ARGV`` in ``ws`` and record what changed there."""
    before = snapshot(ws)
    run = run_cli(ws, *argv, prelude=prelude)
    after = snapshot(ws)
    return Attempt(run, sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))


# Models that are broken in the way a real network can be: an output constant added to the
# (zeroed) input, so the graph runs and returns exactly what is planted.

def planted_model(path: Path, planted: np.ndarray, name: str = "planted") -> Path:
    """flow = 0 * concat(S, S, S) + planted (1, 3, *GRID)."""
    D, H, W = GRID
    io_shape = ["B", 1, D, H, W]
    nodes = [helper.make_node("Concat", ["source", "source", "source"], ["s3"], axis=1),
             helper.make_node("Mul", ["s3", "zero"], ["z"]),
             helper.make_node("Add", ["z", "planted"], ["flow"])]
    inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
             numpy_helper.from_array(planted.astype(np.float32), "planted")]
    return _save_graph(path, nodes, inits, io_shape, name)


def failing_model(path: Path) -> Path:
    """A graph ONNX Runtime loads but cannot run: a reshape of 5760 values into rows of 7."""
    D, H, W = GRID
    nodes = [helper.make_node("Reshape", ["source", "rows"], ["r"]),
             helper.make_node("ReduceSum", ["r"], ["total"], keepdims=0),
             helper.make_node("Concat", ["source", "source", "source"], ["s3"], axis=1),
             helper.make_node("Add", ["s3", "total"], ["flow"])]
    inits = [numpy_helper.from_array(np.array([-1, 7], np.int64), "rows")]
    return _save_graph(path, nodes, inits, ["B", 1, D, H, W], "failing")


def _save_graph(path: Path, nodes: list, inits: list, io_shape: list, name: str) -> Path:
    D, H, W = GRID
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("source", TensorProto.FLOAT, io_shape),
         helper.make_tensor_value_info("target", TensorProto.FLOAT, io_shape)],
        [helper.make_tensor_value_info("flow", TensorProto.FLOAT, ["B", 3, D, H, W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    attach_card_json(model, {"name": name, "grid": list(GRID), "batch": "dynamic",
                             "preprocess": {"method": "minmax"},
                             "output": {"name": "flow", "kind": "displacement", "units": "voxel"}})
    onnx.save(model, str(path))
    return path


# -- (a) non-finite values stop the run, naming the model -------------------------------------

def _planted(kind: str) -> np.ndarray:
    p = np.zeros((1, 3) + GRID, np.float32)
    if kind == "nan-one-voxel":
        p[0, 1, 3, 4, 5] = np.nan
    elif kind == "inf-everywhere":
        p[:] = np.inf
    elif kind == "nan-everywhere":
        p[:] = np.nan
    elif kind == "minus-inf-one-component":
        p[0, 2, 8, 9, 10] = -np.inf
    return p


@pytest.mark.parametrize("kind", ["nan-one-voxel", "inf-everywhere", "nan-everywhere",
                                  "minus-inf-one-component"])
def test_a_network_that_outputs_nan_or_inf_is_never_reported_as_certain(ws, kind):
    planted_model(ws / "broken.onnx", _planted(kind))
    a = attempt(ws, estimate(model="broken.onnx"))
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(r"model broken\.onnx returned non-finite values", a.line, re.IGNORECASE), a.line


@pytest.mark.parametrize("spec, match", [
    ("bspline(max=1e39)", r"bspline\.max=1e\+39 voxels is out of range"),
    ("translation(max=1e39mm)", r"translation\.max=1e\+39mm is out of range"),
    ("bspline(max=1e38)+translation", r"bspline\.max"),
    ("scale(min=1e-300,max=1)", r"scale needs 0\.1 <= min"),
])
def test_perturbations_that_would_overflow_float32_are_refused_at_parse_time(ws, spec, match):
    a = attempt(ws, estimate(perturbation=spec))
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(match, a.line, re.IGNORECASE), a.line


def test_summary_json_never_records_nan_as_a_number(tmp_path):
    from regrisk import io
    from regrisk.errors import NonFiniteError

    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        io.write_json(tmp_path / "summary.json", {"statistics": {"sigma_mm_mean": float("nan")}})
    assert not (tmp_path / "summary.json").exists()


# -- (b) --overwrite never deletes what the user owns -----------------------------------------

def _overwrite_case(ws: Path, case: str) -> tuple[list[str], str]:
    """Set the case up in ``ws``; (argv, what the error line must say)."""
    if case == "the-inputs-folder":
        return estimate("--overwrite", out="."), "holds the input"
    if case == "an-ancestor-of-the-inputs":
        (ws / "deep" / "er").mkdir(parents=True)
        for name in ("S.nii.gz", "T.nii.gz"):
            shutil.move(ws / name, ws / "deep" / "er" / name)
        return estimate("--overwrite", source="deep/er/S.nii.gz", target="deep/er/T.nii.gz",
                        out="deep"), "holds the input"
    if case == "the-model-folder":
        (ws / "models").mkdir()
        shutil.move(ws / "m.onnx", ws / "models" / "m.onnx")
        return estimate("--overwrite", model="models/m.onnx", out="models"), "holds the input"
    if case == "a-previous-result-that-now-holds-the-source":
        (ws / "prev").mkdir()
        (ws / "prev" / "summary.json").write_text('{"regrisk": "estimate"}')
        shutil.move(ws / "S.nii.gz", ws / "prev" / "S.nii.gz")
        return estimate("--overwrite", source="prev/S.nii.gz", out="prev"), "holds the input"
    if case == "a-folder-regrisk-did-not-write":
        (ws / "mine").mkdir()
        (ws / "mine" / "thesis.tex").write_text("years of work")
        return estimate("--overwrite", out="mine"), "not a folder regrisk wrote"
    if case == "a-json-summary-without-the-marker":
        (ws / "other").mkdir()
        (ws / "other" / "summary.json").write_text('{"tool": "something else"}')
        return estimate("--overwrite", out="other"), "not a folder regrisk wrote"
    if case == "a-symlink-to-a-user-folder":
        (ws / "mine").mkdir()
        (ws / "mine" / "notes.txt").write_text("mine")
        (ws / "link").symlink_to("mine")
        return estimate("--overwrite", out="link"), "symbolic link"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "the-inputs-folder", "an-ancestor-of-the-inputs", "the-model-folder",
    "a-previous-result-that-now-holds-the-source", "a-folder-regrisk-did-not-write",
    "a-json-summary-without-the-marker", "a-symlink-to-a-user-folder"])
def test_overwrite_never_deletes_what_the_user_owns(ws, case):
    argv, match = _overwrite_case(ws, case)
    a = attempt(ws, argv)
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(match, a.line, re.IGNORECASE), a.line


def test_overwrite_replaces_a_previous_result_and_leaves_nothing_beside_it(ws):
    first = run_cli(ws, *estimate())
    assert first.rc == 0, first.err
    second = run_cli(ws, *estimate("--overwrite", seed="7"))
    assert second.rc == 0, second.err
    assert sorted(p.name for p in ws.iterdir()) == ["S.nii.gz", "T.nii.gz", "m.onnx", "out"]
    import json

    assert json.loads((ws / "out" / "summary.json").read_text())["seed"] == 7


# -- (c) bombs are refused before they are read -----------------------------------------------

def _header_only(path: Path, shape: tuple[int, ...], dtype: type) -> int:
    """A NIfTI header claiming ``shape`` with no voxel data; the claimed float32 bytes."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return int(np.prod(shape)) * 4


def _gzip_bomb(path: Path, shape: tuple[int, ...]) -> int:
    """A real, complete .nii.gz of zeros (uint8): small on disk, huge once decompressed."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    total = int(np.prod(shape))
    with open(path, "wb") as fh:
        fh.write(z.compress(hdr.binaryblock + b"\0" * 4))
        for start in range(0, total, len(chunk)):
            fh.write(z.compress(chunk[: min(len(chunk), total - start)]))
        fh.write(z.flush())
    return total * 4


def _sparse(path: Path, size: int, head: bytes = b"") -> None:
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)


def _external_data_model(ws: Path, size: int) -> None:
    """m.onnx with its weights as external data, the data file grown (sparse) to ``size``
    and the graph declaring all of it."""
    model = onnx.load(str(ws / "m.onnx"))
    onnx.save(model, str(ws / "big.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="big.data", size_threshold=0)
    _sparse(ws / "big.data", size, (ws / "big.data").read_bytes())
    model = onnx.load(str(ws / "big.onnx"), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.external_data)
    for entry in tensor.external_data:
        if entry.key == "length":
            entry.value = str(size)
    onnx.save(model, str(ws / "big.onnx"))


def _bomb_case(ws: Path, case: str) -> tuple[list[str], str, int]:
    """(argv, what the error line must say, bytes the bomb claims)."""
    if case == "352-byte-header-claiming-800^3":
        claim = _header_only(ws / "bomb.nii", (800, 800, 800), np.float32)
        return estimate(source="bomb.nii"), r"800x800x800 .*at most 268435456", claim
    if case == "gzipped-header-claiming-800^3":
        claim = _header_only(ws / "bomb.nii.gz", (800, 800, 800), np.float32)
        return estimate(target="bomb.nii.gz"), r"at most 268435456", claim
    if case == "gzip-bomb":
        claim = _gzip_bomb(ws / "bomb.nii.gz", (656, 640, 640))
        assert (ws / "bomb.nii.gz").stat().st_size < 2 << 20
        return estimate(source="bomb.nii.gz"), r"656x640x640 .*at most 268435456", claim
    if case == "image-over-the-memory-budget":
        claim = _header_only(ws / "big.nii.gz", (320, 320, 320), np.float32)
        return (estimate("--memory-budget", "64M", source="big.nii.gz"),
                r"over the memory budget of 0\.06 GiB", claim)
    if case == "3-GiB-model-file":
        _sparse(ws / "huge.onnx", 3 << 30, (ws / "m.onnx").read_bytes())
        return estimate(model="huge.onnx"), r"an ONNX file holds at most 2\.00 GiB", 3 << 30
    if case == "3-GiB-external-data":
        _external_data_model(ws, 3 << 30)
        return (estimate("--memory-budget", "1G", model="big.onnx"),
                r"external data take 3\.00 GiB, over the memory budget", 3 << 30)
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "352-byte-header-claiming-800^3", "gzipped-header-claiming-800^3", "gzip-bomb",
    "image-over-the-memory-budget", "3-GiB-model-file", "3-GiB-external-data"])
def test_bombs_are_refused_before_they_are_read(ws, case):
    argv, match, claim = _bomb_case(ws, case)
    a = attempt(ws, argv)
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(match, a.line, re.IGNORECASE), a.line
    run = a.run
    if claim >= 1 << 30:  # the child's floor is importing numpy, nibabel, onnx, ONNX Runtime
        assert run.peak_bytes < min(claim // 3, 600 << 20), (case, run.peak_bytes / 2**20)


# -- (d) every numeric parameter has a range, checked at parse time ---------------------------

@pytest.mark.parametrize("extra, match", [
    (["--samples", "1000000000"], r"--samples: must be an integer from 2 to 100000"),
    (["--samples", "1"], r"--samples"),
    (["--seed", "-1"], r"--seed: must be an integer from 0 to 9223372036854775807"),
    (["--seed", "9223372036854775808"], r"--seed"),
    (["--seed", "abc"], r"--seed: invalid int value"),
    (["--threads", "100000"], r"--threads: must be an integer from 1 to"),
    (["--threads", "0"], r"--threads"),
    (["--passes", "0"], r"--passes: must be an integer from 1 to 1000"),
    (["--batch", "100000"], r"--batch: must be an integer from 1 to 1024"),
    (["--memory-budget", "0"], r"--memory-budget: must be from 1M to 1024T"),
    (["--memory-budget", "lots"], r"--memory-budget"),
    (["--perturbation", "bspline(count=10000)"], r"bspline\.count must be an integer >= 4 and <= 64"),
    (["--perturbation", "bspline(spacing=1e-6)"], r"bspline\.spacing=1e-06 voxels is out of range"),
    (["--perturbation", "bspline(count=20)", "--sobol"], r"--sobol supports at most 21201"),
    (["--perturbation", "translation(max=1e39)"], r"translation\.max=1e\+39 voxels"),
    (["--perturbation", "translation(max=80%)"], r"translation\.max=80% is out of range: use 0% to 50%"),
    (["--perturbation", "scale(max=1e300)"], r"scale needs 0\.1 <= min <= max <= 10"),
    (["--perturbation", "rotation(max=1e9)"], r"rotation\.max=1e\+09 deg is out of range"),
    (["--perturbation", "shear(max=5)"], r"shear\.max=5 is out of range: use 0 to 0\.45"),
    (["--perturbation", "affine(shear=5)"], r"affine\.shear=5 is out of range: use 0 to 0\.45"),
    (["--perturbation", "scale(per_axis=maybe)"], r"scale\.per_axis"),
])
def test_every_numeric_parameter_has_a_range_checked_at_parse_time(ws, extra, match):
    argv = estimate()
    for i in range(0, len(extra) - 1, 2):  # an option given twice: argparse keeps the last
        if extra[i] in argv and extra[i] != "--sobol":
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
    a = attempt(ws, argv + [e for e in extra if e not in argv])
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(match, a.line, re.IGNORECASE), a.line


def test_the_api_checks_the_same_ranges(originals):
    from regrisk import Estimator, kernels, perturbations
    from regrisk.errors import InputError, ModelError

    with Estimator(str(originals / "m.onnx")) as est:
        for seed in ("abc", -1, 1.5, 2**63):
            with pytest.raises(InputError, match="seed must be an integer"):
                est.estimate(str(originals / "S.nii.gz"), str(originals / "T.nii.gz"),
                             samples=2, seed=seed)
        with pytest.raises(InputError, match="affine is not a 4x4 array of numbers"):
            est.estimate((np.ones(GRID), [["a"] * 4] * 4), str(originals / "T.nii.gz"), samples=2)
    with pytest.raises(ModelError, match="threads must be an integer"):
        Estimator(str(originals / "m.onnx"), threads=10**6)
    with pytest.raises(ValueError, match="n: expected an integer from 1 to 4096"):
        kernels.set_num_threads(2**40)
    for make in (lambda: perturbations.Shear(max=5), lambda: perturbations.BSpline(count=10_000),
                 lambda: perturbations.Translation(max=perturbations.Magnitude(1e39)),
                 lambda: perturbations.Rotation(max_deg="5")):
        with pytest.raises(perturbations.PerturbationError):
            make()


# -- (f) one error path: one sanitised line, whatever failed -----------------------------------

def _one_line_case(ws: Path, case: str) -> tuple[list[str], str, str]:
    """(argv, what the error line must say, prelude run in the child before regrisk)."""
    if case == "onnx-runtime-fails-during-the-run":
        failing_model(ws / "fails.onnx")
        return estimate(model="fails.onnx"), r"model fails\.onnx failed on the unperturbed pair", ""
    if case == "card-value-not-a-number":
        (ws / "m.card.json").write_text(
            '{"name": "c", "grid": [16, 18, 20], "preprocess": {"method": "percentile", '
            '"low": "abc", "high": 99}, "output": {"name": "flow"}}')
        return estimate(), r"model card: 'preprocess' must be 0 <= low < high <= 100", ""
    if case == "card-that-is-a-json-list":
        (ws / "m.card.json").write_text("[1, 2, 3]")
        return estimate(), r"model card: expected a JSON object", ""
    if case == "dangling-out":
        (ws / "gone").symlink_to("nowhere")
        return estimate(out="gone"), r"dangling symbolic link", ""
    if case == "out-under-a-file":
        return estimate(out="S.nii.gz/out"), r"parent folder .* does not exist", ""
    if case == "out-name-too-long":
        return estimate(out="x" * 300), r"longer than the file system allows", ""
    if case == "writing-fails":  # a real EFBIG from the kernel: files may not pass 20 kB
        prelude = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                   "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))")
        return estimate(), r"output out: writing failed \(File too large\)", prelude
    if case == "export-without-torch":
        return (["export", "voxelmorph", "--random-init", "--out", "v.onnx", "--grid", "8", "8",
                 "8"], r"needs the optional package torch", "sys.modules['torch'] = None")
    if case == "newline-and-escape-in-a-path":
        return (estimate(source="S\nregrisk estimate: done\x1b[2K.nii.gz"),
                r"source S\\nregrisk estimate: done\\x1b\[2K\.nii\.gz: no such file", "")
    if case == "nibabel-logs-while-reading":
        img = nib.load(str(ws / "S.nii.gz"))
        hdr = img.header.copy()
        raw = bytearray(hdr.binaryblock)
        raw[80:84] = np.float32(-1.5).tobytes()  # pixdim[1] < 0: nibabel logs a fix
        hdr = nib.Nifti1Header(bytes(raw), check=False)
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, hdr), str(ws / "neg.nii"))
        return estimate(source="neg.nii", target="missing.nii.gz"), r"target missing.*no such file", ""
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "onnx-runtime-fails-during-the-run", "card-value-not-a-number", "card-that-is-a-json-list",
    "dangling-out", "out-under-a-file", "out-name-too-long", "writing-fails",
    "export-without-torch", "newline-and-escape-in-a-path", "nibabel-logs-while-reading"])
def test_every_failure_is_one_sanitised_line(ws, case):
    argv, match, prelude = _one_line_case(ws, case)
    a = attempt(ws, argv, prelude)
    assert not a.breaches, (a.breaches, a.run.err)
    assert re.search(match, a.line, re.IGNORECASE), a.line


def test_a_legal_250_character_output_name_works(ws):
    name = "r" * 250
    run = run_cli(ws, *estimate(out=name))
    assert run.rc == 0, run.err
    assert sorted(p.name for p in ws.iterdir()) == ["S.nii.gz", "T.nii.gz", "m.onnx", name]


def test_printable_escapes_every_control_character():
    from regrisk.cli.console import printable

    assert printable("a\nb\rc\x1b[2K\u2028d\te") == "a\\nb\\rc\\x1b[2K\\u2028d\\te"
    assert printable("résumé ok") == "résumé ok"  # only controls are escaped



# -- (e) signals: SIGTERM and SIGHUP like Ctrl-C, promptly; renames race-safe -----------------

def _running_its_pipeline(pid: int, timeout: float = 120.0) -> None:
    """Wait until the command has ONNX Runtime loaded: its estimator exists, so its signal
    handlers are installed (the run asks for the onnxruntime backend by name)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if "onnxruntime" in Path(f"/proc/{pid}/maps").read_text():
                return
        except OSError:
            break
        time.sleep(0.2)
    raise AssertionError("the command never loaded ONNX Runtime")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_within_about_a_batch(ws, signum):
    """20000 samples would take minutes; the signal must end the run in seconds, with one
    line, 128 + the signal's number, and nothing written."""
    before = snapshot(ws)
    env = child_env()
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(prelude=""),
                              *estimate("--backend", "onnxruntime", samples="20000")],
                             cwd=ws, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _running_its_pipeline(child.pid)
    time.sleep(1.0)
    sent = time.monotonic()
    child.send_signal(signum)
    out, err = child.communicate(timeout=120)
    took = time.monotonic() - sent
    assert child.returncode == 128 + signum, (child.returncode, err)
    assert err.splitlines() == [f"regrisk estimate: interrupted by {signal.Signals(signum).name}; "
                                "no partial output was kept"], err
    assert took < 15, took
    assert snapshot(ws) == before  # no output folder, no temporary folder


# The two tests below signal their own process. They run it in a fresh interpreter: a process
# that earlier tests filled with native runtimes (Ray's driver sets up its own alternate signal
# stack) can fault on a signal sent to itself for reasons that are not regrisk's.
_SIGNAL_WHILE_SAVING = """import json, os, signal, sys, time
from pathlib import Path
from regrisk import io, signals
out = Path(sys.argv[1]) / "out"
with io.OutputFolder(out) as tmp:
    (tmp / "summary.json").write_text('{"regrisk": "estimate"}')
try:
    with signals.handled():
        with io.OutputFolder(out, overwrite=True) as tmp:
            (tmp / "half.nii.gz").write_bytes(b"\\x1f\\x8b")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler raises between two steps, as between batches
                time.sleep(0.01)
    print(json.dumps({"raised": None}))
except signals.Interrupted as stopped:
    print(json.dumps({"raised": stopped.signum}))
"""

_SIGNAL_IN_DEFERRED_STEP = """import json, os, signal, time
from regrisk import signals
finished, raised = [], None
try:
    with signals.handled():
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(20):
                time.sleep(0.01)
            finished.append(True)
except signals.Interrupted as stopped:
    raised = stopped.signum
print(json.dumps({"finished": finished, "raised": raised,
                  "restored": signal.getsignal(signal.SIGHUP) is signal.SIG_DFL}))
"""


def _python(code: str, *args: str) -> dict:
    import json

    env = child_env()
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_signal_while_saving_leaves_the_previous_result_and_no_temp_folder(tmp_path):
    result = _python(_SIGNAL_WHILE_SAVING, str(tmp_path))
    assert result == {"raised": signal.SIGTERM}
    # the previous result whole, the half-written one gone, no temporary folder beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json"]
    assert (tmp_path / "out" / "summary.json").read_text() == '{"regrisk": "estimate"}'


def test_a_signal_inside_a_deferred_step_is_raised_when_the_step_ends():
    result = _python(_SIGNAL_IN_DEFERRED_STEP)
    assert result == {"finished": [True], "raised": signal.SIGHUP, "restored": True}


_RACER = """import sys
from pathlib import Path
from regrisk import io
out, tag = Path(sys.argv[1]), sys.argv[2]
for i in range(40):
    with io.OutputFolder(out, overwrite=True) as tmp:
        (tmp / "payload.bin").write_bytes(bytes(4096))
        (tmp / "summary.json").write_text('{"regrisk": "race", "by": "%s", "i": %d}' % (tag, i))
"""


def test_two_overwrite_runs_racing_both_finish_and_strand_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"regrisk": "estimate"}')
    env = child_env()
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(out), tag], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for tag in ("a", "b")]
    for racer in racers:
        _, err = racer.communicate(timeout=300)
        assert racer.returncode == 0 and err == "", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.old-*, .out.tmp-*
    assert sorted(p.name for p in out.iterdir()) == ["payload.bin", "summary.json"]
    import json

    assert json.loads((out / "summary.json").read_text())["i"] == 39  # one racer's last result


# -- (f) third-party output stays off stderr ---------------------------------------------------

_NOISY = """import logging, os, sys, warnings
import onnxruntime as ort
from regrisk.cli.console import third_party_quiet
with third_party_quiet() as captured:
    os.write(2, b"native noise\\n")
    logging.getLogger("nibabel.global").warning("logged noise")
    warnings.warn("warned noise")
    ort.set_default_logger_severity(0)
    ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    print("ours", file=sys.stderr)
print(repr(captured.text))
"""


def test_third_party_output_is_captured_and_regrisk_s_own_stderr_is_not(originals):
    env = child_env()
    run = subprocess.run([sys.executable, "-c", _NOISY, str(originals / "m.onnx")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "ours\n"
    for noise in ("native noise", "logged noise", "warned noise", "onnxruntime"):
        assert noise in run.stdout, run.stdout


# -- (g) checkpoints never run pickled code ----------------------------------------------------

class _Payload:
    """Unpickling this creates a file: the stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_default_model_scripts_refuse_a_checkpoint_that_carries_code(tmp_path):
    torch = pytest.importorskip("torch")
    import pickle

    from exporters.default_model import evaluate as dm_evaluate
    from exporters.default_model import export as dm_export

    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "config": {}}, ckpt)
    with pytest.raises(pickle.UnpicklingError):
        dm_export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(pickle.UnpicklingError):
        dm_evaluate.ablation(ckpt, 1)
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()


def test_an_unwritable_output_parent_is_one_line(ws):
    (ws / "ro").mkdir()
    out, match = "ro/out", r"parent folder .* is not writable"
    if os.geteuid() == 0:  # root writes into mode-0555 folders; sysfs refuses new ones to root too
        out, match = "/sys/regrisk-unwritable-out", r"cannot create a folder beside it"
    (ws / "ro").chmod(0o555)
    try:
        a = attempt(ws, estimate(out=out))
        assert not a.breaches, (a.breaches, a.run.err)
        assert re.search(match, a.line, re.IGNORECASE), a.line
        assert not (ws / out).exists()
    finally:
        (ws / "ro").chmod(0o755)
