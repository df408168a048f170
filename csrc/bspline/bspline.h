// Dense displacement from a coarse control grid with the uniform cubic B-spline basis (the
// nonlinear perturbation family). Per axis with n voxels and c >= 4 control points:
//   spacing s = (n - 1) / (c - 3); voxel x -> t = x / s + 1; i = min(floor(t), c - 3);
//   u = t - i; value = sum_k B_k(u) ctrl[i - 1 + k], k = 0..3; tensor product over 3 axes.
// A one-voxel axis (n == 1) has no spacing; it maps to t = 1 (the first interior knot).
//
// Arrays: control (B, 3, cD, cH, cW), every c >= 4 -> out (B, 3, D, H, W); checked by
// bspline/checks.h before either build runs. The per-axis pieces are REGRISK_HD inline so that
// bsplineCUDA.cu reuses them.
#pragma once

#include "common/array.h"
#include "common/execution.h"
#include "common/grid.h"

namespace regrisk {

// Uniform cubic B-spline weights at u in [0, 1]; they sum to 1.
template <typename T>
REGRISK_HD void bspline_basis(T u, T w[4]) {
  const T u2 = u * u, u3 = u2 * u, v = T(1) - u;
  w[0] = v * v * v / T(6);
  w[1] = (T(3) * u3 - T(6) * u2 + T(4)) / T(6);
  w[2] = (T(-3) * u3 + T(3) * u2 + T(3) * u + T(1)) / T(6);
  w[3] = u3 / T(6);
}

// For voxel x on an axis of n voxels and c control points: first control index (i - 1) and
// the local coordinate u.
template <typename T>
REGRISK_HD void bspline_locate(int64_t x, int64_t n, int64_t c, int64_t& first, T& u) {
  const T t = n > 1 ? static_cast<T>(x) * static_cast<T>(c - 3) / static_cast<T>(n - 1) + T(1)
                    : T(1);
  int64_t i = floor_index(t);
  if (i > c - 3) i = c - 3;
  u = t - static_cast<T>(i);
  first = i - 1;
}

// Two builds, picked by the last argument: Threads runs the C++/OpenMP build (bspline.cpp,
// separable: three 4-tap passes), Stream enqueues the CUDA build (bsplineCUDA.cu).
void bspline_field(const Array& control, const Array& out, Threads threads);
void bspline_field(const Array& control, const Array& out, Stream stream);
}  // namespace regrisk
