// Trilinear sampling shared by the CPU and CUDA builds.
//
// One templated sampler, boundary handling as a parameter, so that the C++ and CUDA kernels
// cannot drift apart. Coordinates are voxel indices (voxel centres are integers: align-corners
// semantics), ordered like the array axes (i, j, k) = (D, H, W).
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

// How a sample treats voxels outside the volume.
enum class Boundary : int {
  Fill = 0,    // every corner outside the volume contributes `fill` (torch zeros padding when fill=0)
  Border = 1,  // the coordinate is clamped to [0, n-1] first (nearest edge value)
};

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

// Value of `vol` (one channel, C-contiguous d*h*w) at voxel coordinate (z, y, x).
template <typename T>
REGRISK_HD T sample_trilinear(const T* vol, Grid3 g, T z, T y, T x, Boundary mode, T fill) {
  if (mode == Boundary::Border) {
    z = clamp_coord(z, g.d);
    y = clamp_coord(y, g.h);
    x = clamp_coord(x, g.w);
  } else {
    // Entirely outside the one-voxel halo: every corner is outside, skip the arithmetic.
    if (!(z > T(-1) && z < static_cast<T>(g.d) && y > T(-1) && y < static_cast<T>(g.h) &&
          x > T(-1) && x < static_cast<T>(g.w))) {
      return fill;
    }
  }
  const int64_t z0 = floor_index(z), y0 = floor_index(y), x0 = floor_index(x);
  const T fz = z - static_cast<T>(z0), fy = y - static_cast<T>(y0), fx = x - static_cast<T>(x0);
  T acc = T(0);
REGRISK_UNROLL
  for (int dz = 0; dz < 2; ++dz) {
    const int64_t zi = z0 + dz;
    const T wz = dz ? fz : T(1) - fz;
REGRISK_UNROLL
    for (int dy = 0; dy < 2; ++dy) {
      const int64_t yi = y0 + dy;
      const T wzy = wz * (dy ? fy : T(1) - fy);
REGRISK_UNROLL
      for (int dx = 0; dx < 2; ++dx) {
        const int64_t xi = x0 + dx;
        const T w = wzy * (dx ? fx : T(1) - fx);
        T v;
        if (zi >= 0 && zi < g.d && yi >= 0 && yi < g.h && xi >= 0 && xi < g.w) {
          v = vol[(zi * g.h + yi) * g.w + xi];
        } else if (mode == Boundary::Border) {
          // Only reached with a zero weight (clamped coordinate on the last index).
          v = vol[(clamp_coord<int64_t>(zi, g.d) * g.h + clamp_coord<int64_t>(yi, g.h)) * g.w +
                  clamp_coord<int64_t>(xi, g.w)];
        } else {
          v = fill;
        }
        acc += w * v;
      }
    }
  }
  return acc;
}

}  // namespace regrisk
