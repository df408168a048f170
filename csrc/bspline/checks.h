// bspline_field's arguments as both bindings hand them over (see bspline.h for the shapes); run
// before either build. Throws std::invalid_argument naming the argument.
#pragma once

#include "common/checks.h"

namespace regrisk {

inline void check_bspline_field(const Array& control, const Array& out) {
  expect_fields(control);
  for (int a = 2; a < 5; ++a)
    expect(control.dim(a) >= 4, "control: every spatial axis needs at least 4 control points");
  expect_fields(out, true);
  expect_dim(out, 0, control.dim(0), "batch");
  expect_disjoint(out, control);
}

}  // namespace regrisk
