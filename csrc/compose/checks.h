// compose's arguments as both bindings hand them over (see compose.h for the shapes); run
// before either build. Throws std::invalid_argument naming the argument.
#pragma once

#include "common/checks.h"

namespace regrisk {

// What both compositions need once the perturbation (affines or fields) is checked.
inline void check_compose_output(const Array& disp, const Array& perturbation, const Array& out) {
  expect_batch(perturbation, disp);
  for (int a = 0; a < 5; ++a) expect_dim(out, a, disp.dim(a), "displacement's shape");
  expect_disjoint(out, disp);
  expect_disjoint(out, perturbation);
}

inline void check_compose_affine(const Array& disp, const Array& affine, const Array& out) {
  expect_fields(disp);
  expect_affines(affine);
  expect_array(out, 5, true);
  check_compose_output(disp, affine, out);
}

inline void check_compose_field(const Array& disp, const Array& field, const Array& out) {
  expect_fields(disp);
  expect_fields(field);
  expect_array(out, 5, true);
  check_compose_output(disp, field, out);
}

}  // namespace regrisk
