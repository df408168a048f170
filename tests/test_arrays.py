"""arrays: array-module detection, host copies, identity grids (NumPy here; CuPy in the GPU
suites)."""

from __future__ import annotations

import numpy as np

from regrisk import arrays


def test_numpy_arrays_are_not_cupy_and_stay_on_the_host():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert not arrays.is_cupy(a) and arrays.array_module(a) is np
    assert arrays.to_numpy(a) is a  # no copy for a host array
    np.testing.assert_array_equal(arrays.to_numpy([[1, 2], [3, 4]]), [[1, 2], [3, 4]])


def test_an_object_from_the_cupy_package_is_recognised_by_its_type():
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert arrays.is_cupy(fake)


def test_identity_grid_holds_each_voxels_own_index():
    g = arrays.identity_grid((2, 3, 4))
    assert g.shape == (3, 2, 3, 4) and g.dtype == np.float32
    for i, j, k in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        np.testing.assert_array_equal(g[:, i, j, k], [i, j, k])
    assert arrays.identity_grid((2, 3, 4)) is g  # cached per shape
    assert arrays.identity_grid((2, 3, 5)).shape == (3, 2, 3, 5)
