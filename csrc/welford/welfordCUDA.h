// CUDA launchers for streaming per-voxel mean / covariance of 3-vector fields (Welford, Chan).
// Kernels: welfordCUDA.cu. Device pointers, float32, C-contiguous; asynchronous on `stream`.
// Layout: mean (3, N), m2 (6, N) with components xx, xy, xz, yy, yz, zz; N voxels.
#pragma once

#include <cstdint>

namespace regrisk::cuda {

// Folds batch (B, 3, N) into (mean, m2), which hold `count` samples before the call.
void welford_update(int64_t count, float* mean, float* m2, const float* batch, int64_t b,
                    int64_t n, int device, std::uintptr_t stream);

// (n_a, mean_a, m2_a) <- merge with (n_b, mean_b, m2_b); in place on a.
void welford_merge(int64_t count_a, float* mean_a, float* m2_a, int64_t count_b,
                   const float* mean_b, const float* m2_b, int64_t n, int device,
                   std::uintptr_t stream);

// out (N,) = sqrt(tr(M Sigma M^T)), Sigma = m2 / (count - 1); M row-major 3x3 (host memory).
void welford_sigma(int64_t count, const float* m2, const float* m, float* out, int64_t n,
                   int device, std::uintptr_t stream);

// out (3, N) = sqrt(diag(M Sigma M^T)).
void welford_axis_sigma(int64_t count, const float* m2, const float* m, float* out, int64_t n,
                        int device, std::uintptr_t stream);

}  // namespace regrisk::cuda
