// Argument checks shared by every op's checks (<op>/checks.h), which both bindings run before
// any kernel: the CPU kernels and the CUDA launchers trust what passed them. A failure throws
// std::invalid_argument (Python sees ValueError) whose message starts with the argument's name.
// Host-only (std::string).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/array.h"

namespace regrisk {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline void expect(bool ok, const std::string& msg) {
  if (!ok) fail(msg);
}

// What every kernel needs of an array: float32, C order, aligned, the rank it indexes with,
// extents in [1, 2^31) (the kernels index within one axis with 32-bit integers), and for an
// output, writable memory.
inline void expect_array(const Array& a, int ndim, bool writable = false) {
  const std::string name(a.name);
  expect(a.float32, name + ": expected float32, got " + a.dtype);
  expect(a.ndim == ndim, name + ": expected " + std::to_string(ndim) + " dimensions, got " +
                             std::to_string(a.ndim));
  expect(a.c_contiguous, name + ": must be C-contiguous");
  expect(a.aligned, name + ": must be aligned");
  expect(!writable || a.writable, name + ": must be writeable");
  for (int i = 0; i < ndim; ++i) {
    expect(a.dim(i) >= 1, name + ": every dimension must be >= 1");
    expect(a.dim(i) <= 0x7fffffff, name + ": every dimension must be < 2^31");
  }
}

inline void expect_dim(const Array& a, int axis, int64_t n, const char* what) {
  expect(a.dim(axis) == n, std::string(a.name) + ": axis " + std::to_string(axis) + " is " +
                               std::to_string(a.dim(axis)) + ", expected " + std::to_string(n) +
                               " (" + what + ")");
}

// a's batch (axis 0) is 1 (shared by every item) or equals other's.
inline void expect_batch(const Array& a, const Array& other) {
  const int64_t n = a.dim(0), m = other.dim(0);
  expect(n == 1 || n == m, std::string(a.name) + ": batch " + std::to_string(n) +
                               " must be 1 or match " + other.name + "'s " + std::to_string(m));
}

inline void expect_disjoint(const Array& out, const Array& in) {
  if (out.data < in.data + in.nbytes && in.data < out.data + out.nbytes)
    fail(std::string(out.name) + ": must not overlap " + in.name);
}

// Only where the values are readable here (host memory); for CuPy arrays the Python layer
// checks the small parameter matrices before they are uploaded.
inline void expect_finite(const Array& a) {
  if (!a.host) return;
  const float* p = a.in();
  for (int64_t i = 0; i < a.nbytes / 4; ++i)
    if (!std::isfinite(p[i])) fail(std::string(a.name) + ": must be finite (contains NaN or inf)");
}

// (B, 3, d, h, w): a batch of displacement fields (or of B-spline control grids).
inline void expect_fields(const Array& a, bool writable = false) {
  expect_array(a, 5, writable);
  expect_dim(a, 1, 3, "three displacement components");
}

// (B, 3, 4): a batch of finite voxel-space affines [A | t].
inline void expect_affines(const Array& a) {
  expect_array(a, 3);
  expect_dim(a, 1, 3, "3x4 matrix");
  expect_dim(a, 2, 4, "3x4 matrix");
  expect_finite(a);
}

}  // namespace regrisk
