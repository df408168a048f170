// CUDA kernels for the streaming statistics: one thread per voxel, accumulating in double
// registers exactly like the CPU build (welford_step, chan_merge, gram_upper, mapped_trace and
// mapped_variances come from welford/welford.h). Every sample of a batch is folded in order,
// so the result equals the CPU's up to the float32 rounding of the stored state.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/launch.cuh"
#include "welford/welford.h"
#include "welford/welfordCUDA.h"
#include "warp/warpCUDA.h"

namespace regrisk::cuda {
namespace {

using Acc = double;

// 3x3 voxel->mm matrix by value (kernel parameter space, no device copy).
struct Mat3 {
  float m[9];
};

__global__ void __launch_bounds__(kThreads)
    update_kernel(int64_t count, float* __restrict__ mean, float* __restrict__ m2,
                  const float* __restrict__ batch, int64_t b, int64_t n_vox) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
       n += int64_t(gridDim.x) * blockDim.x) {
    Acc mu[3], s[6];
    for (int c = 0; c < 3; ++c) mu[c] = mean[c * n_vox + n];
    for (int c = 0; c < 6; ++c) s[c] = m2[c * n_vox + n];
    for (int64_t bi = 0; bi < b; ++bi) {
      const float* x = batch + bi * 3 * n_vox;
      welford_step<Acc>(Acc(1) / Acc(count + bi + 1), x[n], x[n_vox + n], x[2 * n_vox + n], mu, s);
    }
    for (int c = 0; c < 3; ++c) mean[c * n_vox + n] = static_cast<float>(mu[c]);
    for (int c = 0; c < 6; ++c) m2[c * n_vox + n] = static_cast<float>(s[c]);
  }
}

__global__ void __launch_bounds__(kThreads)
    merge_kernel(Acc n_a, float* __restrict__ mean_a, float* __restrict__ m2_a, Acc n_b,
                 const float* __restrict__ mean_b, const float* __restrict__ m2_b, int64_t n_vox) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
       n += int64_t(gridDim.x) * blockDim.x) {
    Acc ma[3], sa[6], mb[3], sb[6];
    for (int c = 0; c < 3; ++c) {
      ma[c] = mean_a[c * n_vox + n];
      mb[c] = mean_b[c * n_vox + n];
    }
    for (int c = 0; c < 6; ++c) {
      sa[c] = m2_a[c * n_vox + n];
      sb[c] = m2_b[c * n_vox + n];
    }
    chan_merge<Acc>(n_a, n_b, ma, sa, mb, sb);
    for (int c = 0; c < 3; ++c) mean_a[c * n_vox + n] = static_cast<float>(ma[c]);
    for (int c = 0; c < 6; ++c) m2_a[c * n_vox + n] = static_cast<float>(sa[c]);
  }
}

// G = M^T M (upper triangle), computed once on the host as the CPU build does.
struct Gram {
  Acc g[6];
};

__global__ void __launch_bounds__(kThreads)
    sigma_kernel(Acc scale, const float* __restrict__ m2, Gram G, float* __restrict__ out,
                 int64_t n_vox) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
       n += int64_t(gridDim.x) * blockDim.x) {
    Acc s[6];
    for (int c = 0; c < 6; ++c) s[c] = m2[c * n_vox + n];
    out[n] = static_cast<float>(sqrt(mapped_trace<Acc>(s, scale, G.g)));
  }
}

__global__ void __launch_bounds__(kThreads)
    axis_sigma_kernel(Acc scale, const float* __restrict__ m2, Mat3 M, float* __restrict__ out,
                      int64_t n_vox) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
       n += int64_t(gridDim.x) * blockDim.x) {
    Acc s[6], v[3];
    for (int c = 0; c < 6; ++c) s[c] = m2[c * n_vox + n];
    mapped_variances<Acc>(s, scale, M.m, v);
    for (int c = 0; c < 3; ++c) out[c * n_vox + n] = static_cast<float>(sqrt(v[c]));
  }
}

Mat3 to_mat3(const float* m) {
  Mat3 M;
  for (int i = 0; i < 9; ++i) M.m[i] = m[i];
  return M;
}

}  // namespace

void welford_update(int64_t count, float* mean, float* m2, const float* batch, int64_t b,
                    int64_t n, int device, std::uintptr_t stream) {
  if (b == 0 || n == 0) return;
  const detail::DeviceGuard guard(device);
  update_kernel<<<grid_for(n, 1), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      count, mean, m2, batch, b, n);
  detail::check_launch("welford_update");
}

void welford_merge(int64_t count_a, float* mean_a, float* m2_a, int64_t count_b,
                   const float* mean_b, const float* m2_b, int64_t n, int device,
                   std::uintptr_t stream) {
  if (n == 0 || count_b == 0) return;  // nothing to absorb: a is already the merge
  const detail::DeviceGuard guard(device);
  merge_kernel<<<grid_for(n, 1), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      Acc(count_a), mean_a, m2_a, Acc(count_b), mean_b, m2_b, n);
  detail::check_launch("welford_merge");
}

void welford_sigma(int64_t count, const float* m2, const float* m, float* out, int64_t n,
                   int device, std::uintptr_t stream) {
  if (n == 0) return;
  const detail::DeviceGuard guard(device);
  Gram G;
  gram_upper<Acc>(m, G.g);
  sigma_kernel<<<grid_for(n, 1), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      Acc(1) / Acc(count - 1), m2, G, out, n);
  detail::check_launch("welford_sigma");
}

void welford_axis_sigma(int64_t count, const float* m2, const float* m, float* out, int64_t n,
                        int device, std::uintptr_t stream) {
  if (n == 0) return;
  const detail::DeviceGuard guard(device);
  axis_sigma_kernel<<<grid_for(n, 1), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      Acc(1) / Acc(count - 1), m2, to_mat3(m), out, n);
  detail::check_launch("welford_axis_sigma");
}

}  // namespace regrisk::cuda
