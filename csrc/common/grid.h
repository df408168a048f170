// Index types and helpers every op shares, on the CPU and in CUDA kernels alike.
//
// REGRISK_HD marks a function both builds compile: host+device inline under nvcc, plain inline
// in the C++ build. Headers that use it include nothing beyond this folder, so the CUDA sources
// can reuse the CPU's per-voxel arithmetic.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define REGRISK_HD __host__ __device__ __forceinline__
#define REGRISK_UNROLL _Pragma("unroll")
#else
#define REGRISK_HD inline
#define REGRISK_UNROLL
#endif

namespace regrisk {

// Extents of one volume, (D, H, W) = array axes (i, j, k).
struct Grid3 {
  int64_t d, h, w;
  REGRISK_HD int64_t size() const { return d * h * w; }
};

template <typename T>
REGRISK_HD T clamp_coord(T x, int64_t n) {
  const T hi = static_cast<T>(n - 1);
  return x < T(0) ? T(0) : (x > hi ? hi : x);
}

template <typename T>
REGRISK_HD int64_t floor_index(T x) {
  // floor() without <cmath> device/host differences; correct for negative x.
  int64_t i = static_cast<int64_t>(x);
  return (static_cast<T>(i) > x) ? i - 1 : i;
}

// Index of the input a batch item reads: one shared input (n == 1) or its own.
REGRISK_HD int64_t broadcast_index(int64_t b, int64_t n) { return n == 1 ? 0 : b; }

}  // namespace regrisk
