// pybind11 bindings of the CPU kernels: regrisk._core.
//
// This layer re-checks every array it is handed (dtype, C order, rank, shapes, writability,
// no overlap between output and inputs) and raises ValueError naming the argument, so that even
// a direct call into _core cannot crash the process. It never converts or copies: a wrong array
// is an error, not a silent copy (an `out` copied by a cast would be lost). The kernels run with
// the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "bspline/bspline.h"
#include "compose/compose.h"
#include "warp/warp.h"
#include "welford/welford.h"

#if defined(REGRISK_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;
using regrisk::Boundary;
using regrisk::Grid3;

namespace {

std::atomic<int> g_threads{0};  // 0: OpenMP's default team size

int team_size() {
#if defined(REGRISK_OPENMP)
  const int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}

struct View {
  py::array arr;
  const char* name;
  int64_t dim(int i) const { return static_cast<int64_t>(arr.shape(i)); }
  const float* data() const { return static_cast<const float*>(arr.data()); }
  float* mutable_data() { return static_cast<float*>(arr.mutable_data()); }
  const char* begin() const { return static_cast<const char*>(arr.data()); }
  const char* end() const { return begin() + arr.nbytes(); }
};

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

View check(py::handle obj, const char* name, int ndim, bool writable = false) {
  if (!py::isinstance<py::array>(obj)) fail(std::string(name) + ": expected a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>()))
    fail(std::string(name) + ": expected float32, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    fail(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
         std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + ": must be C-contiguous");
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) fail(std::string(name) + ": must be aligned");
  if (writable && !a.writeable()) fail(std::string(name) + ": must be writeable");
  for (int i = 0; i < ndim; ++i) {
    if (a.shape(i) < 1) fail(std::string(name) + ": every dimension must be >= 1");
    // The kernels index within one axis with 32-bit integers (SIMD conversions).
    if (a.shape(i) > 0x7fffffff) fail(std::string(name) + ": every dimension must be < 2^31");
  }
  return View{a, name};
}

void expect(bool ok, const std::string& msg) {
  if (!ok) fail(msg);
}

void expect_shape(const View& v, int axis, int64_t n, const char* what) {
  if (v.dim(axis) != n)
    fail(std::string(v.name) + ": axis " + std::to_string(axis) + " is " +
         std::to_string(v.dim(axis)) + ", expected " + std::to_string(n) + " (" + what + ")");
}

void expect_disjoint(const View& out, const View& in) {
  if (out.begin() < in.end() && in.begin() < out.end())
    fail(std::string(out.name) + ": must not overlap " + in.name);
}

void expect_finite(const View& v) {
  const float* p = v.data();
  for (py::ssize_t i = 0; i < v.arr.size(); ++i)
    if (!std::isfinite(p[i])) fail(std::string(v.name) + ": must be finite (contains NaN or inf)");
}

Grid3 grid(const View& v, int first) { return Grid3{v.dim(first), v.dim(first + 1), v.dim(first + 2)}; }

void warp_displacement(py::handle volume_, py::handle disp_, py::handle out_, float fill, bool border) {
  View vol = check(volume_, "volume", 5), disp = check(disp_, "displacement", 5);
  View out = check(out_, "out", 5, true);
  const int64_t B = disp.dim(0), Bv = vol.dim(0), C = vol.dim(1);
  expect_shape(disp, 1, 3, "three displacement components");
  expect(Bv == 1 || Bv == B, "volume: batch " + std::to_string(Bv) + " must be 1 or match displacement's " + std::to_string(B));
  expect_shape(out, 0, B, "batch");
  expect_shape(out, 1, C, "channels");
  for (int a = 2; a < 5; ++a) expect_shape(out, a, disp.dim(a), "displacement grid");
  expect_disjoint(out, vol);
  expect_disjoint(out, disp);
  const Grid3 in = grid(vol, 2), og = grid(disp, 2);
  const float* pv = vol.data(); const float* pd = disp.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::warp_displacement(pv, Bv, C, in, pd, B, og, po, fill, border ? Boundary::Border : Boundary::Fill, nt);
}

void warp_affine(py::handle volume_, py::handle affine_, py::handle out_, float fill, bool border) {
  View vol = check(volume_, "volume", 5), aff = check(affine_, "affine", 3);
  View out = check(out_, "out", 5, true);
  const int64_t B = aff.dim(0), Bv = vol.dim(0), C = vol.dim(1);
  expect_shape(aff, 1, 3, "3x4 matrix");
  expect_shape(aff, 2, 4, "3x4 matrix");
  expect_finite(aff);
  expect(Bv == 1 || Bv == B, "volume: batch " + std::to_string(Bv) + " must be 1 or match affine's " + std::to_string(B));
  expect_shape(out, 0, B, "batch");
  expect_shape(out, 1, C, "channels");
  expect_disjoint(out, vol);
  expect_disjoint(out, aff);
  const Grid3 in = grid(vol, 2), og = grid(out, 2);
  const float* pv = vol.data(); const float* pa = aff.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::warp_affine(pv, Bv, C, in, pa, B, og, po, fill, border ? Boundary::Border : Boundary::Fill, nt);
}

void compose_affine(py::handle disp_, py::handle affine_, py::handle out_) {
  View disp = check(disp_, "displacement", 5), aff = check(affine_, "affine", 3);
  View out = check(out_, "out", 5, true);
  const int64_t B = disp.dim(0), Ba = aff.dim(0);
  expect_shape(disp, 1, 3, "three displacement components");
  expect_shape(aff, 1, 3, "3x4 matrix");
  expect_shape(aff, 2, 4, "3x4 matrix");
  expect_finite(aff);
  expect(Ba == 1 || Ba == B, "affine: batch " + std::to_string(Ba) + " must be 1 or match displacement's " + std::to_string(B));
  for (int a = 0; a < 5; ++a) expect_shape(out, a, disp.dim(a), "displacement's shape");
  expect_disjoint(out, disp);
  expect_disjoint(out, aff);
  const Grid3 g = grid(disp, 2);
  const float* pd = disp.data(); const float* pa = aff.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::compose_affine(pd, B, g, pa, Ba, po, nt);
}

void compose_field(py::handle disp_, py::handle field_, py::handle out_, float fill, bool border) {
  View disp = check(disp_, "displacement", 5), field = check(field_, "field", 5);
  View out = check(out_, "out", 5, true);
  const int64_t B = disp.dim(0), Bf = field.dim(0);
  expect_shape(disp, 1, 3, "three displacement components");
  expect_shape(field, 1, 3, "three displacement components");
  expect(Bf == 1 || Bf == B, "field: batch " + std::to_string(Bf) + " must be 1 or match displacement's " + std::to_string(B));
  for (int a = 0; a < 5; ++a) expect_shape(out, a, disp.dim(a), "displacement's shape");
  expect_disjoint(out, disp);
  expect_disjoint(out, field);
  const Grid3 g = grid(disp, 2), fg = grid(field, 2);
  const float* pd = disp.data(); const float* pf = field.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::compose_field(pd, B, g, pf, Bf, fg, po, fill, border ? Boundary::Border : Boundary::Fill, nt);
}

void bspline_field(py::handle control_, py::handle out_) {
  View ctrl = check(control_, "control", 5), out = check(out_, "out", 5, true);
  const int64_t B = ctrl.dim(0);
  expect_shape(ctrl, 1, 3, "three displacement components");
  for (int a = 2; a < 5; ++a)
    expect(ctrl.dim(a) >= 4, "control: every spatial axis needs at least 4 control points");
  expect_shape(out, 0, B, "batch");
  expect_shape(out, 1, 3, "three displacement components");
  expect_disjoint(out, ctrl);
  const Grid3 cg = grid(ctrl, 2), g = grid(out, 2);
  const float* pc = ctrl.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::bspline_field(pc, B, cg, po, g, nt);
}

void welford_update(int64_t count_before, py::handle mean_, py::handle m2_, py::handle batch_) {
  expect(count_before >= 0, "count_before: must be >= 0");
  View mean = check(mean_, "mean", 2, true), m2 = check(m2_, "m2", 2, true), batch = check(batch_, "batch", 3);
  const int64_t N = mean.dim(1), B = batch.dim(0);
  expect_shape(mean, 0, 3, "mean components");
  expect_shape(m2, 0, 6, "covariance terms");
  expect_shape(m2, 1, N, "voxels");
  expect_shape(batch, 1, 3, "three displacement components");
  expect_shape(batch, 2, N, "voxels");
  expect_disjoint(mean, m2);
  expect_disjoint(mean, batch);
  expect_disjoint(m2, batch);
  float* pm = mean.mutable_data(); float* pq = m2.mutable_data(); const float* pb = batch.data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::welford_update(count_before, pm, pq, N, pb, B, nt);
}

void welford_merge(int64_t n_a, py::handle mean_a_, py::handle m2_a_, int64_t n_b, py::handle mean_b_, py::handle m2_b_) {
  expect(n_a >= 0 && n_b >= 0 && n_a + n_b > 0, "n_a, n_b: counts must be >= 0 with a positive sum");
  View ma = check(mean_a_, "mean_a", 2, true), qa = check(m2_a_, "m2_a", 2, true);
  View mb = check(mean_b_, "mean_b", 2), qb = check(m2_b_, "m2_b", 2);
  const int64_t N = ma.dim(1);
  expect_shape(ma, 0, 3, "mean components");
  expect_shape(mb, 0, 3, "mean components");
  expect_shape(qa, 0, 6, "covariance terms");
  expect_shape(qb, 0, 6, "covariance terms");
  expect_shape(mb, 1, N, "voxels");
  expect_shape(qa, 1, N, "voxels");
  expect_shape(qb, 1, N, "voxels");
  expect_disjoint(ma, qa);
  expect_disjoint(ma, mb);
  expect_disjoint(ma, qb);
  expect_disjoint(qa, mb);
  expect_disjoint(qa, qb);
  float* pma = ma.mutable_data(); float* pqa = qa.mutable_data();
  const float* pmb = mb.data(); const float* pqb = qb.data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  regrisk::cpu::welford_merge(n_a, pma, pqa, n_b, pmb, pqb, N, nt);
}

template <bool Axes>
void welford_sigma_impl(int64_t count, py::handle m2_, py::handle M_, py::handle out_) {
  expect(count >= 2, "count: the covariance needs at least 2 samples");
  View m2 = check(m2_, "m2", 2), M = check(M_, "M", 2), out = check(out_, "out", Axes ? 2 : 1, true);
  const int64_t N = m2.dim(1);
  expect_shape(m2, 0, 6, "covariance terms");
  expect_shape(M, 0, 3, "3x3 matrix");
  expect_shape(M, 1, 3, "3x3 matrix");
  expect_finite(M);
  if (Axes) {
    expect_shape(out, 0, 3, "axes");
    expect_shape(out, 1, N, "voxels");
  } else {
    expect_shape(out, 0, N, "voxels");
  }
  expect_disjoint(out, m2);
  expect_disjoint(out, M);
  const float* pq = m2.data(); const float* pM = M.data(); float* po = out.mutable_data();
  const int nt = team_size();
  py::gil_scoped_release nogil;
  if (Axes) regrisk::cpu::welford_axis_sigma(count, pq, N, pM, po, nt);
  else regrisk::cpu::welford_sigma(count, pq, N, pM, po, nt);
}

void set_num_threads(int n) {
  expect(n >= 1, "n: thread count must be >= 1");
  g_threads.store(n);
}

py::dict build_info() {
  py::dict d;
#if defined(REGRISK_OPENMP)
  d["openmp"] = true;
  d["openmp_version"] = static_cast<int>(_OPENMP);
  d["openmp_max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["openmp_version"] = 0;
  d["openmp_max_threads"] = 1;
#endif
#if defined(__VERSION__)
  d["compiler"] = std::string(__VERSION__);
#else
  d["compiler"] = std::string("unknown");
#endif
  std::string flags;
#if defined(__OPTIMIZE__)
  flags += "optimized ";
#endif
#if defined(NDEBUG)
  flags += "NDEBUG ";
#endif
#if defined(__AVX2__)
  flags += "avx2 ";
#elif defined(__SSE2__)
  flags += "sse2 ";
#endif
#if defined(__FAST_MATH__)
  flags += "fast-math ";
#endif
  if (!flags.empty()) flags.pop_back();
  d["flags"] = flags;
  // Hot loops also built for AVX2 (REGRISK_CPU_CLONES) and whether this CPU runs that build.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  d["avx2_clones"] = true;
  __builtin_cpu_init();
  d["cpu_avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
#else
  d["avx2_clones"] = false;
  d["cpu_avx2"] = false;
#endif
  d["cplusplus"] = static_cast<long>(__cplusplus);
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "regrisk CPU kernels (C++/OpenMP). Use regrisk.kernels, which validates and dispatches.";
  m.def("warp_displacement", &warp_displacement, py::arg("volume"), py::arg("disp"), py::arg("out"), py::arg("fill"), py::arg("border"));
  m.def("warp_affine", &warp_affine, py::arg("volume"), py::arg("affine"), py::arg("out"), py::arg("fill"), py::arg("border"));
  m.def("compose_affine", &compose_affine, py::arg("disp"), py::arg("affine"), py::arg("out"));
  m.def("compose_field", &compose_field, py::arg("disp"), py::arg("field"), py::arg("out"), py::arg("fill"), py::arg("border"));
  m.def("bspline_field", &bspline_field, py::arg("control"), py::arg("out"));
  m.def("welford_update", &welford_update, py::arg("count_before"), py::arg("mean"), py::arg("m2"), py::arg("batch"));
  m.def("welford_merge", &welford_merge, py::arg("n_a"), py::arg("mean_a"), py::arg("m2_a"), py::arg("n_b"), py::arg("mean_b"), py::arg("m2_b"));
  m.def("welford_sigma", &welford_sigma_impl<false>, py::arg("count"), py::arg("m2"), py::arg("M"), py::arg("out"));
  m.def("welford_axis_sigma", &welford_sigma_impl<true>, py::arg("count"), py::arg("m2"), py::arg("M"), py::arg("out"));
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &team_size);
  m.def("build_info", &build_info);
}
