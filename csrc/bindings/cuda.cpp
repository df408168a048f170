// regrisk._cuda: the CUDA kernels, bound for python/regrisk/_cuda_ops.py.
//
// Arguments are raw device pointers (uintptr_t, CuPy's `arr.data.ptr`), shapes, the device
// ordinal and the stream handle (`cupy.cuda.get_current_stream().ptr`). Nothing is copied and
// nothing synchronises: every call only enqueues work on the given stream. Validation of shapes
// and dtypes happens once, in regrisk.kernels; this layer trusts its caller.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>

#include "bspline/bsplineCUDA.h"
#include "compose/composeCUDA.h"
#include "warp/warpCUDA.h"
#include "welford/welfordCUDA.h"

namespace py = pybind11;
using std::uintptr_t;

namespace {

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "regrisk CUDA kernels (device pointers in, asynchronous launches on a given stream)";
  // Launches are cheap and asynchronous; releasing the GIL lets host threads overlap them.
  using release = py::call_guard<py::gil_scoped_release>;
  namespace rc = regrisk::cuda;

  m.def(
      "warp_displacement",
      [](uintptr_t volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W, uintptr_t disp,
         int64_t b, int64_t d, int64_t h, int64_t w, uintptr_t out, float fill, bool border,
         int device, uintptr_t stream) {
        rc::warp_displacement(ptr<const float>(volume), bv, c, D, H, W, ptr<const float>(disp), b,
                              d, h, w, ptr<float>(out), fill, border, device, stream);
      },
      py::arg("volume"), py::arg("bv"), py::arg("c"), py::arg("D"), py::arg("H"), py::arg("W"),
      py::arg("disp"), py::arg("b"), py::arg("d"), py::arg("h"), py::arg("w"), py::arg("out"),
      py::arg("fill"), py::arg("border"), py::arg("device"), py::arg("stream"), release());

  m.def(
      "warp_affine",
      [](uintptr_t volume, int64_t bv, int64_t c, int64_t D, int64_t H, int64_t W,
         uintptr_t affine, int64_t b, int64_t d, int64_t h, int64_t w, uintptr_t out, float fill,
         bool border, int device, uintptr_t stream) {
        rc::warp_affine(ptr<const float>(volume), bv, c, D, H, W, ptr<const float>(affine), b, d,
                        h, w, ptr<float>(out), fill, border, device, stream);
      },
      py::arg("volume"), py::arg("bv"), py::arg("c"), py::arg("D"), py::arg("H"), py::arg("W"),
      py::arg("affine"), py::arg("b"), py::arg("d"), py::arg("h"), py::arg("w"), py::arg("out"),
      py::arg("fill"), py::arg("border"), py::arg("device"), py::arg("stream"), release());

  m.def(
      "compose_affine",
      [](uintptr_t disp, int64_t b, int64_t D, int64_t H, int64_t W, uintptr_t affine, int64_t ba,
         uintptr_t out, int device, uintptr_t stream) {
        rc::compose_affine(ptr<const float>(disp), b, D, H, W, ptr<const float>(affine), ba,
                           ptr<float>(out), device, stream);
      },
      py::arg("disp"), py::arg("b"), py::arg("D"), py::arg("H"), py::arg("W"), py::arg("affine"),
      py::arg("ba"), py::arg("out"), py::arg("device"), py::arg("stream"), release());

  m.def(
      "compose_field",
      [](uintptr_t disp, int64_t b, int64_t D, int64_t H, int64_t W, uintptr_t field, int64_t bf,
         int64_t d, int64_t h, int64_t w, uintptr_t out, float fill, bool border, int device,
         uintptr_t stream) {
        rc::compose_field(ptr<const float>(disp), b, D, H, W, ptr<const float>(field), bf, d, h, w,
                          ptr<float>(out), fill, border, device, stream);
      },
      py::arg("disp"), py::arg("b"), py::arg("D"), py::arg("H"), py::arg("W"), py::arg("field"),
      py::arg("bf"), py::arg("d"), py::arg("h"), py::arg("w"), py::arg("out"), py::arg("fill"),
      py::arg("border"), py::arg("device"), py::arg("stream"), release());

  m.def(
      "bspline_field",
      [](uintptr_t control, int64_t b, int64_t cd, int64_t ch, int64_t cw, uintptr_t out,
         int64_t D, int64_t H, int64_t W, int device, uintptr_t stream) {
        rc::bspline_field(ptr<const float>(control), b, cd, ch, cw, ptr<float>(out), D, H, W,
                          device, stream);
      },
      py::arg("control"), py::arg("b"), py::arg("cd"), py::arg("ch"), py::arg("cw"),
      py::arg("out"), py::arg("D"), py::arg("H"), py::arg("W"), py::arg("device"),
      py::arg("stream"), release());

  m.def(
      "welford_update",
      [](int64_t count, uintptr_t mean, uintptr_t m2, uintptr_t batch, int64_t b, int64_t n,
         int device, uintptr_t stream) {
        rc::welford_update(count, ptr<float>(mean), ptr<float>(m2), ptr<const float>(batch), b, n,
                           device, stream);
      },
      py::arg("count"), py::arg("mean"), py::arg("m2"), py::arg("batch"), py::arg("b"),
      py::arg("n"), py::arg("device"), py::arg("stream"), release());

  m.def(
      "welford_merge",
      [](int64_t count_a, uintptr_t mean_a, uintptr_t m2_a, int64_t count_b, uintptr_t mean_b,
         uintptr_t m2_b, int64_t n, int device, uintptr_t stream) {
        rc::welford_merge(count_a, ptr<float>(mean_a), ptr<float>(m2_a), count_b,
                          ptr<const float>(mean_b), ptr<const float>(m2_b), n, device, stream);
      },
      py::arg("count_a"), py::arg("mean_a"), py::arg("m2_a"), py::arg("count_b"),
      py::arg("mean_b"), py::arg("m2_b"), py::arg("n"), py::arg("device"), py::arg("stream"),
      release());

  // M (3x3 voxel->mm) is small host data: passed by value as nine floats.
  m.def(
      "welford_sigma",
      [](int64_t count, uintptr_t m2, const std::array<float, 9>& M, uintptr_t out, int64_t n,
         int device, uintptr_t stream) {
        rc::welford_sigma(count, ptr<const float>(m2), M.data(), ptr<float>(out), n, device,
                          stream);
      },
      py::arg("count"), py::arg("m2"), py::arg("M"), py::arg("out"), py::arg("n"),
      py::arg("device"), py::arg("stream"), release());

  m.def(
      "welford_axis_sigma",
      [](int64_t count, uintptr_t m2, const std::array<float, 9>& M, uintptr_t out, int64_t n,
         int device, uintptr_t stream) {
        rc::welford_axis_sigma(count, ptr<const float>(m2), M.data(), ptr<float>(out), n, device,
                               stream);
      },
      py::arg("count"), py::arg("m2"), py::arg("M"), py::arg("out"), py::arg("n"),
      py::arg("device"), py::arg("stream"), release());
}
