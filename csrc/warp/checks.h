// The warps' arguments as both bindings hand them over (see warp.h for the shapes); run before
// either build. Throws std::invalid_argument naming the argument.
#pragma once

#include "common/checks.h"

namespace regrisk {

// What both warps need once the transform (its batch B on axis 0) is checked.
inline void check_warp_output(const Array& volume, const Array& transform, const Array& out) {
  expect_batch(volume, transform);
  expect_dim(out, 0, transform.dim(0), "batch");
  expect_dim(out, 1, volume.dim(1), "channels");
  expect_disjoint(out, volume);
  expect_disjoint(out, transform);
}

inline void check_warp_displacement(const Array& volume, const Array& disp, const Array& out) {
  expect_array(volume, 5);
  expect_fields(disp);
  expect_array(out, 5, true);
  for (int a = 2; a < 5; ++a) expect_dim(out, a, disp.dim(a), "displacement grid");
  check_warp_output(volume, disp, out);
}

inline void check_warp_grid(const Array& volume, const Array& grid, const Array& out) {
  expect_array(volume, 5);
  expect_array(grid, 5);
  expect_dim(grid, 4, 3, "x, y, z");
  expect_array(out, 5, true);
  for (int a = 2; a < 5; ++a) expect_dim(out, a, grid.dim(a - 1), "the grid's points");
  check_warp_output(volume, grid, out);
}

inline void check_warp_affine(const Array& volume, const Array& affine, const Array& out) {
  expect_array(volume, 5);
  expect_affines(affine);
  expect_array(out, 5, true);
  check_warp_output(volume, affine, out);
}

}  // namespace regrisk
