"""The CUDA path beyond the kernel suite: build, import, contract, streams, and the CUDA sources
under host emulation against the CPU kernels. The kernels' results on CuPy arrays are checked in
test_kernels.py (the `xp` parameter). GPU tests skip with the reason when this machine cannot
run CUDA; the build, import and emulation checks run everywhere."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_builders import FakeCudaArray
from regrisk import device
from regrisk import kernels as K

READY, REASON = device.cuda_ready()
gpu = pytest.mark.skipif(not READY, reason=f"needs a CUDA GPU with CuPy and regrisk._cuda: {REASON}")

TOL = dict(atol=1e-5, rtol=1e-5)  # GPU against CPU kernels, as in test_kernels.py

# The internal API regrisk.kernels calls for CuPy arrays (names and argument order).
CONTRACT = {
    "warp_displacement": ["volume", "disp", "out", "fill", "border"],
    "warp_affine": ["volume", "affine", "out", "fill", "border"],
    "compose_affine": ["disp", "affine", "out"],
    "compose_field": ["disp", "field", "out", "fill", "border"],
    "bspline_field": ["control", "out"],
    "welford_update": ["count_before", "mean", "m2", "batch"],
    "welford_merge": ["n_a", "mean_a", "m2_a", "n_b", "mean_b", "m2_b"],
    "welford_sigma": ["count", "m2", "M", "out"],
    "welford_axis_sigma": ["count", "m2", "M", "out"],
}


# --- everywhere: build, import and contract -------------------------------------------------


@pytest.mark.skipif(os.environ.get("REGRISK_REQUIRE_GPU") != "1",
                    reason="REGRISK_REQUIRE_GPU=1 not set (benchmarks/gpu_suite.sh sets it)")
def test_gpu_is_usable_when_required():
    # On the GPU machine a skipped GPU test would hide a broken install: fail instead.
    assert READY, f"REGRISK_REQUIRE_GPU=1 but the CUDA path cannot run: {REASON}"


def test_import_needs_neither_gpu_nor_cupy():
    # A child process where `import cupy` fails, as on a machine without CuPy.
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy as np, regrisk, regrisk.kernels as K, regrisk.device as d\n"
        "r = d.device_report()\n"
        "assert r['cuda_ready'] is False and r['cupy']['usable'] is False, r\n"
        "assert K.warp(np.ones((2, 2, 2), np.float32), affine=np.eye(3, 4)).sum() == 8\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_cuda_ops_exposes_the_kernels_contract():
    # Parsed, not imported: the module needs CuPy, the contract must hold without it too.
    spec = importlib.util.find_spec("regrisk._cuda_ops")
    tree = ast.parse(Path(spec.origin).read_text())
    found = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name, args in CONTRACT.items():
        assert found.get(name) == args, f"_cuda_ops.{name}{tuple(found.get(name, ()))} != {tuple(args)}"


@pytest.mark.skipif(importlib.util.find_spec("regrisk._cuda") is None,
                    reason="regrisk._cuda not built (no CUDA compiler when regrisk was installed)")
def test_cuda_module_binds_every_kernel():
    import regrisk._cuda as cu

    for name in CONTRACT:
        assert callable(getattr(cu, name)), name
    # The bindings take the arrays, the scalars, and where to launch: the device and the stream.
    doc = cu.warp_displacement.__doc__
    for arg in ("volume", "disp", "out", "fill", "border", "device", "stream"):
        assert arg in doc


@pytest.mark.skipif(importlib.util.find_spec("regrisk._cuda") is None or device.gpu_present(),
                    reason="needs regrisk._cuda built and no GPU on this machine")
def test_cuda_module_without_gpu_raises_a_clear_error():
    import regrisk._cuda as cu

    m2, out = FakeCudaArray((6, 10)), FakeCudaArray((10,))
    with pytest.raises(RuntimeError, match=r"regrisk\._cuda: cannot use CUDA device 0"):
        cu.welford_sigma(3, m2, np.eye(3, dtype=np.float32), out, (0, 0))


def test_device_report_is_consistent():
    import json

    r = device.device_report()
    json.dumps(r)  # serialisable for `regrisk info --json`
    assert r["cuda_ready"] == READY
    assert (r["cuda_reason"] is None) == READY
    assert r["cuda_kernels_built"] == (importlib.util.find_spec("regrisk._cuda") is not None)
    ort = r["onnxruntime"]
    if ort["installed"]:
        import onnxruntime

        assert ort["providers"] == onnxruntime.get_available_providers()
    for name, why in r["cuda_backends"].items():
        assert why is None or (isinstance(why, str) and why), name
        if not READY:
            assert why is not None, f"{name} claims to run without a usable GPU"


# --- on a GPU ------------------------------------------------------------------------------
#
# Every kernel against the NumPy reference and the CPU kernels, on CuPy arrays: test_kernels.py
# (its `xp` parameter). Here: what only the CUDA path has.


def _cp():
    import cupy

    return cupy


@gpu
def test_kernels_run_on_the_current_stream_without_copies(rng):
    # Inputs produced on a non-default stream and consumed at once on that stream: correct only
    # if the kernel is enqueued on CuPy's current stream (no host sync in between).
    cp = _cp()
    shape = (64, 48, 40)
    vol = rng.uniform(-1, 2, shape).astype(np.float32)
    disp = (rng.standard_normal((4, 3) + shape) * 2.0).astype(np.float32)
    want = K.warp(vol, disp)
    with cp.cuda.Stream(non_blocking=True) as s:
        v = cp.asarray(vol) * 1.0  # queued on s
        d = cp.asarray(disp) + 0.0
        out = K.warp(v, d)
        total = float(out.sum())  # the result read back through s
        s.synchronize()
    np.testing.assert_allclose(total, float(want.astype(np.float64).sum()), rtol=1e-5)
    assert isinstance(out, cp.ndarray) and out.dtype == np.float32 and out.shape == want.shape
    np.testing.assert_allclose(cp.asnumpy(out), want, **TOL)


@gpu
def test_cuda_ops_signatures_match_contract():
    from regrisk import _cuda_ops

    for name, args in CONTRACT.items():
        assert list(inspect.signature(getattr(_cuda_ops, name)).parameters) == args


# --- everywhere with a C++ compiler: the CUDA sources under host emulation ------------------
#
# The CUDA sources compiled as C++ with the few CUDA features they use emulated on the host
# (tests/native/cuda_emu.h: each block's threads as host threads with a real barrier for
# __syncthreads and shared statics for __shared__; a deliberately small grid, so the grid-stride
# loops over voxels, rows and batch run too), against the CPU kernels on random inputs
# (tests/native/emulated_vs_cpu.cpp). This checks indexing, broadcasting, template dispatch and
# arithmetic order of the real kernel source without a GPU; nvcc's code generation and the
# launch itself still need the GPU run (test_kernels.py on CuPy).

_ROOT = Path(__file__).resolve().parents[1]
_NATIVE = Path(__file__).resolve().parent / "native"
# kernel<<<grid, threads, 0, stream>>>(args) on one line -> emu_launch(grid, threads, kernel, args)
_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;\n]*>)?)\s*<<<([^\n]*?),\s*(\w+),\s*0,\s*([^\n]*?)>>>\(")


def _emulated_sources(tmp: Path) -> Path:
    """A copy of csrc/ whose CUDA files include cuda_emu.h and launch through emu_launch."""
    tree = tmp / "csrc"
    shutil.copytree(_ROOT / "csrc", tree)
    launches = 0
    for path in [*tree.rglob("*.cu"), *tree.rglob("*.cuh")]:
        text = path.read_text().replace("#include <cuda_runtime.h>", '#include "cuda_emu.h"')
        text, n = _LAUNCH.subn(r"emu_launch(\2, \3, \1, ", text)
        assert "<<<" not in text, f"a kernel launch the emulation cannot rewrite in {path.name}"
        launches += n
        path.write_text(text)
    assert launches >= 1, "no kernel launch found in csrc/"
    return tree


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for the host emulation")
@pytest.mark.skipif(not (_ROOT / "csrc" / "common" / "launch.cuh").is_file(),
                    reason="csrc/ not next to tests/ (installed package without sources)")
def test_cuda_kernel_sources_match_cpu_kernels_in_host_emulation(tmp_path):
    tree = _emulated_sources(tmp_path)
    cuda = sorted(str(p) for p in tree.glob("*/*CUDA.cu"))
    cpu = sorted(str(p) for p in tree.glob("*/*.cpp") if p.parent.name != "bindings")
    exe = tmp_path / "emu"
    build = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", f"-I{tree}", f"-I{_NATIVE}",
                            "-x", "c++", str(_NATIVE / "emulated_vs_cpu.cpp"), *cuda, *cpu,
                            "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "failures: 0" in run.stdout and run.stdout.count(" ok") >= 100, run.stdout[-2000:]
