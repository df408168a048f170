// CPU (OpenMP) demons step and Gaussian smoothing. Passes parallel over planes i: the demons
// update v (one row of k at a time, so the gradient's neighbours along i and j are rows of sw),
// then the Gaussian along i, j and k, between two scratch volumes and out. Every output value
// is computed whole by one thread in a fixed order: results do not depend on the team size.
#include "demons/demons.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/parallel.h"
#include "warp/warp.h"

namespace regrisk {
namespace {

// Offset of row (i, j) in a volume of grid g.
inline int64_t row_at(Grid3 g, int64_t i, int64_t j) { return (i * g.h + j) * g.w; }

// The update v for row (i, j). Central differences, zero on the faces: a face row's
// neighbours along i or j are itself with weight 0, and along k the two end values are done
// apart, so the loop has no branches and vectorises.
REGRISK_ALWAYS_INLINE void update_voxel(const float* __restrict sw, const float* __restrict t,
                                        const float* __restrict gt, const float* __restrict u,
                                        float* __restrict v, int64_t n, int64_t x, float di,
                                        float dj, float dk, float tau, float alpha, float eps) {
  const float d = sw[x] - t[x];
  const float gi = 0.5f * (gt[x] + di), gj = 0.5f * (gt[n + x] + dj),
              gk = 0.5f * (gt[2 * n + x] + dk);
  const float step = tau * d / (gi * gi + gj * gj + gk * gk + alpha * d * d + eps);
  v[x] = u[x] - step * gi;
  v[n + x] = u[n + x] - step * gj;
  v[2 * n + x] = u[2 * n + x] - step * gk;
}

REGRISK_CPU_CLONES void update_row(const float* __restrict sw, const float* __restrict t,
                                   const float* __restrict gt, const float* __restrict u,
                                   float* __restrict v, Grid3 g, int64_t i, int64_t j,
                                   float tau, float alpha, float eps) {
  const int64_t r = row_at(g, i, j), W = g.w, n = g.size();
  const bool inner_i = i > 0 && i < g.d - 1, inner_j = j > 0 && j < g.h - 1;
  const float ci = inner_i ? 0.5f : 0.0f, cj = inner_j ? 0.5f : 0.0f;
  const float* up_i = sw + (inner_i ? row_at(g, i + 1, j) : r);
  const float* dn_i = sw + (inner_i ? row_at(g, i - 1, j) : r);
  const float* up_j = sw + (inner_j ? row_at(g, i, j + 1) : r);
  const float* dn_j = sw + (inner_j ? row_at(g, i, j - 1) : r);
  const float* s = sw + r;
  for (int64_t k = 1; k < W - 1; ++k)
    update_voxel(sw, t, gt, u, v, n, r + k, ci * (up_i[k] - dn_i[k]), cj * (up_j[k] - dn_j[k]),
                 0.5f * (s[k + 1] - s[k - 1]), tau, alpha, eps);
  for (int64_t k : {int64_t(0), W - 1}) {
    if (k == W - 1 && W == 1) break;
    update_voxel(sw, t, gt, u, v, n, r + k, ci * (up_i[k] - dn_i[k]), cj * (up_j[k] - dn_j[k]),
                 0.0f, tau, alpha, eps);
  }
}

// The Gaussian along one axis for one plane i of one channel (H x W values, contiguous). Along
// i the taps are other planes; along j and k they are the same plane shifted by q W or q
// elements. Either way each output chunk of kLanes values sums its 2R + 1 shifted source
// chunks in registers (one store per value, not one per tap); the rows (along j) and columns
// (along k) within R of a face take their taps clamped.
constexpr int kLanes = 32;

// Eight floats as one value (GCC/Clang vector extension): AVX registers in the AVX2 build, SSE
// pairs otherwise; the accumulators below then stay in registers across the taps.
typedef float Vec8 __attribute__((vector_size(32)));

// o[m] = sum_q w[q] src_q[m] for m < n, src_q = tap(q) (a pointer per tap).
template <class Tap>
REGRISK_ALWAYS_INLINE void taps(float* __restrict o, int64_t n, const float* w, int R, Tap tap) {
  int64_t m = 0;
  for (; m + kLanes <= n; m += kLanes) {
    Vec8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int q = -R; q <= R; ++q) {
      const float wq = w[q + R];
      const float* src = tap(q) + m;
      Vec8 x0, x1, x2, x3;  // unaligned loads
      __builtin_memcpy(&x0, src, sizeof x0);
      __builtin_memcpy(&x1, src + 8, sizeof x1);
      __builtin_memcpy(&x2, src + 16, sizeof x2);
      __builtin_memcpy(&x3, src + 24, sizeof x3);
      a0 += wq * x0;
      a1 += wq * x1;
      a2 += wq * x2;
      a3 += wq * x3;
    }
    __builtin_memcpy(o + m, &a0, sizeof a0);
    __builtin_memcpy(o + m + 8, &a1, sizeof a1);
    __builtin_memcpy(o + m + 16, &a2, sizeof a2);
    __builtin_memcpy(o + m + 24, &a3, sizeof a3);
  }
  for (; m + 8 <= n; m += 8) {  // short rows (coarse levels) and the remainder
    Vec8 a = {};
    for (int q = -R; q <= R; ++q) {
      Vec8 x;
      __builtin_memcpy(&x, tap(q) + m, sizeof x);
      a += w[q + R] * x;
    }
    __builtin_memcpy(o + m, &a, sizeof a);
  }
  for (; m < n; ++m) {
    float acc = 0.0f;
    for (int q = -R; q <= R; ++q) acc += w[q + R] * tap(q)[m];
    o[m] = acc;
  }
}

// Along i for one block of columns [m0, m0 + len) of every plane of one channel, through a
// copy of the block with its rows len + 16 floats apart: the D x len values stay in cache
// across the 2R + 1 planes each output reads (plane by plane, a wide kernel streamed 2R + 1
// planes from memory per output plane), and the rows of the copy do not share cache sets as
// planes a power of two apart do. The same sums in the same order as plane by plane: blocks
// start at multiples of kLanes.
REGRISK_CPU_CLONES void smooth_block_i(const float* in, float* out, Grid3 g, int64_t m0,
                                       int64_t len, const float* w, int R) {
  const int64_t n = g.h * g.w, stride = len + 16;
  thread_local std::vector<float> block;
  block.resize(static_cast<size_t>(g.d * stride));
  for (int64_t i = 0; i < g.d; ++i)
    std::copy(in + i * n + m0, in + i * n + m0 + len, block.data() + i * stride);
  const float* b = block.data();
  for (int64_t i = 0; i < g.d; ++i)
    taps(out + i * n + m0, len, w, R,
         [&](int q) { return b + std::clamp<int64_t>(i + q, 0, g.d - 1) * stride; });
}

REGRISK_CPU_CLONES void smooth_plane_j(const float* in, float* out, Grid3 g, int64_t i,
                                       const float* w, int R) {
  const int64_t W = g.w, H = g.h;
  const float* p = in + i * H * W;
  float* o = out + i * H * W;
  const int64_t lo = std::min<int64_t>(R, H), hi = std::max<int64_t>(lo, H - R);
  if (hi > lo) taps(o + lo * W, (hi - lo) * W, w, R, [&](int q) { return p + (lo + q) * W; });
  for (int64_t j = 0; j < H; ++j) {
    if (j >= lo && j < hi) continue;
    taps(o + j * W, W, w, R, [&](int q) { return p + std::clamp<int64_t>(j + q, 0, H - 1) * W; });
  }
}

REGRISK_CPU_CLONES void smooth_plane_k(const float* in, float* out, Grid3 g, int64_t i,
                                       const float* w, int R) {
  const int64_t W = g.w, n = g.h * g.w;
  // each row from a copy with R end values replicated on either side: every value through the
  // vector loop (the ends were scalar: 2R of W values, half of them for a wide kernel); the
  // copy is kept per thread (a demons step calls this for every plane of every channel)
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(W + 2 * R));
  for (int64_t j = 0; j < g.h; ++j) {
    const float* p = in + i * n + j * W;
    for (int64_t a = 0; a < R; ++a) {
      row[a] = p[0];
      row[W + R + a] = p[W - 1];
    }
    std::copy(p, p + W, row.begin() + R);
    taps(out + i * n + j * W, W, w, R, [&](int q) { return row.data() + R + q; });
  }
}

// body(volume v, plane i) over every plane of `volumes` volumes of grid g.
template <class Body>
void planes(int64_t volumes, Grid3 g, int threads, Body&& body) {
  const int64_t total = volumes * g.d;
#pragma omp parallel for schedule(static) num_threads(cpu::team_for(threads, volumes * g.size()))
  for (int64_t r = 0; r < total; ++r) body(r / g.d, r % g.d);
}

// One axis's filter: 2R + 1 weights.
struct Taps {
  const float* w;
  int R;
};

Taps taps_of(const Array& kernel) { return Taps{kernel.in(), static_cast<int>(kernel.dim(0) / 2)}; }

// Along i (in -> s1), j (s1 -> s2) and k (s2 -> out) for `channels` volumes on grid g; s2 may
// be in (it is read only by the first pass).
void smooth_channels(const float* in, float* out, int64_t channels, Grid3 g, const Taps k[3],
                     int threads, float* s1, float* s2) {
  const int64_t n = g.size(), plane = g.h * g.w;
  constexpr int64_t kBlock = 16 * kLanes;  // 2 KB of a plane: D of them fit in L2
  const int64_t blocks = (plane + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(cpu::team_for(threads, channels * n))
  for (int64_t r = 0; r < channels * blocks; ++r) {
    const int64_t c = r / blocks, m0 = (r % blocks) * kBlock;
    smooth_block_i(in + c * n, s1 + c * n, g, m0, std::min(kBlock, plane - m0), k[0].w, k[0].R);
  }
  planes(channels, g, threads, [&](int64_t c, int64_t i) {
    smooth_plane_j(s1 + c * n, s2 + c * n, g, i, k[1].w, k[1].R);
  });
  planes(channels, g, threads, [&](int64_t c, int64_t i) {
    smooth_plane_k(s2 + c * n, out + c * n, g, i, k[2].w, k[2].R);
  });
}

// Two scratch volumes of n floats, kept between calls on the calling thread (a demons level
// calls 20 times on the same grid: fresh allocations of this size are new pages, and their
// faults cost as much as the arithmetic). Pointers are handed to the parallel loops: a lambda
// does not capture a thread_local, and the team's other threads would see their own.
std::pair<float*, float*> scratch(size_t n) {
  thread_local std::vector<float> a, b;
  if (a.size() < n) {
    a.resize(n);
    b.resize(n);
  }
  return {a.data(), b.data()};
}

}  // namespace

void demons_step(const Array& sw, const Array& t, const Array& gt, const Array& u,
                 const Array& kernel, const Array& out, float tau, float alpha, float eps,
                 Threads threads) {
  const Grid3 g = sw.grid(2);
  const int64_t B = sw.dim(0), n = g.size();
  const auto [V, TMP] = scratch(static_cast<size_t>(B * 3 * n));
  const float *S = sw.in(), *T = t.in(), *GT = gt.in(), *U = u.in();
  planes(B, g, threads.n, [&, V = V](int64_t b, int64_t i) {
    for (int64_t j = 0; j < g.h; ++j)
      update_row(S + b * n, T + b * n, GT + b * 3 * n, U + b * 3 * n, V + b * 3 * n, g, i, j,
                 tau, alpha, eps);
  });
  const Taps k[3] = {taps_of(kernel), taps_of(kernel), taps_of(kernel)};
  smooth_channels(V, out.out(), B * 3, g, k, threads.n, TMP, V);
}

namespace {

// An Array over memory of this file's own (the scratch of demons_steps), shaped like `like`
// with `channels` channels.
Array own_array(const char* name, float* data, const Array& like, int64_t channels) {
  Array a;
  a.name = name;
  a.ndim = 5;
  for (int axis = 0; axis < 5; ++axis) a.shape[axis] = like.dim(axis);
  a.shape[1] = channels;
  a.data = reinterpret_cast<std::uintptr_t>(data);
  a.nbytes = static_cast<int64_t>(sizeof(float)) * like.dim(0) * channels * like.grid(2).size();
  a.float32 = a.c_contiguous = a.aligned = a.writable = true;
  return a;
}

}  // namespace

void demons_steps(const Array& s, const Array& t, const Array& gt, const Array& u,
                  const Array& kernel, const Array& out, int steps, float tau, float alpha,
                  float eps, Threads threads) {
  const int64_t B = s.dim(0), n = s.grid(2).size();
  if (steps == 0) {
    std::copy(u.in(), u.in() + B * 3 * n, out.out());
    return;
  }
  // the warped source and two fields in turn, kept per calling thread (see scratch())
  thread_local std::vector<float> warped, field_a, field_b;
  warped.resize(static_cast<size_t>(B * n));
  field_a.resize(static_cast<size_t>(B * 3 * n));
  field_b.resize(static_cast<size_t>(B * 3 * n));
  const Array sw = own_array("sw", warped.data(), s, 1);
  Array current = u;
  for (int step = 0; step < steps; ++step) {
    warp_displacement(s, current, sw, 0.0f, Boundary::Border, threads);
    const Array next = step == steps - 1
                           ? out
                           : own_array("u", (step % 2 ? field_b : field_a).data(), u, 3);
    demons_step(sw, t, gt, current, kernel, next, tau, alpha, eps, threads);
    current = next;
  }
}

void gaussian_smooth(const Array& volume, const Array& ki, const Array& kj, const Array& kk,
                     const Array& out, Threads threads) {
  const Grid3 g = volume.grid(2);
  const int64_t channels = volume.dim(0) * volume.dim(1);
  const auto [s1, s2] = scratch(static_cast<size_t>(channels * g.size()));
  const Taps k[3] = {taps_of(ki), taps_of(kj), taps_of(kk)};
  smooth_channels(volume.in(), out.out(), channels, g, k, threads.n, s1, s2);
}

}  // namespace regrisk
