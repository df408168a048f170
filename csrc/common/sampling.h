// Trilinear sampling shared by the CPU and CUDA builds.
//
// One sampler with the boundary handling as a parameter, so that the C++ and CUDA kernels
// cannot drift apart. Coordinates are voxel indices (voxel centres are integers: align-corners
// semantics), ordered like the array axes (i, j, k) = (D, H, W).
#pragma once

#include <cstdint>

#include "common/boundary.h"
#include "common/grid.h"

namespace regrisk {

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

// Interior fast path of trilinear sampling, for points whose 8 corners all lie inside the
// volume (0 <= coordinate < n - 1 on every axis), in two steps. First the 8 weights from the
// fractional parts, formed as in sample_trilinear (w = (wz * wy) * wx, corners z-major), stored
// at w[k * stride], k = 0..7 (stride 1 for a plain array of 8) ...
template <typename T>
REGRISK_HD void trilinear_weights(T fz, T fy, T fx, T* w, int stride = 1) {
  const T gz = T(1) - fz, gy = T(1) - fy, gx = T(1) - fx;
  const T w00 = gz * gy, w01 = gz * fy, w10 = fz * gy, w11 = fz * fy;
  w[0 * stride] = w00 * gx;
  w[1 * stride] = w00 * fx;
  w[2 * stride] = w01 * gx;
  w[3 * stride] = w01 * fx;
  w[4 * stride] = w10 * gx;
  w[5 * stride] = w10 * fx;
  w[6 * stride] = w11 * gx;
  w[7 * stride] = w11 * fx;
}

// ... and the weighted sum at the corner block starting at p (row stride sy, slice stride sz).
// Pairwise: the 8 products are independent and the adds form a tree of depth 3 rather than a
// chain of 8. It can differ from sample_trilinear's chained sum in the last bit (never with the
// thread count); a zero weight adds an exact 0, so integer coordinates return voxel values exactly.
template <typename T>
REGRISK_HD T trilinear_interior(const T* p, int64_t sy, int64_t sz, const T* w, int stride = 1) {
  const T a = w[0] * p[0] + w[stride] * p[1];
  const T b = w[2 * stride] * p[sy] + w[3 * stride] * p[sy + 1];
  const T c = w[4 * stride] * p[sz] + w[5 * stride] * p[sz + 1];
  const T d = w[6 * stride] * p[sz + sy] + w[7 * stride] * p[sz + sy + 1];
  return (a + b) + (c + d);
}

// One point sampled exactly as the CPU's chunked sampler does it (common/point_sampler.cpp),
// for kernels that take one point at a time: an interior point uses trilinear_weights /
// trilinear_interior with its weights computed once for all channels; any other point goes
// through sample_trilinear with the caller's boundary mode.
struct Trilinear {
  float w[8];
  int64_t offset;  // index of the first corner (interior points only)
  bool interior;
};

REGRISK_HD Trilinear trilinear_at(const Grid3& g, float z, float y, float x) {
  Trilinear t;
  t.interior = z >= 0.f && y >= 0.f && x >= 0.f && z < static_cast<float>(g.d - 1) &&
               y < static_cast<float>(g.h - 1) && x < static_cast<float>(g.w - 1);
  t.offset = 0;
  if (t.interior) {
    const int32_t z0 = static_cast<int32_t>(z), y0 = static_cast<int32_t>(y),
                  x0 = static_cast<int32_t>(x);
    trilinear_weights(z - static_cast<float>(z0), y - static_cast<float>(y0),
                      x - static_cast<float>(x0), t.w);
    t.offset = (static_cast<int64_t>(z0) * g.h + y0) * g.w + x0;
  }
  return t;
}

// One channel (`vol`, d*h*w values) at the point located by `t`.
REGRISK_HD float trilinear_value(const float* vol, const Grid3& g, const Trilinear& t, float z,
                                 float y, float x, Boundary mode, float fill) {
  return t.interior ? trilinear_interior(vol + t.offset, g.w, g.h * g.w, t.w)
                    : sample_trilinear(vol, g, z, y, x, mode, fill);
}

}  // namespace regrisk
