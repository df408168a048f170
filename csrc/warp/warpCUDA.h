// CUDA launchers for warp (pull-back resampling of volumes). Kernels: warpCUDA.cu.
//
// Every pointer is device memory, float32, C-contiguous. Launches are asynchronous on `stream`
// (a cudaStream_t passed as an integer so that this header needs no CUDA include) on `device`;
// a launch error throws std::runtime_error.
#pragma once

#include <cstdint>

#include "common/sampling.h"
#include "warp/warp.h"

namespace regrisk::cuda {

// Per-point trilinear sampling exactly as the CPU kernels do it (warp.cpp, sample_points):
// a point whose 8 corners all lie inside the volume (0 <= coordinate < n - 1 on every axis)
// uses trilinear_weights / trilinear_interior with the weights computed once for all channels;
// any other point goes through sample_trilinear with the caller's boundary mode.
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

// out[b, c](x) = volume[bv, c](x + disp[b](x)); volume (Bv, C, D, H, W) with Bv in {1, B},
// disp (B, 3, d, h, w), out (B, C, d, h, w).
void warp_displacement(const float* volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W,
                       const float* disp, int64_t b, int64_t d, int64_t h, int64_t w, float* out,
                       float fill, bool border, int device, std::uintptr_t stream);

// out[b, c](x) = volume[bv, c](A_b x + t_b); affine (B, 3, 4) row-major [A | t] in voxels.
void warp_affine(const float* volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W,
                 const float* affine, int64_t b, int64_t d, int64_t h, int64_t w, float* out,
                 float fill, bool border, int device, std::uintptr_t stream);

// Launch plumbing shared by every *CUDA.cu file (defined in warpCUDA.cu).
namespace detail {
// Makes `device` current for this host thread for the guard's lifetime and restores the
// previous device afterwards (no calls when it already is current); throws on failure.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};
// Throws std::runtime_error naming `what` if the last launch (or an earlier async error) failed.
void check_launch(const char* what);
// Largest voxel count per volume the kernels index with 32-bit arithmetic; throws above it.
void check_voxels(int64_t voxels, const char* what);
}  // namespace detail

}  // namespace regrisk::cuda
