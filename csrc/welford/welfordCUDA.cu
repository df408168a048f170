// CUDA kernels for the streaming statistics: one thread per voxel, accumulating in double
// registers exactly like the CPU build (welford_step, chan_merge, gram_upper, mapped_trace and
// mapped_variances come from welford.h). Every sample of a batch is folded in order, so the
// result equals the CPU's up to the float32 rounding of the stored state.
#include "common/launch.cuh"
#include "welford/welford.h"

namespace regrisk {
namespace cuda {
namespace {

using Acc = double;

__global__ void __launch_bounds__(kThreads)
    update_kernel(int64_t count, float* __restrict__ mean, float* __restrict__ m2,
                  const float* __restrict__ batch, int64_t b, int64_t n_vox) {
  for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
    Acc mu[3], s[6];
    load_state<Acc>(mean, m2, n_vox, n, mu, s);
    for (int64_t bi = 0; bi < b; ++bi) {
      const float* x = batch + bi * 3 * n_vox;
      welford_step<Acc>(Acc(1) / Acc(count + bi + 1), x[n], x[n_vox + n], x[2 * n_vox + n], mu, s);
    }
    store_state<Acc>(mean, m2, n_vox, n, mu, s);
  }
}

__global__ void __launch_bounds__(kThreads)
    merge_kernel(Acc n_a, float* __restrict__ mean_a, float* __restrict__ m2_a, Acc n_b,
                 const float* __restrict__ mean_b, const float* __restrict__ m2_b, int64_t n_vox) {
  for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
    Acc ma[3], sa[6], mb[3], sb[6];
    load_state<Acc>(mean_a, m2_a, n_vox, n, ma, sa);
    load_state<Acc>(mean_b, m2_b, n_vox, n, mb, sb);
    chan_merge<Acc>(n_a, n_b, ma, sa, mb, sb);
    store_state<Acc>(mean_a, m2_a, n_vox, n, ma, sa);
  }
}

// Small host-side values passed by value (kernel parameter space, no device copy): G = M^T M
// (upper triangle, computed once on the host as the CPU build does) and the 3x3 M itself.
struct Gram {
  Acc g[6];
};
struct Mat3 {
  float m[9];
};

__global__ void __launch_bounds__(kThreads)
    sigma_kernel(Acc scale, const float* __restrict__ m2, Gram G, float* __restrict__ out,
                 int64_t n_vox) {
  for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
    Acc s[6];
    for (int c = 0; c < 6; ++c) s[c] = m2[c * n_vox + n];
    out[n] = static_cast<float>(sqrt(mapped_trace<Acc>(s, scale, G.g)));
  }
}

__global__ void __launch_bounds__(kThreads)
    axis_sigma_kernel(Acc scale, const float* __restrict__ m2, Mat3 M, float* __restrict__ out,
                      int64_t n_vox) {
  for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
    Acc s[6], v[3];
    for (int c = 0; c < 6; ++c) s[c] = m2[c * n_vox + n];
    mapped_variances<Acc>(s, scale, M.m, v);
    for (int c = 0; c < 3; ++c) out[c * n_vox + n] = static_cast<float>(sqrt(v[c]));
  }
}

// 1 / (count - 1): turns M2 into the unbiased covariance.
Acc unbiased(int64_t count) { return Acc(1) / Acc(count - 1); }

}  // namespace
}  // namespace cuda

void welford_update(int64_t count_before, const Array& mean, const Array& m2, const Array& batch,
                    Stream stream) {
  const int64_t n = mean.dim(1);
  cuda::launch("welford_update", stream, cuda::grid_for(n, 1), cuda::kThreads, cuda::update_kernel,
               count_before, mean.out(), m2.out(), batch.in(), batch.dim(0), n);
}

void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Stream stream) {
  if (n_b == 0) return;  // nothing to absorb: a is already the merge
  const int64_t n = mean_a.dim(1);
  cuda::launch("welford_merge", stream, cuda::grid_for(n, 1), cuda::kThreads, cuda::merge_kernel,
               cuda::Acc(n_a), mean_a.out(), m2_a.out(), cuda::Acc(n_b), mean_b.in(), m2_b.in(), n);
}

void welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                   Stream stream) {
  cuda::Gram G;
  gram_upper<cuda::Acc>(M.in(), G.g);
  const int64_t n = m2.dim(1);
  cuda::launch("welford_sigma", stream, cuda::grid_for(n, 1), cuda::kThreads, cuda::sigma_kernel,
               cuda::unbiased(count), m2.in(), G, out.out(), n);
}

void welford_axis_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                        Stream stream) {
  cuda::Mat3 m;
  for (int i = 0; i < 9; ++i) m.m[i] = M.in()[i];
  const int64_t n = m2.dim(1);
  cuda::launch("welford_axis_sigma", stream, cuda::grid_for(n, 1), cuda::kThreads,
               cuda::axis_sigma_kernel, cuda::unbiased(count), m2.in(), m, out.out(), n);
}

}  // namespace regrisk
