// CPU (OpenMP) Welford statistics. Voxels are split into fixed blocks; within a block the
// accumulators live in double registers while the whole batch streams through, then go back to
// float32 storage once. Blocks are scheduled dynamically (chunk_for); every voxel's arithmetic
// is independent of the thread count and of the schedule.
#include "welford/welford.h"

#include <cmath>

#include "common/parallel.h"

namespace regrisk {
namespace {

constexpr int64_t kBlock = 256;  // voxels per block: 9 * 256 doubles stay in L1

// One block of voxels [v0, v0 + nv) absorbs the whole batch. Built for AVX2 as well where
// the compiler can (4 doubles per instruction instead of 2); the same IEEE operations run in
// either build (no FMA contraction: the clone targets avx2 only), so results do not change.
REGRISK_CPU_CLONES
void update_block(int64_t count_before, float* mean, float* m2, int64_t N, const float* batch,
                  int64_t B, int64_t v0, int64_t nv) {
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

}  // namespace

void welford_update(int64_t count_before, const Array& mean, const Array& m2, const Array& batch,
                    Threads threads) {
  const int64_t N = mean.dim(1), B = batch.dim(0), blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, cpu::chunk_for(kBlock * (B + 1))) \
    num_threads(cpu::team_for(threads.n, N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t v0 = blk * kBlock, nv = (v0 + kBlock <= N) ? kBlock : N - v0;
    update_block(count_before, mean.out(), m2.out(), N, batch.in(), B, v0, nv);
  }
}

void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Threads threads) {
  const double na = static_cast<double>(n_a), nb = static_cast<double>(n_b);
  const int64_t N = mean_a.dim(1);
  float *mean = mean_a.out(), *m2 = m2_a.out();
  const float *mean_other = mean_b.in(), *m2_other = m2_b.in();
  cpu::for_each_voxel(N, threads.n, [&](int64_t v) {
    double ma[3], qa[6], mb[3], qb[6];
    load_state<double>(mean, m2, N, v, ma, qa);
    load_state<double>(mean_other, m2_other, N, v, mb, qb);
    chan_merge<double>(na, nb, ma, qa, mb, qb);
    store_state<double>(mean, m2, N, v, ma, qa);
  });
}

void welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                   Threads threads) {
  const double scale = 1.0 / static_cast<double>(count - 1);
  const int64_t N = m2.dim(1);
  const float* q = m2.in();
  float* o = out.out();
  double G[6];
  gram_upper<double>(M.in(), G);
  cpu::for_each_voxel(N, threads.n, [&](int64_t v) {
    const double s[6] = {q[v], q[N + v], q[2 * N + v], q[3 * N + v], q[4 * N + v], q[5 * N + v]};
    o[v] = static_cast<float>(std::sqrt(mapped_trace<double>(s, scale, G)));
  });
}

void welford_axis_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                        Threads threads) {
  const double scale = 1.0 / static_cast<double>(count - 1);
  const int64_t N = m2.dim(1);
  const float *q = m2.in(), *m = M.in();
  float* o = out.out();
  cpu::for_each_voxel(N, threads.n, [&](int64_t v) {
    double s[6], var[3];
    for (int c = 0; c < 6; ++c) s[c] = q[c * N + v];
    mapped_variances<double>(s, scale, m, var);
    for (int c = 0; c < 3; ++c) o[c * N + v] = static_cast<float>(std::sqrt(var[c]));
  });
}

}  // namespace regrisk
