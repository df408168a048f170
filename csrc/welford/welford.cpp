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

// A block of voxels' accumulator in double registers: loaded from the float32 storage once,
// every sample of a batch folded in, stored back once.
template <int64_t kN>
struct BlockState {
  double mu[3][kN], s[6][kN];

  REGRISK_ALWAYS_INLINE void load(const float* mean, const float* m2, int64_t N, int64_t v0,
                                  int64_t nv) {
    for (int c = 0; c < 3; ++c)
      for (int64_t v = 0; v < nv; ++v) mu[c][v] = mean[c * N + v0 + v];
    for (int c = 0; c < 6; ++c)
      for (int64_t v = 0; v < nv; ++v) s[c][v] = m2[c * N + v0 + v];
  }
  REGRISK_ALWAYS_INLINE void step(int64_t v, double inv_n, double x0, double x1, double x2) {
    welford_step<double>(inv_n, x0, x1, x2, mu[0][v], mu[1][v], mu[2][v], s[0][v], s[1][v],
                         s[2][v], s[3][v], s[4][v], s[5][v]);
  }
  REGRISK_ALWAYS_INLINE void store(float* mean, float* m2, int64_t N, int64_t v0,
                                   int64_t nv) const {
    for (int c = 0; c < 3; ++c)
      for (int64_t v = 0; v < nv; ++v) mean[c * N + v0 + v] = static_cast<float>(mu[c][v]);
    for (int c = 0; c < 6; ++c)
      for (int64_t v = 0; v < nv; ++v) m2[c * N + v0 + v] = static_cast<float>(s[c][v]);
  }
};

// One block of voxels [v0, v0 + nv) absorbs the whole batch. Built for AVX2 as well where
// the compiler can (4 doubles per instruction instead of 2); the same IEEE operations run in
// either build (no FMA contraction: the clone targets avx2 only), so results do not change.
REGRISK_CPU_CLONES
void update_block(int64_t count_before, float* mean, float* m2, int64_t N, const float* batch,
                  int64_t B, int64_t v0, int64_t nv) {
  BlockState<kBlock> st;
  st.load(mean, m2, N, v0, nv);
  for (int64_t b = 0; b < B; ++b) {
    const double inv_n = 1.0 / static_cast<double>(count_before + b + 1);
    const float* x = batch + b * 3 * N + v0;
#pragma omp simd
    for (int64_t v = 0; v < nv; ++v) st.step(v, inv_n, x[v], x[N + v], x[2 * N + v]);
  }
  st.store(mean, m2, N, v0, nv);
}

// Chan's merge on one block of voxels, the arithmetic of chan_merge term for term; pointers
// that cannot alias let the compiler vectorise what the per-voxel arrays kept scalar.
struct MergeFactors {
  double fb, fab;
};

void merge_block(MergeFactors f, float* __restrict mean, float* __restrict m2,
                 const float* __restrict mean_b, const float* __restrict m2_b, int64_t N,
                 int64_t v0, int64_t nv) {
  static constexpr int kPair[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};
  double d[3][kBlock];
  for (int c = 0; c < 3; ++c) {
    float* __restrict ma = mean + c * N + v0;
    const float* __restrict mb = mean_b + c * N + v0;
#pragma omp simd
    for (int64_t v = 0; v < nv; ++v) {
      const double a = ma[v];
      d[c][v] = static_cast<double>(mb[v]) - a;
      ma[v] = static_cast<float>(a + d[c][v] * f.fb);
    }
  }
  for (int t = 0; t < 6; ++t) {
    float* __restrict qa = m2 + t * N + v0;
    const float* __restrict qb = m2_b + t * N + v0;
    const double* __restrict di = d[kPair[t][0]];
    const double* __restrict dj = d[kPair[t][1]];
#pragma omp simd
    for (int64_t v = 0; v < nv; ++v)
      qa[v] = static_cast<float>(static_cast<double>(qa[v]) +
                                 (static_cast<double>(qb[v]) + di[v] * dj[v] * f.fab));
  }
}

// mapped_variances' per-row products of M, formed once per call as it forms them per voxel
// (a * a * s is (a * a) * s), so the blocked loop below gives its bits.
struct AxisRows {
  double aa[3], bb[3], cc[3], ab[3], ac[3], bc[3];
};

AxisRows axis_rows(const float* M) {
  AxisRows r{};
  for (int i = 0; i < 3; ++i) {
    const double a = M[3 * i], b = M[3 * i + 1], c = M[3 * i + 2];
    r.aa[i] = a * a, r.bb[i] = b * b, r.cc[i] = c * c;
    r.ab[i] = a * b, r.ac[i] = a * c, r.bc[i] = b * c;
  }
  return r;
}

// One world axis' sigma on a block: sqrt of mapped_variances' row r, clamped the same way
// (a NaN stays NaN).
void axis_sigma_block(const AxisRows& rows, int r, double scale, const float* __restrict q,
                      int64_t N, int64_t v0, int64_t nv, float* __restrict o) {
  const double aa = rows.aa[r], bb = rows.bb[r], cc = rows.cc[r];
  const double ab = rows.ab[r], ac = rows.ac[r], bc = rows.bc[r];
#pragma omp simd
  for (int64_t v = v0; v < v0 + nv; ++v) {
    const double s00 = q[v] * scale, s01 = q[N + v] * scale, s02 = q[2 * N + v] * scale;
    const double s11 = q[3 * N + v] * scale, s12 = q[4 * N + v] * scale;
    const double s22 = q[5 * N + v] * scale;
    const double x = aa * s00 + bb * s11 + cc * s22 + 2.0 * (ab * s01 + ac * s02 + bc * s12);
    o[v] = static_cast<float>(std::sqrt(x < 0.0 ? 0.0 : x));
  }
}

// The control variate's three accumulators on one block: the states of g, d and g + d in
// double registers (27 x 128 doubles: L1) while the batch streams through once; each sees the
// steps update_block would give it, and g + d is formed in float32 as NumPy forms it.
constexpr int64_t kControlledBlock = 128;

struct Storage {
  float* mean;
  float* m2;
};

REGRISK_CPU_CLONES
void controlled_block(int64_t count_before, const Storage acc[3], int64_t N,
                      const float* __restrict g, const float* __restrict d, int64_t B,
                      int64_t v0, int64_t nv) {
  BlockState<kControlledBlock> st[3];
  for (int a = 0; a < 3; ++a) st[a].load(acc[a].mean, acc[a].m2, N, v0, nv);
  for (int64_t b = 0; b < B; ++b) {
    const double inv_n = 1.0 / static_cast<double>(count_before + b + 1);
    const float* xg = g + b * 3 * N + v0;
    const float* xd = d + b * 3 * N + v0;
#pragma omp simd
    for (int64_t v = 0; v < nv; ++v) {
      const float g0 = xg[v], g1 = xg[N + v], g2 = xg[2 * N + v];
      const float d0 = xd[v], d1 = xd[N + v], d2 = xd[2 * N + v];
      st[0].step(v, inv_n, g0, g1, g2);
      st[1].step(v, inv_n, d0, d1, d2);
      st[2].step(v, inv_n, g0 + d0, g1 + d1, g2 + d2);  // float32 sums, as NumPy's g + d
    }
  }
  for (int a = 0; a < 3; ++a) st[a].store(acc[a].mean, acc[a].m2, N, v0, nv);
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

void welford_update_controlled(int64_t count_before, const WelfordState& g_acc,
                               const WelfordState& d_acc, const WelfordState& sum_acc,
                               const Array& g, const Array& d, Threads threads) {
  const int64_t N = g_acc.mean.dim(1), B = g.dim(0);
  const int64_t blocks = (N + kControlledBlock - 1) / kControlledBlock;
  const Storage acc[3] = {{g_acc.mean.out(), g_acc.m2.out()}, {d_acc.mean.out(), d_acc.m2.out()},
                          {sum_acc.mean.out(), sum_acc.m2.out()}};
#pragma omp parallel for schedule(dynamic, cpu::chunk_for(kControlledBlock * (B + 1))) \
    num_threads(cpu::team_for(threads.n, N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t v0 = blk * kControlledBlock;
    const int64_t nv = (v0 + kControlledBlock <= N) ? kControlledBlock : N - v0;
    controlled_block(count_before, acc, N, g.in(), d.in(), B, v0, nv);
  }
}

void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Threads threads) {
  const double na = static_cast<double>(n_a), nb = static_cast<double>(n_b), n = na + nb;
  const MergeFactors f{nb / n, na * nb / n};  // chan_merge's factors, formed as it forms them
  const int64_t N = mean_a.dim(1), blocks = (N + kBlock - 1) / kBlock;
  float *mean = mean_a.out(), *m2 = m2_a.out();
  const float *mean_other = mean_b.in(), *m2_other = m2_b.in();
#pragma omp parallel for schedule(dynamic, cpu::chunk_for(kBlock)) \
    num_threads(cpu::team_for(threads.n, N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t v0 = blk * kBlock, nv = (v0 + kBlock <= N) ? kBlock : N - v0;
    merge_block(f, mean, m2, mean_other, m2_other, N, v0, nv);
  }
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
  const int64_t N = m2.dim(1), blocks = (N + kBlock - 1) / kBlock;
  const AxisRows rows = axis_rows(M.in());
  const float* q = m2.in();
  float* o = out.out();
#pragma omp parallel for schedule(dynamic, cpu::chunk_for(kBlock)) \
    num_threads(cpu::team_for(threads.n, N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t v0 = blk * kBlock, nv = (v0 + kBlock <= N) ? kBlock : N - v0;
    for (int r = 0; r < 3; ++r) axis_sigma_block(rows, r, scale, q, N, v0, nv, o + r * N);
  }
}

}  // namespace regrisk
