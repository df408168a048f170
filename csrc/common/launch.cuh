// Launch geometry and index helpers shared by the CUDA kernels. Included from .cu files only,
// where nvcc provides the CUDA runtime declarations (dim3, __device__) itself.
#pragma once

#include <cstdint>

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

__device__ __forceinline__ void unravel(uint32_t n, const Dims32& o, float& i, float& j, float& k) {
  const uint32_t t = n / o.w;
  k = static_cast<float>(n - t * o.w);
  const uint32_t i_ = t / o.h;
  j = static_cast<float>(t - i_ * o.h);
  i = static_cast<float>(i_);
}

}  // namespace regrisk::cuda
