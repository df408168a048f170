// CUDA launchers for warp (pull-back resampling of volumes). Kernels: warpCUDA.cu.
//
// Every pointer is device memory, float32, C-contiguous. Launches are asynchronous on `stream`
// (a cudaStream_t passed as an integer so that this header needs no CUDA include) on `device`;
// a launch error throws std::runtime_error.
#pragma once

#include <cstdint>

namespace regrisk::cuda {

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
