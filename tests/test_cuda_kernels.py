"""CUDA kernels (regrisk.kernels on CuPy arrays -> regrisk._cuda) against the CPU kernels
(regrisk.kernels on NumPy -> regrisk._core), which test_kernels.py checks against the NumPy
reference and SciPy. The GPU comparisons skip with the reason when this machine cannot run
CUDA; the build and import checks run everywhere."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from regrisk import device
from regrisk import kernels as K

READY, REASON = device.cuda_ready()
gpu = pytest.mark.skipif(not READY, reason=f"needs a CUDA GPU with CuPy and regrisk._cuda: {REASON}")

# Odd, non-cubic, degenerate grids (one-voxel axes), as in test_kernels.py.
SHAPES = [(1, 1, 1), (5, 6, 7), (2, 9, 4), (8, 3, 1), (17, 13, 11)]
MODES = ["fill", "border"]
TOL = dict(atol=1e-5, rtol=1e-5)  # rtol for fields whose values reach tens of voxels

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
    # The bindings take raw pointers, shapes, the device and the stream (no arrays).
    doc = cu.warp_displacement.__doc__
    for arg in ("volume", "disp", "out", "fill", "border", "device", "stream"):
        assert arg in doc


@pytest.mark.skipif(importlib.util.find_spec("regrisk._cuda") is None or device.gpu_present(),
                    reason="needs regrisk._cuda built and no GPU on this machine")
def test_cuda_module_without_gpu_raises_a_clear_error():
    import regrisk._cuda as cu

    with pytest.raises(RuntimeError, match=r"regrisk\._cuda: cannot use CUDA device 0"):
        cu.welford_sigma(3, 0, [1.0] * 9, 0, 10, 0, 0)


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


# --- on a GPU: every kernel equals the CPU kernel ------------------------------------------


def _cp():
    import cupy

    return cupy


def _vol(rng, shape, lead=()):
    return rng.uniform(-1, 2, tuple(lead) + tuple(shape)).astype(np.float32)


def _field(rng, shape, scale, batch=None):
    lead = () if batch is None else (batch,)
    return (rng.standard_normal(lead + (3,) + tuple(shape)) * scale).astype(np.float32)


def _affine(rng, batch, jitter=0.2, shift=3.0):
    a = np.broadcast_to(np.eye(3, 4), (batch, 3, 4)).copy()
    a[..., :3] += rng.uniform(-jitter, jitter, (batch, 3, 3))
    a[..., 3] += rng.uniform(-shift, shift, (batch, 3))
    return a.astype(np.float32)


def check_same(gpu_out, cpu_out, **tol):
    cp = _cp()
    assert isinstance(gpu_out, cp.ndarray) and gpu_out.dtype == np.float32
    assert gpu_out.shape == cpu_out.shape
    np.testing.assert_allclose(cp.asnumpy(gpu_out), cpu_out, **(tol or TOL))


@gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [0.7, 25.0])  # inside, and far enough to leave the volume
def test_warp_displacement(rng, shape, mode, scale):
    cp = _cp()
    vol = _vol(rng, shape, (2,))
    out_shape = (shape[0] + 1, shape[1], max(1, shape[2] - 1))  # output grid != input grid
    disp = _field(rng, out_shape, scale, batch=3)
    want = K.warp(vol, disp, mode=mode, fill=-0.5)
    check_same(K.warp(cp.asarray(vol), cp.asarray(disp), mode=mode, fill=-0.5), want)
    # One volume per batch item (Bv == B).
    vols = _vol(rng, shape, (3, 2))
    check_same(K.warp(cp.asarray(vols), cp.asarray(disp), mode=mode), K.warp(vols, disp, mode=mode))


@gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_warp_affine(rng, shape, mode):
    cp = _cp()
    vol = _vol(rng, shape, (1,))
    aff = _affine(rng, 4, shift=max(shape))  # shifts push many points outside
    out_shape = (shape[2] + 2, shape[0], shape[1])
    want = K.warp(vol, affine=aff, shape=out_shape, mode=mode, fill=0.25)
    check_same(K.warp(cp.asarray(vol), affine=cp.asarray(aff), shape=out_shape, mode=mode, fill=0.25), want)
    # A NumPy affine with a CuPy volume (small parameter arrays may live on the host).
    check_same(K.warp(cp.asarray(vol), affine=aff, shape=out_shape, mode=mode, fill=0.25), want)


@gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_compose_affine(rng, shape):
    cp = _cp()
    disp = _field(rng, shape, 3.0, batch=3)
    for aff in (_affine(rng, 3), _affine(rng, 1)):  # Ba == B and Ba == 1
        want = K.compose(disp, affine=aff)
        check_same(K.compose(cp.asarray(disp), affine=cp.asarray(aff)), want)


@gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_compose_field(rng, shape, mode):
    cp = _cp()
    disp = _field(rng, shape, 4.0, batch=2)  # large enough to sample outside the field
    fshape = (shape[0] + 2, max(1, shape[1] - 1), shape[2] + 3)
    for field in (_field(rng, fshape, 2.0, batch=2), _field(rng, fshape, 2.0, batch=1)):
        want = K.compose(disp, field=field, mode=mode, fill=0.5)
        check_same(K.compose(cp.asarray(disp), field=cp.asarray(field), mode=mode, fill=0.5), want)


@gpu
@pytest.mark.parametrize("shape,ctrl", [((1, 1, 1), (4, 4, 4)), ((9, 10, 11), (4, 5, 6)),
                                        ((33, 17, 8), (7, 4, 9)), ((40, 48, 56), (10, 10, 10)),
                                        ((3, 4, 300), (4, 4, 260))])  # last: per-voxel fallback
def test_bspline_field(rng, shape, ctrl):
    cp = _cp()
    control = (rng.uniform(-12.5, 12.5, (3, 3) + ctrl)).astype(np.float32)
    want = K.bspline_field(control, shape)
    check_same(K.bspline_field(cp.asarray(control), shape), want)


@gpu
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 6, 7), (17, 13, 11)])
def test_welford_update_merge_sigma(rng, shape):
    cp = _cp()
    M = np.array([[0.9, 0.1, 0.0], [0.0, 1.2, -0.2], [0.05, 0.0, 2.0]], np.float32)
    cpu_a, gpu_a = K.Welford(shape), K.Welford(shape, like=cp.zeros(1, np.float32))
    cpu_b, gpu_b = K.Welford(shape), K.Welford(shape, like=cp.zeros(1, np.float32))
    # Offset samples with a small spread: the case float32 accumulation would get wrong.
    for acc_cpu, acc_gpu, sizes in ((cpu_a, gpu_a, (3, 1, 4)), (cpu_b, gpu_b, (5,))):
        for b in sizes:
            batch = (100.0 + rng.standard_normal((b, 3) + shape) * 0.01).astype(np.float32)
            acc_cpu.update(batch)
            acc_gpu.update(cp.asarray(batch))
    for acc_cpu, acc_gpu in ((cpu_a, gpu_a), (cpu_b, gpu_b)):
        assert acc_gpu.count == acc_cpu.count
        check_same(acc_gpu.mean, acc_cpu.mean)
        check_same(acc_gpu.covariance, acc_cpu.covariance, atol=1e-9, rtol=1e-4)
    cpu_a.merge(cpu_b)
    gpu_a.merge(gpu_b)
    assert gpu_a.count == 13
    check_same(gpu_a.mean, cpu_a.mean)
    check_same(gpu_a.covariance, cpu_a.covariance, atol=1e-9, rtol=1e-4)
    check_same(gpu_a.sigma(M), cpu_a.sigma(M), atol=1e-7, rtol=1e-5)
    check_same(gpu_a.axis_sigma(M), cpu_a.axis_sigma(M), atol=1e-7, rtol=1e-5)
    check_same(gpu_a.sigma(cp.asarray(M)), cpu_a.sigma(M), atol=1e-7, rtol=1e-5)


@gpu
def test_kernels_run_on_the_current_stream_without_copies(rng):
    # Inputs produced on a non-default stream and consumed at once on that stream: correct only
    # if the kernel is enqueued on CuPy's current stream (no host sync in between).
    cp = _cp()
    shape = (64, 48, 40)
    vol = _vol(rng, shape)
    disp = _field(rng, shape, 2.0, batch=4)
    want = K.warp(vol, disp)
    with cp.cuda.Stream(non_blocking=True) as s:
        v = cp.asarray(vol) * 1.0  # queued on s
        d = cp.asarray(disp) + 0.0
        out = K.warp(v, d)
        total = float(out.sum())  # the result read back through s
        s.synchronize()
    np.testing.assert_allclose(total, float(want.astype(np.float64).sum()), rtol=1e-5)
    check_same(out, want)


@gpu
def test_cuda_ops_signatures_match_contract():
    from regrisk import _cuda_ops

    for name, args in CONTRACT.items():
        assert list(inspect.signature(getattr(_cuda_ops, name)).parameters) == args


# --- everywhere with a C++ compiler: the CUDA sources under host emulation ------------------
#
# The *CUDA.cu files compiled as C++ with the few CUDA features they use emulated on the host
# (each block's threads as host threads with a real barrier for __syncthreads and shared
# statics for __shared__; a deliberately small grid, so the grid-stride loops over voxels, rows
# and batch run too), against the CPU kernels on random inputs. This checks indexing,
# broadcasting, template dispatch and arithmetic order of the real kernel source without a GPU;
# nvcc's code generation and the launch itself still need the GPU run (tests above).

_EMU_SHIM = r"""
// Host emulation of the few CUDA features the kernels use (verification only): every block
// runs its threads as real host threads, so __syncthreads() is a barrier and __shared__ arrays
// (function statics) are shared by the block's threads; blocks run one after another.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
using std::sqrt;
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 blockIdx, threadIdx;
inline dim3 gridDim, blockDim;
inline std::barrier<>* emu_block_barrier = nullptr;
#define __syncthreads() emu_block_barrier->arrive_and_wait()
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr int cudaSuccess = 0;
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return 0; }
inline cudaError_t cudaSetDevice(int) { return 0; }
inline cudaError_t cudaGetLastError() { return 0; }
inline const char* cudaGetErrorString(cudaError_t) { return "emu"; }
extern long emu_threads;
template <class K, class... A>
void emu_launch(dim3 g, int threads, K k, A... a) {
  // A deliberately small grid: the kernels' grid-stride loops over voxels, rows and batch run.
  gridDim = dim3(g.x > 3 ? 3 : g.x, g.y > 2 ? 2 : g.y);
  blockDim = dim3(threads);
  for (unsigned by = 0; by < gridDim.y; ++by)
    for (unsigned bx = 0; bx < gridDim.x; ++bx) {
      std::barrier<> bar(threads);
      emu_block_barrier = &bar;
      std::vector<std::thread> pool;
      for (int tx = 0; tx < threads; ++tx)
        pool.emplace_back([=] { blockIdx = dim3(bx, by); threadIdx = dim3(tx); k(a...); });
      for (auto& t : pool) t.join();
      emu_threads += threads;
    }
}
"""

_EMU_MAIN = r"""
#include <cstdio>
#include <random>
#include <vector>
#include <algorithm>
#include "warp/warp.h"
#include "warp/warpCUDA.h"
#include "compose/compose.h"
#include "compose/composeCUDA.h"
#include "bspline/bspline.h"
#include "bspline/bsplineCUDA.h"
#include "welford/welford.h"
#include "welford/welfordCUDA.h"
long emu_threads = 0;
using namespace regrisk;
std::mt19937 gen(42);
std::vector<float> rnd(size_t n, float lo, float hi) { std::uniform_real_distribution<float> d(lo, hi); std::vector<float> v(n); for (auto& x : v) x = d(gen); return v; }
double maxdiff(const std::vector<float>& a, const std::vector<float>& b) { double m = 0; for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i])); return m; }
int fails = 0;
void report(const char* what, double d, double tol = 1e-5) { printf("%-40s max|diff| = %.3g %s\n", what, d, d <= tol ? "ok" : "FAIL"); if (!(d <= tol)) ++fails; }
int main() {
  struct S { int64_t D, H, W; } shapes[] = {{1,1,1},{5,6,7},{2,9,4},{8,3,1},{17,13,11}};
  for (auto s : shapes) for (int border = 0; border < 2; ++border) for (int bvb = 0; bvb < 2; ++bvb) {
    int64_t C = 2, B = 3, Bv = bvb ? B : 1; Grid3 in{s.D, s.H, s.W}; Grid3 og{s.D + 1, s.H, std::max<int64_t>(1, s.W - 1)};
    auto vol = rnd(Bv * C * in.size(), -1, 2); auto disp = rnd(B * 3 * og.size(), -20, 20);
    std::vector<float> a(B * C * og.size()), b(a.size(), -999);
    cpu::warp_displacement(vol.data(), Bv, C, in, disp.data(), B, og, a.data(), -0.5f, border ? Boundary::Border : Boundary::Fill, 1);
    cuda::warp_displacement(vol.data(), Bv, C, in.d, in.h, in.w, disp.data(), B, og.d, og.h, og.w, b.data(), -0.5f, border, 0, 0);
    char buf[128]; snprintf(buf, 128, "warp_disp %ldx%ldx%ld b%d bv%ld", s.D, s.H, s.W, border, Bv); report(buf, maxdiff(a, b));
    auto aff = rnd(B * 12, -0.3, 0.3); for (int k = 0; k < B; ++k) { aff[k*12+0] += 1; aff[k*12+5] += 1; aff[k*12+10] += 1; aff[k*12+3] *= 30; aff[k*12+7] *= 30; aff[k*12+11] *= 30; }
    std::fill(b.begin(), b.end(), -999);
    cpu::warp_affine(vol.data(), Bv, C, in, aff.data(), B, og, a.data(), 0.25f, border ? Boundary::Border : Boundary::Fill, 1);
    cuda::warp_affine(vol.data(), Bv, C, in.d, in.h, in.w, aff.data(), B, og.d, og.h, og.w, b.data(), 0.25f, border, 0, 0);
    snprintf(buf, 128, "warp_affine %ldx%ldx%ld b%d bv%ld", s.D, s.H, s.W, border, Bv); report(buf, maxdiff(a, b));
    // compose: disp on grid `in`, field on og
    auto u = rnd(B * 3 * in.size(), -5, 5); auto fld = rnd(Bv * 3 * og.size(), -3, 3);
    std::vector<float> ca(B * 3 * in.size()), cb(ca.size(), -999);
    cpu::compose_field(u.data(), B, in, fld.data(), Bv, og, ca.data(), 0.5f, border ? Boundary::Border : Boundary::Fill, 1);
    cuda::compose_field(u.data(), B, in.d, in.h, in.w, fld.data(), Bv, og.d, og.h, og.w, cb.data(), 0.5f, border, 0, 0);
    snprintf(buf, 128, "compose_field %ldx%ldx%ld b%d bf%ld", s.D, s.H, s.W, border, Bv); report(buf, maxdiff(ca, cb));
    std::fill(cb.begin(), cb.end(), -999);
    int64_t Ba = bvb ? B : 1;
    cpu::compose_affine(u.data(), B, in, aff.data(), Ba, ca.data(), 1);
    cuda::compose_affine(u.data(), B, in.d, in.h, in.w, aff.data(), Ba, cb.data(), 0, 0);
    snprintf(buf, 128, "compose_affine %ldx%ldx%ld ba%ld", s.D, s.H, s.W, Ba); report(buf, maxdiff(ca, cb));
  }
  struct BS { Grid3 g, c; } bs[] = {{{1,1,1},{4,4,4}}, {{9,10,11},{4,5,6}}, {{33,17,8},{7,4,9}}, {{20,24,28},{10,10,10}}, {{3,4,300},{4,4,260}}};
  for (auto t : bs) {
    int64_t B = 2; auto ctrl = rnd(B * 3 * t.c.size(), -12.5, 12.5);
    std::vector<float> a(B * 3 * t.g.size()), b(a.size(), -999);
    cpu::bspline_field(ctrl.data(), B, t.c, a.data(), t.g, 1);
    cuda::bspline_field(ctrl.data(), B, t.c.d, t.c.h, t.c.w, b.data(), t.g.d, t.g.h, t.g.w, 0, 0);
    char buf[128]; snprintf(buf, 128, "bspline %ldx%ldx%ld ctrl %ld", t.g.d, t.g.h, t.g.w, t.c.d); report(buf, maxdiff(a, b));
  }
  for (int64_t N : {1, 7, 1000}) {
    std::vector<float> m1(3 * N, 0), q1(6 * N, 0), m2v(3 * N, 0), q2(6 * N, 0);
    std::vector<float> mb1(3 * N, 0), qb1(6 * N, 0), mb2(3 * N, 0), qb2(6 * N, 0);
    int64_t count = 0;
    for (int64_t B : {3, 1, 4}) { auto x = rnd(B * 3 * N, 99.99, 100.01);
      cpu::welford_update(count, m1.data(), q1.data(), N, x.data(), B, 1);
      cuda::welford_update(count, m2v.data(), q2.data(), x.data(), B, N, 0, 0); count += B; }
    auto y = rnd(5 * 3 * N, -1, 1);
    cpu::welford_update(0, mb1.data(), qb1.data(), N, y.data(), 5, 1);
    cuda::welford_update(0, mb2.data(), qb2.data(), y.data(), 5, N, 0, 0);
    char buf[128]; snprintf(buf, 128, "welford_update N=%ld mean", N); report(buf, maxdiff(m1, m2v));
    snprintf(buf, 128, "welford_update N=%ld m2", N); report(buf, maxdiff(q1, q2), 1e-9);
    cpu::welford_merge(count, m1.data(), q1.data(), 5, mb1.data(), qb1.data(), N, 1);
    cuda::welford_merge(count, m2v.data(), q2.data(), 5, mb2.data(), qb2.data(), N, 0, 0);
    snprintf(buf, 128, "welford_merge N=%ld mean", N); report(buf, maxdiff(m1, m2v));
    snprintf(buf, 128, "welford_merge N=%ld m2", N); report(buf, maxdiff(q1, q2));
    float M[9] = {0.9f, 0.1f, 0, 0, 1.2f, -0.2f, 0.05f, 0, 2.0f};
    std::vector<float> s1(N), s2(N, -1), a1(3 * N), a2(3 * N, -1);
    cpu::welford_sigma(count + 5, q1.data(), N, M, s1.data(), 1);
    cuda::welford_sigma(count + 5, q2.data(), M, s2.data(), N, 0, 0);
    cpu::welford_axis_sigma(count + 5, q1.data(), N, M, a1.data(), 1);
    cuda::welford_axis_sigma(count + 5, q2.data(), M, a2.data(), N, 0, 0);
    snprintf(buf, 128, "welford_sigma N=%ld", N); report(buf, maxdiff(s1, s2));
    snprintf(buf, 128, "welford_axis_sigma N=%ld", N); report(buf, maxdiff(a1, a2));
  }
  printf("emulated threads: %ld; failures: %d\n", emu_threads, fails);
  return fails != 0;
}
"""

_CUDA_SOURCES = ["warp/warpCUDA.cu", "compose/composeCUDA.cu", "bspline/bsplineCUDA.cu",
                 "welford/welfordCUDA.cu"]


def _csrc() -> Path:
    root = Path(__file__).resolve().parents[1] / "csrc"
    return root


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for the host emulation")
@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "csrc" / "warp" / "warpCUDA.cu").is_file(),
                    reason="csrc/ not next to tests/ (installed package without sources)")
def test_cuda_kernel_sources_match_cpu_kernels_in_host_emulation(tmp_path):
    import re

    csrc = _csrc()
    (tmp_path / "cuda_emu.h").write_text(_EMU_SHIM)
    (tmp_path / "main.cpp").write_text(_EMU_MAIN)
    launch = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)\s*<<<(.*?),\s*(\w+),\s*0,\s*(.*?)>>>\(", re.S)
    sources = []
    for rel in _CUDA_SOURCES:
        text = (csrc / rel).read_text().replace("#include <cuda_runtime.h>", '#include "cuda_emu.h"')
        text, n = launch.subn(r"emu_launch(\2, \3, \1, ", text)
        assert n >= 1, f"no kernel launch found in {rel}"
        out = tmp_path / (Path(rel).stem + "_emu.cpp")
        out.write_text(text)
        sources.append(str(out))
    cpu = [str(csrc / op / f"{op}.cpp") for op in ("warp", "compose", "bspline", "welford")]
    exe = tmp_path / "emu"
    build = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", f"-I{tmp_path}", f"-I{csrc}", str(tmp_path / "main.cpp"),
                            *sources, *cpu, "-o", str(exe)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "failures: 0" in run.stdout and run.stdout.count(" ok") >= 100, run.stdout[-2000:]
