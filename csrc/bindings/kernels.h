// Every kernel bound once, for both modules. bind_kernels<Dev> is instantiated by
// bindings/core.cpp (regrisk._core: NumPy arrays, a thread count) and bindings/cuda.cpp
// (regrisk._cuda: CuPy arrays, a device and stream). Dev turns Python objects into Arrays
// (bindings/arrays.h) and the last argument into the execution context (common/execution.h);
// each call runs the op's own check (csrc/<op>/checks.h), then the kernel with the GIL released.
// The context's type (Threads or Stream) picks the kernel's build, so one call serves both.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "bindings/arrays.h"
#include "bspline/checks.h"
#include "common/boundary.h"
#include "compose/checks.h"
#include "warp/checks.h"
#include "welford/checks.h"

namespace regrisk::bindings {

namespace py = pybind11;

// f(context) with the GIL released (after every check, which may raise).
template <class Dev, class F>
void run(typename Dev::Where where, F&& f) {
  const auto context = Dev::context(where);
  py::gil_scoped_release nogil;
  f(context);
}

template <class Dev>
std::string doc(const char* what) {
  return std::string(what) + " " + Dev::kWhereDoc;
}

// (a, b, out, fill, border): warp_displacement, warp_affine and compose_field.
template <class Dev, class Check, class Kernel>
void bind_sampler(py::module_& m, const char* name, const char* a_name, const char* b_name,
                  Check check, Kernel kernel, const char* what) {
  m.def(
      name,
      [=](py::handle a_obj, py::handle b_obj, py::handle out_obj, float fill, bool border,
          typename Dev::Where where) {
        const Array a = Dev::array(a_obj, a_name), b = Dev::array(b_obj, b_name),
                    out = Dev::array(out_obj, "out");
        check(a, b, out);
        run<Dev>(where, [&](auto ctx) { kernel(a, b, out, fill, boundary_of(border), ctx); });
      },
      doc<Dev>(what).c_str(), py::arg(a_name), py::arg(b_name), py::arg("out"), py::arg("fill"),
      py::arg("border"), Dev::where_arg());
}

// (count, m2, M, out): welford_sigma (axes false) and welford_axis_sigma (axes true).
template <class Dev, class Kernel>
void bind_sigma(py::module_& m, const char* name, bool axes, Kernel kernel, const char* what) {
  m.def(
      name,
      [=](int64_t count, py::handle m2_obj, py::handle M_obj, py::handle out_obj,
          typename Dev::Where where) {
        // M is small host data for both builds (the CUDA kernels take it by value).
        const Array m2 = Dev::array(m2_obj, "m2"), M = host_array(M_obj, "M"),
                    out = Dev::array(out_obj, "out");
        check_welford_sigma(count, m2, M, out, axes);
        run<Dev>(where, [&](auto ctx) { kernel(count, m2, M, out, ctx); });
      },
      doc<Dev>(what).c_str(), py::arg("count"), py::arg("m2"), py::arg("M"), py::arg("out"),
      Dev::where_arg());
}

template <class Dev>
void bind_compose_affine_and_bspline(py::module_& m) {
  m.def(
      "compose_affine",
      [](py::handle disp_obj, py::handle affine_obj, py::handle out_obj,
         typename Dev::Where where) {
        const Array disp = Dev::array(disp_obj, "displacement"),
                    affine = Dev::array(affine_obj, "affine"), out = Dev::array(out_obj, "out");
        check_compose_affine(disp, affine, out);
        run<Dev>(where, [&](auto ctx) { compose_affine(disp, affine, out, ctx); });
      },
      doc<Dev>("out (B,3,D,H,W) = A (x + u(x)) + t - x; u (B,3,D,H,W), affine (Ba,3,4).").c_str(),
      py::arg("displacement"), py::arg("affine"), py::arg("out"), Dev::where_arg());
  m.def(
      "bspline_field",
      [](py::handle control_obj, py::handle out_obj, typename Dev::Where where) {
        const Array control = Dev::array(control_obj, "control"), out = Dev::array(out_obj, "out");
        check_bspline_field(control, out);
        run<Dev>(where, [&](auto ctx) { bspline_field(control, out, ctx); });
      },
      doc<Dev>("out (B,3,D,H,W) from cubic B-spline control points (B,3,cD,cH,cW).").c_str(),
      py::arg("control"), py::arg("out"), Dev::where_arg());
}

template <class Dev>
void bind_welford_update_and_merge(py::module_& m) {
  m.def(
      "welford_update",
      [](int64_t count_before, py::handle mean_obj, py::handle m2_obj, py::handle batch_obj,
         typename Dev::Where where) {
        const Array mean = Dev::array(mean_obj, "mean"), m2 = Dev::array(m2_obj, "m2"),
                    batch = Dev::array(batch_obj, "batch");
        check_welford_update(count_before, mean, m2, batch);
        run<Dev>(where, [&](auto ctx) { welford_update(count_before, mean, m2, batch, ctx); });
      },
      doc<Dev>("In place: mean (3,N), m2 (6,N) holding count_before samples absorb batch "
               "(B,3,N).").c_str(),
      py::arg("count_before"), py::arg("mean"), py::arg("m2"), py::arg("batch"), Dev::where_arg());
  m.def(
      "welford_merge",
      [](int64_t n_a, py::handle mean_a_obj, py::handle m2_a_obj, int64_t n_b,
         py::handle mean_b_obj, py::handle m2_b_obj, typename Dev::Where where) {
        const Array mean_a = Dev::array(mean_a_obj, "mean_a"), m2_a = Dev::array(m2_a_obj, "m2_a"),
                    mean_b = Dev::array(mean_b_obj, "mean_b"), m2_b = Dev::array(m2_b_obj, "m2_b");
        check_welford_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b);
        run<Dev>(where, [&](auto ctx) {
          welford_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b, ctx);
        });
      },
      doc<Dev>("In place into a: (n_a, mean_a, m2_a) absorbs (n_b, mean_b, m2_b) (Chan et al.).")
          .c_str(),
      py::arg("n_a"), py::arg("mean_a"), py::arg("m2_a"), py::arg("n_b"), py::arg("mean_b"),
      py::arg("m2_b"), Dev::where_arg());
}

// An overload set as one callable: the context argument picks the build.
#define REGRISK_OP(op) [](auto&&... args) { op(args...); }

template <class Dev>
void bind_kernels(py::module_& m) {
  bind_sampler<Dev>(m, "warp_displacement", "volume", "displacement", check_warp_displacement,
                    REGRISK_OP(warp_displacement),
                    "out (B,C,d,h,w) = volume (Bv,C,D,H,W) at x + displacement (B,3,d,h,w).");
  bind_sampler<Dev>(m, "warp_affine", "volume", "affine", check_warp_affine,
                    REGRISK_OP(warp_affine),
                    "out (B,C,d,h,w) = volume (Bv,C,D,H,W) at A_b x + t_b, affine (B,3,4).");
  bind_sampler<Dev>(m, "compose_field", "displacement", "field", check_compose_field,
                    REGRISK_OP(compose_field),
                    "out (B,3,D,H,W) = u(x) + f(x + u(x)); field f (Bf,3,d,h,w).");
  bind_compose_affine_and_bspline<Dev>(m);
  bind_welford_update_and_merge<Dev>(m);
  bind_sigma<Dev>(m, "welford_sigma", false, REGRISK_OP(welford_sigma),
                  "out (N,) = sqrt(tr(M Sigma M^T)), Sigma = m2 / (count - 1); M (3,3), host.");
  bind_sigma<Dev>(m, "welford_axis_sigma", true, REGRISK_OP(welford_axis_sigma),
                  "out (3,N) = sqrt(diag(M Sigma M^T)); M (3,3), host.");
}

#undef REGRISK_OP

}  // namespace regrisk::bindings
