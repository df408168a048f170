// CUDA kernels for warp: one thread per output voxel of one batch item; the sample coordinate
// and its trilinear weights are computed once and reused for every channel. Per-voxel math is
// the CPU build's: sample_trilinear (common/sampling.h), trilinear_weights, trilinear_interior,
// affine_point and broadcast_index (warp/warp.h), combined as in warp.cpp (warpCUDA.h).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/launch.cuh"
#include "common/sampling.h"
#include "warp/warp.h"
#include "warp/warpCUDA.h"

namespace regrisk::cuda {

namespace detail {

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("regrisk._cuda: cannot use CUDA device ") +
                             std::to_string(device) + ": " + cudaGetErrorString(err));
  }
  previous_ = current;  // the caller's device (CuPy's current one) comes back afterwards
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("regrisk._cuda: ") + what + " failed: " +
                             cudaGetErrorString(err));
  }
}

void check_voxels(int64_t voxels, const char* what) {
  if (voxels > int64_t(UINT32_MAX)) {
    throw std::runtime_error(std::string("regrisk._cuda: ") + what +
                             ": more than 2^32 voxels per volume is not supported");
  }
}

}  // namespace detail

namespace {

template <Boundary M>
__global__ void __launch_bounds__(kThreads)
    warp_displacement_kernel(const float* __restrict__ volume, int64_t bv, int64_t c, Grid3 in,
                             const float* __restrict__ disp, int64_t b, Dims32 o,
                             float* __restrict__ out, float fill) {
  const int64_t n_out = int64_t(o.d) * o.h * o.w;
  const int64_t n_in = in.size();
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* __restrict__ u = disp + bi * 3 * n_out;
    const float* __restrict__ vol = volume + broadcast_index(bi, bv) * c * n_in;
    float* __restrict__ dst = out + bi * c * n_out;
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_out;
         n += int64_t(gridDim.x) * blockDim.x) {
      float i, j, k;
      unravel(static_cast<uint32_t>(n), o, i, j, k);
      const float z = i + u[n], y = j + u[n_out + n], x = k + u[2 * n_out + n];
      const Trilinear t = trilinear_at(in, z, y, x);
      for (int64_t ch = 0; ch < c; ++ch) {
        dst[ch * n_out + n] = trilinear_value(vol + ch * n_in, in, t, z, y, x, M, fill);
      }
    }
  }
}

template <Boundary M>
__global__ void __launch_bounds__(kThreads)
    warp_affine_kernel(const float* __restrict__ volume, int64_t bv, int64_t c, Grid3 in,
                       const float* __restrict__ affine, int64_t b, Dims32 o,
                       float* __restrict__ out, float fill) {
  const int64_t n_out = int64_t(o.d) * o.h * o.w;
  const int64_t n_in = in.size();
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* a = affine + bi * 12;  // uniform across the block: served from cache
    const float* __restrict__ vol = volume + broadcast_index(bi, bv) * c * n_in;
    float* __restrict__ dst = out + bi * c * n_out;
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_out;
         n += int64_t(gridDim.x) * blockDim.x) {
      float i, j, k;
      unravel(static_cast<uint32_t>(n), o, i, j, k);
      // Coordinate in double, sample in float: the CPU build's arithmetic exactly.
      double zd, yd, xd;
      affine_point<double>(a, i, j, k, zd, yd, xd);
      const float z = static_cast<float>(zd), y = static_cast<float>(yd), x = static_cast<float>(xd);
      const Trilinear t = trilinear_at(in, z, y, x);
      for (int64_t ch = 0; ch < c; ++ch) {
        dst[ch * n_out + n] = trilinear_value(vol + ch * n_in, in, t, z, y, x, M, fill);
      }
    }
  }
}

}  // namespace

void warp_displacement(const float* volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W,
                       const float* disp, int64_t b, int64_t d, int64_t h, int64_t w, float* out,
                       float fill, bool border, int device, std::uintptr_t stream) {
  const int64_t n_out = d * h * w;
  if (b == 0 || c == 0 || n_out == 0) return;
  detail::check_voxels(n_out, "warp_displacement");
  const detail::DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Grid3 in{D, H, W};
  const Dims32 o{uint32_t(d), uint32_t(h), uint32_t(w)};
  if (border) {
    warp_displacement_kernel<Boundary::Border>
        <<<grid_for(n_out, b), kThreads, 0, s>>>(volume, bv, c, in, disp, b, o, out, fill);
  } else {
    warp_displacement_kernel<Boundary::Fill>
        <<<grid_for(n_out, b), kThreads, 0, s>>>(volume, bv, c, in, disp, b, o, out, fill);
  }
  detail::check_launch("warp_displacement");
}

void warp_affine(const float* volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W,
                 const float* affine, int64_t b, int64_t d, int64_t h, int64_t w, float* out,
                 float fill, bool border, int device, std::uintptr_t stream) {
  const int64_t n_out = d * h * w;
  if (b == 0 || c == 0 || n_out == 0) return;
  detail::check_voxels(n_out, "warp_affine");
  const detail::DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Grid3 in{D, H, W};
  const Dims32 o{uint32_t(d), uint32_t(h), uint32_t(w)};
  if (border) {
    warp_affine_kernel<Boundary::Border>
        <<<grid_for(n_out, b), kThreads, 0, s>>>(volume, bv, c, in, affine, b, o, out, fill);
  } else {
    warp_affine_kernel<Boundary::Fill>
        <<<grid_for(n_out, b), kThreads, 0, s>>>(volume, bv, c, in, affine, b, o, out, fill);
  }
  detail::check_launch("warp_affine");
}

}  // namespace regrisk::cuda
