// CPU (OpenMP) Welford statistics. Voxels are split into fixed blocks; within a block the
// accumulators live in double registers while the whole batch streams through, then go back to
// float32 storage once. Blocks are scheduled dynamically (chunk_for); every voxel's arithmetic
// is independent of the thread count and of the schedule.
#include "welford/welford.h"
#include "warp/warp.h"  // team_for

#include <cmath>

namespace regrisk {
namespace cpu {
namespace {
constexpr int64_t kBlock = 256;  // voxels per block: 9 * 256 doubles stay in L1
}

// One block of voxels [v0, v0 + nv) absorbs the whole batch. Built for AVX2 as well where
// the compiler can (4 doubles per instruction instead of 2); the same IEEE operations run in
// either build (no FMA contraction: the clone targets avx2 only), so results do not change.
REGRISK_CPU_CLONES
static void update_block(int64_t count_before, float* mean, float* m2, int64_t N,
                         const float* batch, int64_t B, int64_t v0, int64_t nv) {
  double mu[3][kBlock], s[6][kBlock];
  for (int c = 0; c < 3; ++c)
    for (int64_t v = 0; v < nv; ++v) mu[c][v] = mean[c * N + v0 + v];
  for (int c = 0; c < 6; ++c)
    for (int64_t v = 0; v < nv; ++v) s[c][v] = m2[c * N + v0 + v];
  for (int64_t b = 0; b < B; ++b) {
    const double inv_n = 1.0 / static_cast<double>(count_before + b + 1);
    const float* x = batch + b * 3 * N + v0;
#pragma omp simd
    for (int64_t v = 0; v < nv; ++v) {
      welford_step<double>(inv_n, x[v], x[N + v], x[2 * N + v], mu[0][v], mu[1][v], mu[2][v],
                           s[0][v], s[1][v], s[2][v], s[3][v], s[4][v], s[5][v]);
    }
  }
  for (int c = 0; c < 3; ++c)
    for (int64_t v = 0; v < nv; ++v) mean[c * N + v0 + v] = static_cast<float>(mu[c][v]);
  for (int c = 0; c < 6; ++c)
    for (int64_t v = 0; v < nv; ++v) m2[c * N + v0 + v] = static_cast<float>(s[c][v]);
}

void welford_update(int64_t count_before, float* mean, float* m2, int64_t N, const float* batch,
                    int64_t B, int threads) {
  const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, chunk_for(kBlock * (B + 1))) \
    num_threads(team_for(threads, N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t v0 = blk * kBlock, nv = (v0 + kBlock <= N) ? kBlock : N - v0;
    update_block(count_before, mean, m2, N, batch, B, v0, nv);
  }
}

void welford_merge(int64_t n_a, float* mean_a, float* m2_a, int64_t n_b, const float* mean_b,
                   const float* m2_b, int64_t N, int threads) {
  const double na = static_cast<double>(n_a), nb = static_cast<double>(n_b);
#pragma omp parallel for schedule(dynamic, 16384) num_threads(team_for(threads, N))
  for (int64_t v = 0; v < N; ++v) {
    double ma[3], qa[6], mb[3], qb[6];
    for (int c = 0; c < 3; ++c) {
      ma[c] = mean_a[c * N + v];
      mb[c] = mean_b[c * N + v];
    }
    for (int c = 0; c < 6; ++c) {
      qa[c] = m2_a[c * N + v];
      qb[c] = m2_b[c * N + v];
    }
    chan_merge<double>(na, nb, ma, qa, mb, qb);
    for (int c = 0; c < 3; ++c) mean_a[c * N + v] = static_cast<float>(ma[c]);
    for (int c = 0; c < 6; ++c) m2_a[c * N + v] = static_cast<float>(qa[c]);
  }
}

void welford_sigma(int64_t count, const float* m2, int64_t N, const float* M, float* out,
                   int threads) {
  const double scale = 1.0 / static_cast<double>(count - 1);
  double G[6];
  gram_upper<double>(M, G);
#pragma omp parallel for schedule(dynamic, 16384) num_threads(team_for(threads, N))
  for (int64_t v = 0; v < N; ++v) {
    const double q[6] = {m2[v], m2[N + v], m2[2 * N + v], m2[3 * N + v], m2[4 * N + v],
                         m2[5 * N + v]};
    out[v] = static_cast<float>(std::sqrt(mapped_trace<double>(q, scale, G)));
  }
}

void welford_axis_sigma(int64_t count, const float* m2, int64_t N, const float* M, float* out,
                        int threads) {
  const double scale = 1.0 / static_cast<double>(count - 1);
#pragma omp parallel for schedule(dynamic, 16384) num_threads(team_for(threads, N))
  for (int64_t v = 0; v < N; ++v) {
    double q[6], var[3];
    for (int c = 0; c < 6; ++c) q[c] = m2[c * N + v];
    mapped_variances<double>(q, scale, M, var);
    for (int c = 0; c < 3; ++c) out[c * N + v] = static_cast<float>(std::sqrt(var[c]));
  }
}

}  // namespace cpu
}  // namespace regrisk
