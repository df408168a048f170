// One array argument as a binding hands it over, from NumPy (host memory) or from a CuPy array
// (device memory): what the argument checks need (name, dtype, layout, writability, extent) and
// what the kernels need (pointer and shape). The bindings fill it (bindings/arrays.h); the
// checks (common/checks.h, <op>/checks.h) and both builds of every kernel read it.
#pragma once

#include <cstdint>

#include "common/grid.h"

namespace regrisk {

struct Array {
  static constexpr int kMaxDims = 8;  // larger ranks keep ndim but not their extents

  const char* name = "";
  char dtype[16] = {};  // as the array's library spells it, for messages
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  std::uintptr_t data = 0;
  int64_t nbytes = 0;
  bool float32 = false;
  bool c_contiguous = false;
  bool aligned = false;
  bool writable = false;
  bool host = true;  // host memory: the checks may read the values (finiteness)

  int64_t dim(int axis) const { return shape[axis]; }
  Grid3 grid(int first_axis) const {
    return Grid3{shape[first_axis], shape[first_axis + 1], shape[first_axis + 2]};
  }
  const float* in() const { return reinterpret_cast<const float*>(data); }
  float* out() const { return reinterpret_cast<float*>(data); }
};

}  // namespace regrisk
