// upsample2's and average_pool's arguments (shapes in resample.h); throws
// std::invalid_argument naming the argument.
#pragma once

#include <string>

#include "common/checks.h"

namespace regrisk {

inline void check_upsample2(const Array& volume, const Array& out) {
  expect_array(volume, 5);
  expect_array(out, 5, true);
  for (int axis = 0; axis < 2; ++axis) expect_dim(out, axis, volume.dim(axis), "volume's");
  for (int axis = 2; axis < 5; ++axis) expect_dim(out, axis, 2 * volume.dim(axis), "twice the volume's");
  expect_disjoint(out, volume);
}

inline void check_average_pool(const Array& volume, int factor, const Array& out) {
  expect_array(volume, 5);
  expect_array(out, 5, true);
  expect(factor >= 1 && factor <= 64, "factor: must be from 1 to 64, got " + std::to_string(factor));
  for (int axis = 0; axis < 2; ++axis) expect_dim(out, axis, volume.dim(axis), "volume's");
  for (int axis = 2; axis < 5; ++axis) {
    expect(volume.dim(axis) >= factor, std::string(volume.name) + ": every spatial axis needs "
                                           "at least factor voxels");
    expect_dim(out, axis, volume.dim(axis) / factor, "the volume's divided by factor");
  }
  expect_disjoint(out, volume);
}

}  // namespace regrisk
