"""Bad arguments to the kernels: a one-line ValueError naming the argument, never a crash.

Covers the Python face (regrisk.kernels) and the native layers under it: regrisk._core and
regrisk._cuda run the same checks (csrc/<op>/checks.h) before any kernel, so that even a direct
call cannot corrupt memory or launch on bad shapes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kernel_builders import FakeCudaArray
from regrisk import _core
from regrisk import kernels as K

S = (4, 5, 6)
F32 = np.float32


def vol(*lead):
    return np.zeros(lead + S, F32)


def field(*lead, shape=S):
    return np.zeros(lead + (3,) + shape, F32)


def noncontig_field():
    return np.zeros((3,) + S[:2] + (2 * S[2],), F32)[..., ::2]


NAN_AFFINE = np.eye(3, 4, dtype=F32)
NAN_AFFINE[1, 2] = np.nan

CASES = {
    # warp
    "warp volume ndim": (lambda: K.warp(np.zeros((4, 5), F32), field()), "volume"),
    "warp volume ndim 6": (lambda: K.warp(np.zeros((1,) * 6, F32), field()), "volume"),
    "warp volume float64": (lambda: K.warp(vol().astype(np.float64), field()), "volume"),
    "warp volume list": (lambda: K.warp([[[1.0]]], field()), "volume"),
    "warp volume noncontig": (lambda: K.warp(np.zeros((8, 5, 6), F32)[::2], field()), "volume"),
    "warp displacement float64": (lambda: K.warp(vol(), field().astype(np.float64)), "displacement"),
    "warp displacement ndim": (lambda: K.warp(vol(), np.zeros((3, 4, 5), F32)), "displacement"),
    "warp displacement channels": (lambda: K.warp(vol(), np.zeros((2,) + S, F32)), "displacement"),
    "warp displacement noncontig": (lambda: K.warp(vol(), noncontig_field()), "displacement"),
    "warp displacement empty": (lambda: K.warp(vol(), field(shape=(0, 2, 2))), "displacement"),
    "warp batch mismatch": (lambda: K.warp(vol(2, 1), field(3)), "volume"),
    "warp affine NaN": (lambda: K.warp(vol(), affine=NAN_AFFINE), "affine"),
    "warp affine inf": (lambda: K.warp(vol(), affine=np.full((3, 4), np.inf)), "affine"),
    "warp affine shape": (lambda: K.warp(vol(), affine=np.eye(4)), "affine"),
    "warp affine ragged": (lambda: K.warp(vol(), affine=[[1, 0], [0]]), "affine"),
    "warp affine batch mismatch": (lambda: K.warp(vol(2, 1), affine=np.zeros((3, 3, 4))), "volume"),
    "warp both transforms": (lambda: K.warp(vol(), field(), affine=np.eye(3, 4)), "displacement/affine"),
    "warp no transform": (lambda: K.warp(vol()), "displacement/affine"),
    "warp mode": (lambda: K.warp(vol(), field(), mode="wrap"), "mode"),
    "warp fill NaN": (lambda: K.warp(vol(), field(), fill=float("nan")), "fill"),
    "warp fill str": (lambda: K.warp(vol(), field(), fill="0"), "fill"),
    "warp shape": (lambda: K.warp(vol(), affine=np.eye(3, 4), shape=(4, 5)), "shape"),
    "warp shape zero": (lambda: K.warp(vol(), affine=np.eye(3, 4), shape=(4, 0, 2)), "shape"),
    "warp shape vs displacement": (lambda: K.warp(vol(), field(), shape=(2, 2, 2)), "shape"),
    # compose
    "compose displacement float64": (lambda: K.compose(field().astype(np.float64), affine=np.eye(3, 4)), "displacement"),
    "compose displacement ndim": (lambda: K.compose(np.zeros(S, F32), affine=np.eye(3, 4)), "displacement"),
    "compose displacement noncontig": (lambda: K.compose(noncontig_field(), affine=np.eye(3, 4)), "displacement"),
    "compose affine NaN": (lambda: K.compose(field(), affine=NAN_AFFINE), "affine"),
    "compose affine batch": (lambda: K.compose(field(2), affine=np.zeros((3, 3, 4))), "affine"),
    "compose field batch": (lambda: K.compose(field(2), field=field(3)), "field"),
    "compose field float64": (lambda: K.compose(field(), field=field().astype(np.float64)), "field"),
    "compose field channels": (lambda: K.compose(field(), field=np.zeros((1, 2) + S, F32)), "field"),
    "compose neither": (lambda: K.compose(field()), "affine/field"),
    "compose mode": (lambda: K.compose(field(), field=field(), mode="reflect"), "mode"),
    # bspline
    "bspline control float64": (lambda: K.bspline_field(field(shape=(4, 4, 4)).astype(np.float64), S), "control"),
    "bspline control too coarse": (lambda: K.bspline_field(field(shape=(3, 4, 4)), S), "control"),
    "bspline control ndim": (lambda: K.bspline_field(np.zeros((4, 4, 4), F32), S), "control"),
    "bspline shape": (lambda: K.bspline_field(field(shape=(4, 4, 4)), (4, 5)), "shape"),
    "bspline shape float": (lambda: K.bspline_field(field(shape=(4, 4, 4)), (4, 5, 6.5)), "shape"),
    # Welford
    "welford shape": (lambda: K.Welford((4, 5)), "shape"),
    "welford batch float64": (lambda: K.Welford(S).update(field(2).astype(np.float64)), "batch"),
    "welford batch grid": (lambda: K.Welford(S).update(field(2, shape=(4, 5, 7))), "batch"),
    "welford batch channels": (lambda: K.Welford(S).update(np.zeros((2, 2) + S, F32)), "batch"),
    "welford batch noncontig": (lambda: K.Welford(S).update(noncontig_field()), "batch"),
    "welford merge grid": (lambda: K.Welford(S).merge(K.Welford((1, 2, 3))), "other"),
    "welford merge type": (lambda: K.Welford(S).merge(3), "other"),
    "welford M NaN": (lambda: K.Welford(S).update(field(2)).sigma(np.full((3, 3), np.nan)), "M"),
    "welford M shape": (lambda: K.Welford(S).update(field(2)).axis_sigma(np.eye(4)), "M"),
    "welford like": (lambda: K.Welford(S, like=[1.0]), "like"),
    "welford threads": (lambda: K.Welford(S, threads=-2), "threads"),
    # covariance_sigma
    "covariance_sigma cov6 terms": (lambda: K.covariance_sigma(np.zeros((5,) + S, F32), np.eye(3)), "cov6"),
    "covariance_sigma cov6 float64": (lambda: K.covariance_sigma(np.zeros((6,) + S), np.eye(3)), "cov6"),
    "covariance_sigma cov6 ndim": (lambda: K.covariance_sigma(np.zeros((6, 4, 5), F32), np.eye(3)), "cov6"),
    "covariance_sigma M NaN": (lambda: K.covariance_sigma(np.zeros((6,) + S, F32), np.full((3, 3), np.nan)), "M"),
    "covariance_sigma threads": (lambda: K.covariance_sigma(np.zeros((6,) + S, F32), np.eye(3), threads=-1), "threads"),
    # threads, per call and the process default
    "warp threads negative": (lambda: K.warp(vol(), field(), threads=-1), "threads"),
    "warp threads too many": (lambda: K.warp(vol(), field(), threads=4097), "threads"),
    "compose threads bool": (lambda: K.compose(field(), affine=np.eye(3, 4), threads=True), "threads"),
    "bspline threads float": (lambda: K.bspline_field(field(shape=(4, 4, 4)), S, threads=2.0), "threads"),
    "threads": (lambda: K.set_num_threads(0), "n"),
    "threads too many": (lambda: K.set_num_threads(4097), "n"),
}


def check_rejected(name, call, *args):
    """call(*args) raises ValueError whose message starts with `name`; returns the message."""
    with pytest.raises(ValueError) as info:
        call(*args)
    assert str(info.value).startswith(name), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_argument_raises_value_error_naming_it(case):
    call, name = CASES[case]
    message = check_rejected(name + ":", call)
    assert "\n" not in message


def test_failed_update_leaves_the_accumulator_unchanged():
    acc = K.Welford(S).update(np.ones((2, 3) + S, F32))
    mean, cov = acc.mean, acc.covariance
    with pytest.raises(ValueError):
        acc.update(np.ones((2, 3, 4, 5, 7), F32))
    assert acc.count == 2
    assert np.array_equal(acc.mean, mean) and np.array_equal(acc.covariance, cov)


# The native layer alone: each call is wrong in one way; all must raise ValueError.
NATIVE_CASES = {
    "warp out float64": (lambda: _core.warp_displacement(vol(1, 1), field(1), np.zeros((1, 1) + S), 0.0, False), "out"),
    "warp out shape": (lambda: _core.warp_displacement(vol(1, 1), field(1), vol(1, 2), 0.0, False), "out"),
    "warp out readonly": (lambda: _core.warp_displacement(vol(1, 1), field(1), np.broadcast_to(vol(1, 1), (1, 1) + S), 0.0, False), "out"),
    "warp out aliases volume": (lambda: (lambda v: _core.warp_displacement(v, field(1), v, 0.0, False))(vol(1, 1)), "out"),
    "warp volume 4d": (lambda: _core.warp_displacement(vol(1), field(1), vol(1, 1), 0.0, False), "volume"),
    "warp volume batch": (lambda: _core.warp_displacement(vol(2, 1), field(3), vol(3, 1), 0.0, False), "volume"),
    "warp displacement noncontig": (lambda: _core.warp_displacement(vol(1, 1), noncontig_field()[None], vol(1, 1), 0.0, False), "displacement"),
    "warp_affine NaN": (lambda: _core.warp_affine(vol(1, 1), NAN_AFFINE[None], vol(1, 1), 0.0, False), "affine"),
    "warp_affine shape": (lambda: _core.warp_affine(vol(1, 1), np.zeros((1, 4, 4), F32), vol(1, 1), 0.0, False), "affine"),
    "compose_affine out": (lambda: _core.compose_affine(field(1), np.eye(3, 4, dtype=F32)[None], field(2)), "out"),
    "compose_field field": (lambda: _core.compose_field(field(2), field(3), field(2), 0.0, True), "field"),
    "bspline control": (lambda: _core.bspline_field(field(1, shape=(2, 4, 4)), field(1)), "control"),
    "bspline out": (lambda: _core.bspline_field(field(1, shape=(4, 4, 4)), np.zeros((1, 2) + S, F32)), "out"),
    "welford m2": (lambda: _core.welford_update(0, np.zeros((3, 8), F32), np.zeros((6, 7), F32), np.zeros((1, 3, 8), F32)), "m2"),
    "welford count": (lambda: _core.welford_update(-1, np.zeros((3, 8), F32), np.zeros((6, 8), F32), np.zeros((1, 3, 8), F32)), "count_before"),
    "welford batch": (lambda: _core.welford_update(0, np.zeros((3, 8), F32), np.zeros((6, 8), F32), np.zeros((1, 3, 9), F32)), "batch"),
    "welford aliasing": (lambda: (lambda m: _core.welford_update(0, m, np.zeros((6, 8), F32), m[None]))(np.zeros((3, 8), F32)), "mean"),
    "controlled shared state": (lambda: (lambda m, q: _core.welford_update_controlled(0, m, q, m, q, np.zeros((3, 8), F32), np.zeros((6, 8), F32), np.zeros((1, 3, 8), F32), np.zeros((1, 3, 8), F32)))(np.zeros((3, 8), F32), np.zeros((6, 8), F32)), "mean_g"),
    "controlled samples": (lambda: _core.welford_update_controlled(0, *[np.zeros((k, 8), F32) for k in (3, 6, 3, 6, 3, 6)], np.zeros((1, 3, 8), F32), np.zeros((2, 3, 8), F32)), "d"),
    "controlled voxels": (lambda: _core.welford_update_controlled(0, *[np.zeros((k, 8), F32) for k in (3, 6, 3, 6)], np.zeros((3, 9), F32), np.zeros((6, 8), F32), np.zeros((1, 3, 8), F32), np.zeros((1, 3, 8), F32)), "mean_sum"),
    "merge counts": (lambda: _core.welford_merge(0, np.zeros((3, 8), F32), np.zeros((6, 8), F32), 0, np.zeros((3, 8), F32), np.zeros((6, 8), F32)), "n_a"),
    "merge shapes": (lambda: _core.welford_merge(1, np.zeros((3, 8), F32), np.zeros((6, 8), F32), 1, np.zeros((3, 7), F32), np.zeros((6, 8), F32)), "mean_b"),
    "sigma count": (lambda: _core.welford_sigma(1, np.zeros((6, 8), F32), np.eye(3, dtype=F32), np.zeros(8, F32)), "count"),
    "sigma out": (lambda: _core.welford_sigma(2, np.zeros((6, 8), F32), np.eye(3, dtype=F32), np.zeros(7, F32)), "out"),
    "axis_sigma M": (lambda: _core.welford_axis_sigma(2, np.zeros((6, 8), F32), np.eye(3), np.zeros((3, 8), F32)), "M"),
    "not an array": (lambda: _core.compose_affine("x", np.eye(3, 4, dtype=F32)[None], field(1)), "disp"),
    "threads negative": (lambda: _core.warp_displacement(vol(1, 1), field(1), vol(1, 1), 0.0, False, -1), "threads"),
    "threads too many": (lambda: _core.bspline_field(field(1, shape=(4, 4, 4)), field(1), threads=4097), "threads"),
    "set_num_threads zero": (lambda: _core.set_num_threads(0), "n"),
    "set_num_threads too many": (lambda: _core.set_num_threads(4097), "n"),
}


@pytest.mark.parametrize("case", sorted(NATIVE_CASES))
def test_native_layer_rejects_bad_arrays(case):
    check_rejected(NATIVE_CASES[case][1], NATIVE_CASES[case][0])


# The CUDA binding alone, on stand-in arrays (tests/kernel_builders.py) whose memory is never
# touched: each call is wrong in one way and must raise ValueError from the checks. The launch
# target is device -1: were a check missing, the call would stop at the device selection
# (RuntimeError), before any launch, GPU or not.
LAUNCH = (-1, 0)


def dev(*shape, **kw):
    return FakeCudaArray(shape, **kw)


CUDA_CASES = {
    "warp out shape": (lambda cu: cu.warp_displacement(dev(1, 1, *S), dev(1, 3, *S), dev(1, 2, *S), 0.0, False, LAUNCH), "out"),
    "warp out readonly": (lambda cu: cu.warp_displacement(dev(1, 1, *S), dev(1, 3, *S), dev(1, 1, *S, readonly=True), 0.0, False, LAUNCH), "out"),
    "warp out aliases volume": (lambda cu: (lambda v: cu.warp_displacement(v, dev(1, 3, *S), v, 0.0, False, LAUNCH))(dev(1, 1, *S)), "out"),
    "warp volume batch": (lambda cu: cu.warp_displacement(dev(2, 1, *S), dev(3, 3, *S), dev(3, 1, *S), 0.0, False, LAUNCH), "volume"),
    "warp volume numpy": (lambda cu: cu.warp_displacement(vol(1, 1), dev(1, 3, *S), dev(1, 1, *S), 0.0, False, LAUNCH), "volume"),
    "warp displacement float64": (lambda cu: cu.warp_displacement(dev(1, 1, *S), dev(1, 3, *S, typestr="<f8"), dev(1, 1, *S), 0.0, False, LAUNCH), "displacement"),
    "warp displacement noncontig": (lambda cu: cu.warp_displacement(dev(1, 1, *S), dev(1, 3, *S, strides=(4 * 360, 4 * 120, 4 * 24, 4 * 6, 8)), dev(1, 1, *S), 0.0, False, LAUNCH), "displacement"),
    "warp displacement malformed": (lambda cu: cu.warp_displacement(dev(1, 1, *S), type("Bad", (), {"__cuda_array_interface__": {"shape": "x"}})(), dev(1, 1, *S), 0.0, False, LAUNCH), "displacement"),
    "warp_affine shape": (lambda cu: cu.warp_affine(dev(1, 1, *S), dev(1, 4, 4), dev(1, 1, *S), 0.0, True, LAUNCH), "affine"),
    "compose_affine out": (lambda cu: cu.compose_affine(dev(1, 3, *S), dev(1, 3, 4), dev(2, 3, *S), LAUNCH), "out"),
    "compose_field field": (lambda cu: cu.compose_field(dev(2, 3, *S), dev(3, 3, *S), dev(2, 3, *S), 0.0, True, LAUNCH), "field"),
    "bspline control": (lambda cu: cu.bspline_field(dev(1, 3, 2, 4, 4), dev(1, 3, *S), LAUNCH), "control"),
    "welford m2": (lambda cu: cu.welford_update(0, dev(3, 8), dev(6, 7), dev(1, 3, 8), LAUNCH), "m2"),
    "welford count": (lambda cu: cu.welford_update(-1, dev(3, 8), dev(6, 8), dev(1, 3, 8), LAUNCH), "count_before"),
    "merge shapes": (lambda cu: cu.welford_merge(1, dev(3, 8), dev(6, 8), 1, dev(3, 7), dev(6, 8), LAUNCH), "mean_b"),
    "sigma count": (lambda cu: cu.welford_sigma(1, dev(6, 8), np.eye(3, dtype=F32), dev(8), LAUNCH), "count"),
    "sigma M float64": (lambda cu: cu.welford_sigma(2, dev(6, 8), np.eye(3), dev(8), LAUNCH), "M"),
    "axis_sigma M on the device": (lambda cu: cu.welford_axis_sigma(2, dev(6, 8), dev(3, 3), dev(3, 8), LAUNCH), "M"),
    "axis_sigma M NaN": (lambda cu: cu.welford_axis_sigma(2, dev(6, 8), np.full((3, 3), np.nan, F32), dev(3, 8), LAUNCH), "M"),
}

needs_cuda_module = pytest.mark.skipif(importlib.util.find_spec("regrisk._cuda") is None,
                                       reason="regrisk._cuda not built (no CUDA compiler when regrisk was installed)")


@needs_cuda_module
@pytest.mark.parametrize("case", sorted(CUDA_CASES))
def test_cuda_binding_rejects_bad_arrays_before_launching(case):
    import regrisk._cuda as cu

    check_rejected(CUDA_CASES[case][1], CUDA_CASES[case][0], cu)


@needs_cuda_module
def test_cuda_binding_passes_good_arrays_on_to_the_device():
    # The control for the cases above: the same kind of call with consistent arrays gets past
    # every check and stops only at the invalid device.
    import regrisk._cuda as cu

    with pytest.raises(RuntimeError, match="cannot use CUDA device -1"):
        cu.warp_displacement(dev(1, 1, *S), dev(2, 3, *S), dev(2, 1, *S), 0.0, False, LAUNCH)
    with pytest.raises(RuntimeError, match="cannot use CUDA device -1"):
        cu.welford_axis_sigma(2, dev(6, 8), np.eye(3, dtype=F32), dev(3, 8), LAUNCH)


def test_random_bad_native_calls_never_crash_the_process():
    """Hundreds of random shape/dtype/layout combinations straight into _core, in a child
    process: whatever the combination, the child must finish normally (ValueError or success)."""
    script = textwrap.dedent("""
        import numpy as np
        from regrisk import _core
        rng = np.random.default_rng(7)
        def arr():
            nd = int(rng.integers(0, 6))
            shape = tuple(int(n) for n in rng.integers(0, 5, nd))
            a = rng.standard_normal(shape).astype(rng.choice([np.float32, np.float64, np.int32]))
            if a.ndim and rng.random() < 0.2:
                a = a[..., ::-1]
            return a
        calls = [
            lambda: _core.warp_displacement(arr(), arr(), arr(), 0.0, bool(rng.integers(2))),
            lambda: _core.warp_affine(arr(), arr(), arr(), 0.0, False),
            lambda: _core.compose_affine(arr(), arr(), arr()),
            lambda: _core.compose_field(arr(), arr(), arr(), 0.0, True),
            lambda: _core.bspline_field(arr(), arr()),
            lambda: _core.welford_update(int(rng.integers(-1, 3)), arr(), arr(), arr()),
            lambda: _core.welford_merge(1, arr(), arr(), 1, arr(), arr()),
            lambda: _core.welford_sigma(2, arr(), arr(), arr()),
            lambda: _core.welford_axis_sigma(2, arr(), arr(), arr()),
        ]
        errors = 0
        for i in range(3000):
            try:
                calls[i % len(calls)]()
            except ValueError:
                errors += 1
        print("done", errors)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("done")
    assert int(proc.stdout.split()[1]) > 2500  # nearly all random combinations are invalid


def test_nan_and_huge_displacements_do_not_crash():
    disp = field()
    disp[0, 0, 0, 0] = np.nan
    disp[1, 1, 1, 1] = 1e30
    disp[2, 2, 2, 2] = -np.inf
    v = np.ones(S, F32)
    fill = K.warp(v, disp, mode="fill", fill=0.5)
    assert fill[0, 0, 0] == 0.5 and fill[1, 1, 1] == 0.5 and fill[2, 2, 2] == 0.5
    assert fill[3, 3, 3] == 1.0
    border = K.warp(v, disp, mode="border")
    assert border[1, 1, 1] == 1.0 and border[2, 2, 2] == 1.0 and border[3, 3, 3] == 1.0
