// conv3x3x3's arguments (shapes in conv.h); throws std::invalid_argument naming the argument.
#pragma once

#include "common/checks.h"

namespace regrisk {

inline void check_conv3x3x3(const Array& volume, const Array& weight, const Array& bias,
                            const Array& out) {
  expect_array(volume, 5);
  expect_array(weight, 5);
  expect_array(bias, 1);
  expect_array(out, 5, true);
  expect_dim(weight, 1, volume.dim(1), "the volume's channels");
  for (int axis = 2; axis < 5; ++axis) expect_dim(weight, axis, 3, "a 3x3x3 kernel");
  expect_dim(bias, 0, weight.dim(0), "the weight's output channels");
  expect_dim(out, 0, volume.dim(0), "the volume's batch");
  expect_dim(out, 1, weight.dim(0), "the weight's output channels");
  for (int axis = 2; axis < 5; ++axis) expect_dim(out, axis, volume.dim(axis), "the volume's");
  expect_disjoint(out, volume);
  expect_disjoint(out, weight);
  expect_disjoint(out, bias);
}

}  // namespace regrisk
