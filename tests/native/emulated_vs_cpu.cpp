// The CUDA sources (compiled on the host with cuda_emu.h) against the CPU kernels on random
// inputs: every op is called through its two overloads, Threads (C++/OpenMP) and Stream (CUDA),
// on the same arrays, after the op's own argument check. Prints one line per comparison
// ("ok" or "FAIL") and exits non-zero on any failure. Built and run by test_cuda_kernels.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <vector>

#include "cuda_emu.h"  // emu_threads

#include "bspline/bspline.h"
#include "bspline/checks.h"
#include "compose/checks.h"
#include "compose/compose.h"
#include "warp/checks.h"
#include "warp/warp.h"
#include "welford/checks.h"
#include "welford/welford.h"

using namespace regrisk;
using Vec = std::vector<float>;

namespace {

std::mt19937 gen(42);
int fails = 0;
const Threads kCpu{1};
const Stream kGpu{0, 0};

Vec rnd(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// An Array over v, as a binding would hand it over.
Array arr(const Vec& v, std::initializer_list<int64_t> shape, const char* name = "a") {
  Array a;
  a.name = name;
  a.ndim = static_cast<int>(shape.size());
  std::copy(shape.begin(), shape.end(), a.shape);
  a.data = reinterpret_cast<std::uintptr_t>(v.data());
  a.nbytes = static_cast<int64_t>(v.size() * sizeof(float));
  a.float32 = a.c_contiguous = a.aligned = a.writable = true;
  return a;
}

void report(const char* what, const Vec& a, const Vec& b, double tol = 1e-5) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  const bool ok = d <= tol;  // NaN fails
  std::printf("%-44s max|diff| = %.3g %s\n", what, d, ok ? "ok" : "FAIL");
  if (!ok) ++fails;
}

void affine_batch(Vec& aff, int64_t B) {
  for (int64_t k = 0; k < B; ++k) {
    for (int r = 0; r < 3; ++r) {
      aff[k * 12 + r * 5] += 1;      // the diagonal
      aff[k * 12 + r * 4 + 3] *= 30;  // the shift, large: many points fall outside
    }
  }
}

struct Shape {
  int64_t D, H, W;
};

void warps_and_compositions(Shape s, bool border, bool per_item) {
  const int64_t C = 2, B = 3, Bv = per_item ? B : 1;
  const Grid3 in{s.D, s.H, s.W}, og{s.D + 1, s.H, std::max<int64_t>(1, s.W - 1)};
  const Boundary mode = boundary_of(border);
  char buf[128];
  Vec vol = rnd(Bv * C * in.size(), -1, 2), disp = rnd(B * 3 * og.size(), -20, 20);
  Vec a(B * C * og.size()), b(a.size(), -999);
  const Array V = arr(vol, {Bv, C, in.d, in.h, in.w}), U = arr(disp, {B, 3, og.d, og.h, og.w});
  check_warp_displacement(V, U, arr(a, {B, C, og.d, og.h, og.w}));
  warp_displacement(V, U, arr(a, {B, C, og.d, og.h, og.w}), -0.5f, mode, kCpu);
  warp_displacement(V, U, arr(b, {B, C, og.d, og.h, og.w}), -0.5f, mode, kGpu);
  std::snprintf(buf, 128, "warp_disp %ldx%ldx%ld b%d bv%ld", s.D, s.H, s.W, border, Bv);
  report(buf, a, b);

  Vec aff = rnd(B * 12, -0.3f, 0.3f);
  affine_batch(aff, B);
  std::fill(b.begin(), b.end(), -999);
  const Array A = arr(aff, {B, 3, 4});
  check_warp_affine(V, A, arr(a, {B, C, og.d, og.h, og.w}));
  warp_affine(V, A, arr(a, {B, C, og.d, og.h, og.w}), 0.25f, mode, kCpu);
  warp_affine(V, A, arr(b, {B, C, og.d, og.h, og.w}), 0.25f, mode, kGpu);
  std::snprintf(buf, 128, "warp_affine %ldx%ldx%ld b%d bv%ld", s.D, s.H, s.W, border, Bv);
  report(buf, a, b);

  // compose: the displacement on grid `in`, the field on og.
  Vec u = rnd(B * 3 * in.size(), -5, 5), fld = rnd(Bv * 3 * og.size(), -3, 3);
  Vec ca(B * 3 * in.size()), cb(ca.size(), -999);
  const Array Ud = arr(u, {B, 3, in.d, in.h, in.w}), F = arr(fld, {Bv, 3, og.d, og.h, og.w});
  check_compose_field(Ud, F, arr(ca, {B, 3, in.d, in.h, in.w}));
  compose_field(Ud, F, arr(ca, {B, 3, in.d, in.h, in.w}), 0.5f, mode, kCpu);
  compose_field(Ud, F, arr(cb, {B, 3, in.d, in.h, in.w}), 0.5f, mode, kGpu);
  std::snprintf(buf, 128, "compose_field %ldx%ldx%ld b%d bf%ld", s.D, s.H, s.W, border, Bv);
  report(buf, ca, cb);

  std::fill(cb.begin(), cb.end(), -999);
  const int64_t Ba = per_item ? B : 1;
  const Array Ab = arr(aff, {Ba, 3, 4});
  check_compose_affine(Ud, Ab, arr(ca, {B, 3, in.d, in.h, in.w}));
  compose_affine(Ud, Ab, arr(ca, {B, 3, in.d, in.h, in.w}), kCpu);
  compose_affine(Ud, Ab, arr(cb, {B, 3, in.d, in.h, in.w}), kGpu);
  std::snprintf(buf, 128, "compose_affine %ldx%ldx%ld ba%ld", s.D, s.H, s.W, Ba);
  report(buf, ca, cb);
}

void bsplines() {
  struct Case {
    Grid3 g, c;
  } cases[] = {{{1, 1, 1}, {4, 4, 4}},
               {{9, 10, 11}, {4, 5, 6}},
               {{33, 17, 8}, {7, 4, 9}},
               {{20, 24, 28}, {10, 10, 10}},
               {{3, 4, 300}, {4, 4, 260}}};  // last: the per-voxel fallback
  for (const Case& t : cases) {
    const int64_t B = 2;
    Vec ctrl = rnd(B * 3 * t.c.size(), -12.5f, 12.5f);
    Vec a(B * 3 * t.g.size()), b(a.size(), -999);
    const Array K = arr(ctrl, {B, 3, t.c.d, t.c.h, t.c.w});
    check_bspline_field(K, arr(a, {B, 3, t.g.d, t.g.h, t.g.w}));
    bspline_field(K, arr(a, {B, 3, t.g.d, t.g.h, t.g.w}), kCpu);
    bspline_field(K, arr(b, {B, 3, t.g.d, t.g.h, t.g.w}), kGpu);
    char buf[128];
    std::snprintf(buf, 128, "bspline %ldx%ldx%ld ctrl %ld", t.g.d, t.g.h, t.g.w, t.c.d);
    report(buf, a, b);
  }
}

// Two accumulators, one per build, fed the same batches, then merged and reduced.
void welford(int64_t N) {
  Vec m1(3 * N, 0), q1(6 * N, 0), m2v(3 * N, 0), q2(6 * N, 0);
  Vec mb1(3 * N, 0), qb1(6 * N, 0), mb2(3 * N, 0), qb2(6 * N, 0);
  int64_t count = 0;
  char buf[128];
  for (int64_t B : {3, 1, 4}) {
    Vec x = rnd(B * 3 * N, 99.99f, 100.01f);
    check_welford_update(count, arr(m1, {3, N}), arr(q1, {6, N}), arr(x, {B, 3, N}));
    welford_update(count, arr(m1, {3, N}), arr(q1, {6, N}), arr(x, {B, 3, N}), kCpu);
    welford_update(count, arr(m2v, {3, N}), arr(q2, {6, N}), arr(x, {B, 3, N}), kGpu);
    count += B;
  }
  Vec y = rnd(5 * 3 * N, -1, 1);
  welford_update(0, arr(mb1, {3, N}), arr(qb1, {6, N}), arr(y, {5, 3, N}), kCpu);
  welford_update(0, arr(mb2, {3, N}), arr(qb2, {6, N}), arr(y, {5, 3, N}), kGpu);
  std::snprintf(buf, 128, "welford_update N=%ld mean", N);
  report(buf, m1, m2v);
  std::snprintf(buf, 128, "welford_update N=%ld m2", N);
  report(buf, q1, q2, 1e-9);
  welford_merge(count, arr(m1, {3, N}), arr(q1, {6, N}), 5, arr(mb1, {3, N}), arr(qb1, {6, N}),
                kCpu);
  welford_merge(count, arr(m2v, {3, N}), arr(q2, {6, N}), 5, arr(mb2, {3, N}), arr(qb2, {6, N}),
                kGpu);
  std::snprintf(buf, 128, "welford_merge N=%ld mean", N);
  report(buf, m1, m2v);
  std::snprintf(buf, 128, "welford_merge N=%ld m2", N);
  report(buf, q1, q2);
  const Vec M = {0.9f, 0.1f, 0, 0, 1.2f, -0.2f, 0.05f, 0, 2.0f};
  Vec s1(N), s2(N, -1), a1(3 * N), a2(3 * N, -1);
  welford_sigma(count + 5, arr(q1, {6, N}), arr(M, {3, 3}), arr(s1, {N}), kCpu);
  welford_sigma(count + 5, arr(q2, {6, N}), arr(M, {3, 3}), arr(s2, {N}), kGpu);
  welford_axis_sigma(count + 5, arr(q1, {6, N}), arr(M, {3, 3}), arr(a1, {3, N}), kCpu);
  welford_axis_sigma(count + 5, arr(q2, {6, N}), arr(M, {3, 3}), arr(a2, {3, N}), kGpu);
  std::snprintf(buf, 128, "welford_sigma N=%ld", N);
  report(buf, s1, s2);
  std::snprintf(buf, 128, "welford_axis_sigma N=%ld", N);
  report(buf, a1, a2);
}

}  // namespace

int main() {
  const Shape shapes[] = {{1, 1, 1}, {5, 6, 7}, {2, 9, 4}, {8, 3, 1}, {17, 13, 11}};
  for (const Shape& s : shapes)
    for (bool border : {false, true})
      for (bool per_item : {false, true}) warps_and_compositions(s, border, per_item);
  bsplines();
  for (int64_t N : {1, 7, 1000}) welford(N);
  std::printf("emulated threads: %ld; failures: %d\n", emu_threads, fails);
  return fails != 0;
}
