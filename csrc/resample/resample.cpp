// CPU (OpenMP) upsample2 and average_pool. upsample2 runs three passes, one per axis, through
// two scratch volumes; each pass is parallel over output planes. average_pool is parallel over
// output rows. See resample.h for the arithmetic (kept in float32, in the order written).
#include "resample/resample.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/parallel.h"

namespace regrisk {
namespace {

constexpr float kNear = 0.75f, kFar = 0.25f;

// The neighbour an output index o of a doubled axis of n input points blends in.
inline int64_t neighbour(int64_t o, int64_t n) {
  const int64_t m = o / 2;
  return (o % 2 == 0) ? std::max<int64_t>(m - 1, 0) : std::min<int64_t>(m + 1, n - 1);
}

// o[x] = .75 a[x] + .25 b[x] for x < n.
REGRISK_CPU_CLONES void blend(const float* __restrict a, const float* __restrict b,
                              float* __restrict o, int64_t n) {
  for (int64_t x = 0; x < n; ++x) o[x] = kNear * a[x] + kFar * b[x];
}

// body(v, p) for every plane p < planes of `volumes` volumes, in parallel.
template <class Body>
void each_plane(int64_t volumes, int64_t planes, int64_t work, int threads, Body&& body) {
  const int64_t total = volumes * planes;
#pragma omp parallel for schedule(static) num_threads(cpu::team_for(threads, work))
  for (int64_t r = 0; r < total; ++r) body(r / planes, r % planes);
}

// in (C, d, h, w) -> out (C, 2d, h, w): whole planes blended.
void double_i(const float* in, float* out, int64_t C, Grid3 g, int threads) {
  const int64_t plane = g.h * g.w, n_in = g.size(), n_out = 2 * n_in;
  each_plane(C, 2 * g.d, C * n_out, threads, [&](int64_t c, int64_t o) {
    blend(in + c * n_in + (o / 2) * plane, in + c * n_in + neighbour(o, g.d) * plane,
          out + c * n_out + o * plane, plane);
  });
}

// in (C, D, h, w) -> out (C, D, 2h, w): rows blended within each plane.
void double_j(const float* in, float* out, int64_t C, Grid3 g, int threads) {
  const int64_t n_in = g.size(), n_out = 2 * n_in;
  each_plane(C, g.d, C * n_out, threads, [&](int64_t c, int64_t i) {
    const float* p = in + c * n_in + i * g.h * g.w;
    float* q = out + c * n_out + i * 2 * g.h * g.w;
    for (int64_t o = 0; o < 2 * g.h; ++o)
      blend(p + (o / 2) * g.w, p + neighbour(o, g.h) * g.w, q + o * g.w, g.w);
  });
}

REGRISK_CPU_CLONES void double_row(const float* __restrict p, float* __restrict q, int64_t w) {
  for (int64_t o = 0; o < 2 * w; ++o) q[o] = kNear * p[o / 2] + kFar * p[neighbour(o, w)];
}

// in (C, D, H, w) -> out (C, D, H, 2w): values blended within each row.
void double_k(const float* in, float* out, int64_t C, Grid3 g, int threads) {
  const int64_t n_in = g.size(), n_out = 2 * n_in;
  each_plane(C, g.d, C * n_out, threads, [&](int64_t c, int64_t i) {
    for (int64_t j = 0; j < g.h; ++j) {
      const int64_t row = i * g.h + j;
      double_row(in + c * n_in + row * g.w, out + c * n_out + row * 2 * g.w, g.w);
    }
  });
}

// Two scratch volumes of at least n_a and n_b floats, kept on the calling thread between calls
// (a staged pass calls with the same sizes every time: no new pages to fault in).
std::pair<float*, float*> scratch(size_t n_a, size_t n_b) {
  thread_local std::vector<float> a, b;
  if (a.size() < n_a) a.resize(n_a);
  if (b.size() < n_b) b.resize(n_b);
  return {a.data(), b.data()};
}

REGRISK_CPU_CLONES void pool_row(const float* __restrict in, float* __restrict out, Grid3 g,
                                 int64_t i, int64_t j, int64_t w_out, int f, float scale) {
  for (int64_t k = 0; k < w_out; ++k) {
    float acc = 0.0f;
    for (int a = 0; a < f; ++a)
      for (int b = 0; b < f; ++b) {
        const float* src = in + ((i * f + a) * g.h + (j * f + b)) * g.w + k * f;
        for (int c = 0; c < f; ++c) acc += src[c];
      }
    out[k] = acc * scale;
  }
}

}  // namespace

void upsample2(const Array& volume, const Array& out, Threads threads) {
  const Grid3 g = volume.grid(2);
  const int64_t C = volume.dim(0) * volume.dim(1), n = C * g.size();
  const auto [s1, s2] = scratch(static_cast<size_t>(2 * n), static_cast<size_t>(4 * n));
  double_i(volume.in(), s1, C, g, threads.n);
  double_j(s1, s2, C, Grid3{2 * g.d, g.h, g.w}, threads.n);
  double_k(s2, out.out(), C, Grid3{2 * g.d, 2 * g.h, g.w}, threads.n);
}

void average_pool(const Array& volume, int factor, const Array& out, Threads threads) {
  const Grid3 g = volume.grid(2), o = out.grid(2);
  const int64_t C = volume.dim(0) * volume.dim(1);
  const float scale = static_cast<float>(1.0 / (double(factor) * factor * factor));
  const float* in = volume.in();
  float* dst = out.out();
  cpu::for_each_row(C, o, o.w, C * g.size(), threads.n, [&](int64_t c, int64_t i, int64_t j) {
    pool_row(in + c * g.size(), dst + c * o.size() + (i * o.h + j) * o.w, g, i, j, o.w,
             factor, scale);
  });
}

}  // namespace regrisk
