// How a sample treats points outside the volume, and the one place where the runtime choice
// becomes a compile-time parameter: a kernel templated on the mode is written once, and
// with_boundary instantiates it for both modes.
#pragma once

#include <type_traits>

namespace regrisk {

enum class Boundary : int {
  Fill = 0,    // every corner outside the volume contributes `fill` (fill 0: torch's zeros)
  Border = 1,  // the coordinate is clamped to [0, n-1] first (nearest edge value)
};

inline Boundary boundary_of(bool border) { return border ? Boundary::Border : Boundary::Fill; }

template <Boundary M>
using BoundaryConst = std::integral_constant<Boundary, M>;

// Calls f(BoundaryConst<mode>{}); inside f, decltype(m)::value is the mode as a constant.
template <class F>
void with_boundary(Boundary mode, F&& f) {
  if (mode == Boundary::Border) {
    f(BoundaryConst<Boundary::Border>{});
  } else {
    f(BoundaryConst<Boundary::Fill>{});
  }
}

}  // namespace regrisk
