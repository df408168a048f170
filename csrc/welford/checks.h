// The Welford ops' arguments as both bindings hand them over (see welford.h for the shapes);
// run before either build. Throws std::invalid_argument naming the argument.
#pragma once

#include <array>
#include <cstdint>

#include "common/checks.h"

namespace regrisk {

// An accumulator's storage for N voxels: mean (3, N), m2 (6, N).
inline void expect_state(const Array& mean, const Array& m2, int64_t N, bool writable) {
  expect_array(mean, 2, writable);
  expect_array(m2, 2, writable);
  expect_dim(mean, 0, 3, "mean components");
  expect_dim(mean, 1, N, "voxels");
  expect_dim(m2, 0, 6, "covariance terms");
  expect_dim(m2, 1, N, "voxels");
}

inline void check_welford_update(int64_t count_before, const Array& mean, const Array& m2,
                                 const Array& batch) {
  expect(count_before >= 0, "count_before: must be >= 0");
  expect_state(mean, m2, mean.dim(1), true);
  expect_array(batch, 3);
  expect_dim(batch, 1, 3, "three displacement components");
  expect_dim(batch, 2, mean.dim(1), "voxels");
  expect_disjoint(mean, m2);
  expect_disjoint(mean, batch);
  expect_disjoint(m2, batch);
}

// welford_update_controlled: each state as welford_update checks it against g (and d), the
// two batches of one shape, and no array shared between the three states.
inline void check_welford_update_controlled(int64_t count_before,
                                            const std::array<const Array*, 6>& states,
                                            const Array& g, const Array& d) {
  expect_array(g, 3);
  for (int k = 0; k < 6; k += 2) {
    expect_array(*states[k], 2, true);
    expect_dim(*states[k], 1, g.dim(2), "voxels of g");
    check_welford_update(count_before, *states[k], *states[k + 1], g);
    check_welford_update(count_before, *states[k], *states[k + 1], d);
  }
  expect(d.dim(0) == g.dim(0), "d: must hold as many samples as g");
  for (int a = 0; a < 6; ++a)
    for (int b = a + 1; b < 6; ++b) expect_disjoint(*states[a], *states[b]);
}

inline void check_welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                                const Array& mean_b, const Array& m2_b) {
  expect(n_a >= 0 && n_b >= 0 && n_a + n_b > 0,
         "n_a, n_b: counts must be >= 0 with a positive sum");
  expect_state(mean_a, m2_a, mean_a.dim(1), true);
  expect_state(mean_b, m2_b, mean_a.dim(1), false);
  expect_disjoint(mean_a, m2_a);
  for (const Array* a : {&mean_a, &m2_a}) {
    expect_disjoint(*a, mean_b);
    expect_disjoint(*a, m2_b);
  }
}

// welford_sigma (axes false: out (N,)) and welford_axis_sigma (axes true: out (3, N)); M is
// the 3x3 voxel -> mm matrix, in host memory for both builds.
inline void check_welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                                bool axes) {
  expect(count >= 2, "count: the covariance needs at least 2 samples");
  expect_array(m2, 2);
  expect_array(M, 2);
  expect_array(out, axes ? 2 : 1, true);
  expect_dim(m2, 0, 6, "covariance terms");
  expect_dim(M, 0, 3, "3x3 matrix");
  expect_dim(M, 1, 3, "3x3 matrix");
  expect_finite(M);
  if (axes) expect_dim(out, 0, 3, "axes");
  expect_dim(out, axes ? 1 : 0, m2.dim(1), "voxels");
  expect_disjoint(out, m2);
  expect_disjoint(out, M);
}

}  // namespace regrisk
