// demons_step's arguments (shapes in demons.h); throws std::invalid_argument naming the argument.
#pragma once

#include <cmath>
#include <string>

#include "common/checks.h"

namespace regrisk {

inline void check_kernel(const Array& kernel) {
  expect_array(kernel, 1);
  expect(kernel.dim(0) % 2 == 1 && kernel.dim(0) <= 513,
         std::string(kernel.name) + ": length must be odd and at most 513");
  expect_finite(kernel);
}

inline void check_gaussian_smooth(const Array& volume, const Array& ki, const Array& kj,
                                  const Array& kk, const Array& out) {
  expect_array(volume, 5);
  expect_array(out, 5, true);
  for (int axis = 0; axis < 5; ++axis) expect_dim(out, axis, volume.dim(axis), "volume's shape");
  for (const Array* k : {&ki, &kj, &kk}) {
    check_kernel(*k);
    expect_disjoint(out, *k);
  }
  expect_disjoint(out, volume);
}

inline void check_demons_step(const Array& sw, const Array& t, const Array& gt, const Array& u,
                              const Array& kernel, const Array& out, float tau, float alpha,
                              float eps) {
  expect_array(sw, 5);
  expect_dim(sw, 1, 1, "one channel");
  expect_fields(gt);
  expect_fields(u);
  expect_fields(out, true);
  for (const Array* a : {&t, &gt, &u, &out}) {
    expect_array(*a, 5, a == &out);
    expect_dim(*a, 0, sw.dim(0), "batch");
    for (int axis = 2; axis < 5; ++axis) expect_dim(*a, axis, sw.dim(axis), "grid");
  }
  expect_dim(t, 1, 1, "one channel");
  check_kernel(kernel);
  expect(std::isfinite(tau) && std::isfinite(alpha) && std::isfinite(eps),
         "tau, alpha, eps: must be finite");
  expect(eps > 0.0f && alpha >= 0.0f, "eps must be > 0 and alpha >= 0");
  for (const Array* a : {&sw, &t, &gt, &u, &kernel}) expect_disjoint(out, *a);
}

inline void check_demons_steps(const Array& s, const Array& t, const Array& gt, const Array& u,
                               const Array& kernel, const Array& out, int steps, float tau,
                               float alpha, float eps) {
  expect(steps >= 0, "steps: must be >= 0");
  check_demons_step(s, t, gt, u, kernel, out, tau, alpha, eps);  // s has sw's shape
}

}  // namespace regrisk
