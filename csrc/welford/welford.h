// Streaming per-voxel mean and covariance of 3-vector samples (Welford), Chan's merge of two
// accumulators, and the sigma maps derived from the covariance.
//
// Storage (in the caller): mean (3, N) and M2 (6, N) float32, M2 the sum of outer products of
// deviations, components xx, xy, xz, yy, yz, zz. The per-voxel functions below work on
// registers of type Acc (double in both builds) so that small spreads survive the float32
// storage. Arrays: mean (3, N), m2 (6, N), batch (B, 3, N), M (3, 3) in host memory; checked by
// welford/checks.h before either build runs. The per-voxel pieces below are REGRISK_HD inline
// so that welfordCUDA.cu reuses them.
#pragma once

#include "common/array.h"
#include "common/execution.h"
#include "common/grid.h"

namespace regrisk {

// One Welford step: sample x joins an accumulator that then holds n samples (inv_n = 1 / n).
// M2 += (x - mean_old)(x - mean_new)^T, symmetric since x - mean_new = (n-1)/n (x - mean_old).
// Scalar references (not arrays) so that a CPU loop over voxels vectorises after inlining.
template <typename Acc>
REGRISK_HD void welford_step(Acc inv_n, Acc x0, Acc x1, Acc x2, Acc& m0, Acc& m1, Acc& m2,
                             Acc& sxx, Acc& sxy, Acc& sxz, Acc& syy, Acc& syz, Acc& szz) {
  const Acc d0 = x0 - m0, d1 = x1 - m1, d2 = x2 - m2;
  m0 += d0 * inv_n;
  m1 += d1 * inv_n;
  m2 += d2 * inv_n;
  const Acc e0 = x0 - m0, e1 = x1 - m1, e2 = x2 - m2;
  sxx += d0 * e0;
  sxy += d0 * e1;
  sxz += d0 * e2;
  syy += d1 * e1;
  syz += d1 * e2;
  szz += d2 * e2;
}

// The same step on array registers mean[3], m2[6].
template <typename Acc>
REGRISK_HD void welford_step(Acc inv_n, Acc x0, Acc x1, Acc x2, Acc mean[3], Acc m2[6]) {
  welford_step<Acc>(inv_n, x0, x1, x2, mean[0], mean[1], mean[2], m2[0], m2[1], m2[2], m2[3],
                    m2[4], m2[5]);
}

// Voxel v's accumulator from storage into registers, and back; components are N apart.
template <typename Acc>
REGRISK_HD void load_state(const float* mean, const float* m2, int64_t N, int64_t v, Acc mu[3],
                           Acc s[6]) {
  for (int c = 0; c < 3; ++c) mu[c] = mean[c * N + v];
  for (int c = 0; c < 6; ++c) s[c] = m2[c * N + v];
}

template <typename Acc>
REGRISK_HD void store_state(float* mean, float* m2, int64_t N, int64_t v, const Acc mu[3],
                            const Acc s[6]) {
  for (int c = 0; c < 3; ++c) mean[c * N + v] = static_cast<float>(mu[c]);
  for (int c = 0; c < 6; ++c) m2[c * N + v] = static_cast<float>(s[c]);
}

// Chan et al.: accumulator a (n_a samples) absorbs b (n_b samples); n_a + n_b > 0.
template <typename Acc>
REGRISK_HD void chan_merge(Acc n_a, Acc n_b, Acc mean_a[3], Acc m2_a[6], const Acc mean_b[3],
                           const Acc m2_b[6]) {
  const Acc n = n_a + n_b;
  const Acc d0 = mean_b[0] - mean_a[0], d1 = mean_b[1] - mean_a[1], d2 = mean_b[2] - mean_a[2];
  const Acc fb = n_b / n, fab = n_a * n_b / n;
  mean_a[0] += d0 * fb;
  mean_a[1] += d1 * fb;
  mean_a[2] += d2 * fb;
  m2_a[0] += m2_b[0] + d0 * d0 * fab;
  m2_a[1] += m2_b[1] + d0 * d1 * fab;
  m2_a[2] += m2_b[2] + d0 * d2 * fab;
  m2_a[3] += m2_b[3] + d1 * d1 * fab;
  m2_a[4] += m2_b[4] + d1 * d2 * fab;
  m2_a[5] += m2_b[5] + d2 * d2 * fab;
}

// diag(M S M^T) for the symmetric S given by its 6 upper-triangle terms (scaled by `scale`,
// i.e. 1 / (count - 1) turns M2 into the unbiased covariance). M is row-major 3x3 (voxel -> mm).
// Tiny negative rounding residue is clamped to 0 so the square roots that follow are defined;
// a NaN passes through (written so that the comparison is false for NaN), never becoming 0.
template <typename Acc>
REGRISK_HD void mapped_variances(const Acc s6[6], Acc scale, const float* M, Acc out[3]) {
  const Acc s00 = s6[0] * scale, s01 = s6[1] * scale, s02 = s6[2] * scale;
  const Acc s11 = s6[3] * scale, s12 = s6[4] * scale, s22 = s6[5] * scale;
  for (int r = 0; r < 3; ++r) {
    const Acc a = static_cast<Acc>(M[3 * r]), b = static_cast<Acc>(M[3 * r + 1]),
              c = static_cast<Acc>(M[3 * r + 2]);
    const Acc v = a * a * s00 + b * b * s11 + c * c * s22 +
                  Acc(2) * (a * b * s01 + a * c * s02 + b * c * s12);
    out[r] = v < Acc(0) ? Acc(0) : v;
  }
}

// G = M^T M as its upper triangle (xx, xy, xz, yy, yz, zz), computed once per call, so that
// tr(M S M^T) = sum_ij G_ij S_ij costs 6 multiply-adds per voxel instead of three rows.
template <typename Acc>
REGRISK_HD void gram_upper(const float* M, Acc G[6]) {
  const int idx[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};
  for (int t = 0; t < 6; ++t) {
    Acc g = Acc(0);
    for (int r = 0; r < 3; ++r)
      g += static_cast<Acc>(M[3 * r + idx[t][0]]) * static_cast<Acc>(M[3 * r + idx[t][1]]);
    G[t] = g;
  }
}

// tr(M S M^T) for S = scale * (6 upper-triangle terms), given G from gram_upper; clamped at 0,
// NaN kept NaN (a broken sample must never read as certainty).
template <typename Acc>
REGRISK_HD Acc mapped_trace(const Acc s6[6], Acc scale, const Acc G[6]) {
  const Acc t = (G[0] * s6[0] + G[3] * s6[3] + G[5] * s6[5] +
                 Acc(2) * (G[1] * s6[1] + G[2] * s6[2] + G[4] * s6[4])) * scale;
  return t < Acc(0) ? Acc(0) : t;
}

// Each op in two builds, picked by the last argument: Threads runs the C++/OpenMP build
// (welford.cpp), Stream enqueues the CUDA build (welfordCUDA.cu; M stays in host memory and
// reaches the kernels by value).

// In place: mean, m2 holding count_before samples absorb batch.
void welford_update(int64_t count_before, const Array& mean, const Array& m2, const Array& batch,
                    Threads threads);
void welford_update(int64_t count_before, const Array& mean, const Array& m2, const Array& batch,
                    Stream stream);

// In place, CPU only: three accumulators, each holding count_before samples, absorb a
// perturbation family's composed samples g, its displacements d and their float32 sums g + d
// (each (B, 3, N)): three welford_update calls and NumPy's g + d, in one pass over the voxels
// (the control variate's accumulators, regrisk.strata). A GPU run keeps the three calls.
struct WelfordState {
  Array mean, m2;
};
void welford_update_controlled(int64_t count_before, const WelfordState& g_acc,
                               const WelfordState& d_acc, const WelfordState& sum_acc,
                               const Array& g, const Array& d, Threads threads);

// In place into a: (n_a, mean_a, m2_a) absorbs (n_b, mean_b, m2_b).
void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Threads threads);
void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Stream stream);

// out (N,) = sqrt(tr(M Sigma M^T)); Sigma = m2 / (count - 1); count >= 2.
void welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                   Threads threads);
void welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                   Stream stream);

// out (3, N) = sqrt(diag(M Sigma M^T)).
void welford_axis_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                        Threads threads);
void welford_axis_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                        Stream stream);

}  // namespace regrisk
