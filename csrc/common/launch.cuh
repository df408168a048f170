// Launch plumbing shared by the CUDA launchers (<op>/<op>CUDA.cu): geometry, index helpers,
// and launch(), the one place that enqueues a kernel. Included from .cu files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/execution.h"
#include "common/grid.h"

namespace regrisk::cuda {

constexpr int kThreads = 256;

// Blocks along x cover the voxels of one volume (grid-stride), blocks along y the batch.
inline dim3 grid_for(int64_t voxels, int64_t batch) {
  const int64_t blocks = (voxels + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < 65535 * 64 ? blocks : 65535 * 64),
              static_cast<unsigned>(batch < 65535 ? batch : 65535));
}

// Output grid with 32-bit extents: the unravel divisions are the hot integer work per voxel.
struct Dims32 {
  uint32_t d, h, w;
};

// A grid the kernels index with 32-bit voxel numbers; throws naming `what` above 2^32 voxels.
Dims32 dims32(const Grid3& g, const char* what);

// Grid-stride loops over voxels: for (n = first_voxel(); n < count; n += voxel_stride()).
__device__ __forceinline__ int64_t first_voxel() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t voxel_stride() { return int64_t(gridDim.x) * blockDim.x; }

__device__ __forceinline__ void unravel(uint32_t n, const Dims32& o, float& i, float& j, float& k) {
  const uint32_t t = n / o.w;
  k = static_cast<float>(n - t * o.w);
  const uint32_t i_ = t / o.h;
  j = static_cast<float>(t - i_ * o.h);
  i = static_cast<float>(i_);
}

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

// Enqueues kernel(args...) on a grid of `grid` blocks of `threads` threads, asynchronously on
// s's device and stream.
template <class Kernel, class... Args>
void launch(const char* what, const Stream& s, dim3 grid, int threads, Kernel kernel,
            Args... args) {
  const DeviceGuard guard(s.device);
  kernel<<<grid, threads, 0, reinterpret_cast<cudaStream_t>(s.handle)>>>(args...);
  check_launch(what);
}

}  // namespace regrisk::cuda
