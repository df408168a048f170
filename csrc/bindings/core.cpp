// pybind11 bindings of the CPU kernels: regrisk._core.
//
// The kernels themselves are bound in bindings/kernels.h, shared with regrisk._cuda: every
// array is re-checked (dtype, C order, rank, shapes, writability, no overlap between output
// and inputs; ValueError naming the argument), so that even a direct call into _core cannot
// crash the process. Nothing is converted or copied: a wrong array is an error, not a silent
// copy (an `out` copied by a cast would be lost). Each call takes its own thread count
// (`threads`, 0 = the default that set_num_threads sets); the kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

// The ops (bind_kernels calls their Threads overloads, the C++/OpenMP builds), then the shared
// binding.
#include "bspline/bspline.h"
#include "conv/checks.h"
#include "conv/conv.h"
#include "demons/checks.h"
#include "demons/demons.h"
#include "compose/compose.h"
#include "resample/checks.h"
#include "resample/resample.h"
#include "warp/warp.h"
#include "welford/welford.h"
#include "bindings/kernels.h"
#include "common/parallel.h"
#include "common/point_sampler.h"

#if defined(REGRISK_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

int checked_threads(int n, const char* name, int lowest) {
  regrisk::expect(n >= lowest && n <= regrisk::cpu::kMaxThreads,
                  std::string(name) + ": thread count must be from " + std::to_string(lowest) +
                      " to " + std::to_string(regrisk::cpu::kMaxThreads) + ", got " +
                      std::to_string(n));
  return n;
}

// NumPy arrays, and a thread count per call.
struct HostKernels {
  using Where = int;
  static constexpr const char* kWhereDoc = "threads: OpenMP team size (0: the default).";
  static regrisk::Array array(py::handle obj, const char* name) {
    return regrisk::bindings::host_array(obj, name);
  }
  static regrisk::Threads context(int threads) {
    return regrisk::Threads{checked_threads(threads, "threads", 0)};
  }
  static py::arg_v where_arg() { return py::arg("threads") = 0; }
};

// The arrays of demons_step (image: the warped source sw) and demons_steps (image: the
// source s), in the order both take them.
struct DemonsArrays {
  regrisk::Array image, t, gt, u, kernel, out;
};

DemonsArrays demons_arrays(py::handle image, const char* image_name, py::handle t, py::handle gt,
                           py::handle u, py::handle kernel, py::handle out) {
  using regrisk::bindings::host_array;
  return {host_array(image, image_name), host_array(t, "t"),           host_array(gt, "gt"),
          host_array(u, "u"),            host_array(kernel, "kernel"), host_array(out, "out")};
}

// CPU only (demons/demons.h says why), so bound here rather than in bindings/kernels.h.
void bind_demons(py::module_& m) {
  m.def(
      "demons_step",
      [](py::handle sw, py::handle t, py::handle gt, py::handle u, py::handle kernel,
         py::handle out, float tau, float alpha, float eps, int threads) {
        const DemonsArrays a = demons_arrays(sw, "sw", t, gt, u, kernel, out);
        regrisk::check_demons_step(a.image, a.t, a.gt, a.u, a.kernel, a.out, tau, alpha, eps);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::demons_step(a.image, a.t, a.gt, a.u, a.kernel, a.out, tau, alpha, eps, team);
      },
      "One fused step of unrolled ESM demons (csrc/demons/demons.h). threads: OpenMP team "
      "size (0: the default).",
      py::arg("sw"), py::arg("t"), py::arg("gt"), py::arg("u"), py::arg("kernel"),
      py::arg("out"), py::arg("tau"), py::arg("alpha"), py::arg("eps"), py::arg("threads") = 0);
  m.def(
      "demons_steps",
      [](py::handle s, py::handle t, py::handle gt, py::handle u, py::handle kernel,
         py::handle out, int steps, float tau, float alpha, float eps, int threads) {
        const DemonsArrays a = demons_arrays(s, "s", t, gt, u, kernel, out);
        regrisk::check_demons_steps(a.image, a.t, a.gt, a.u, a.kernel, a.out, steps, tau, alpha,
                                    eps);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::demons_steps(a.image, a.t, a.gt, a.u, a.kernel, a.out, steps, tau, alpha, eps,
                              team);
      },
      "`steps` demons steps on one level: warp s by u (border), demons_step, repeated "
      "(csrc/demons/demons.h). threads: OpenMP team size (0: the default).",
      py::arg("s"), py::arg("t"), py::arg("gt"), py::arg("u"), py::arg("kernel"),
      py::arg("out"), py::arg("steps"), py::arg("tau"), py::arg("alpha"), py::arg("eps"),
      py::arg("threads") = 0);
  m.def(
      "gaussian_smooth",
      [](py::handle volume_obj, py::handle ki_obj, py::handle kj_obj, py::handle kk_obj,
         py::handle out_obj, int threads) {
        using regrisk::bindings::host_array;
        const regrisk::Array volume = host_array(volume_obj, "volume"),
                             ki = host_array(ki_obj, "kernel_i"),
                             kj = host_array(kj_obj, "kernel_j"),
                             kk = host_array(kk_obj, "kernel_k"), out = host_array(out_obj, "out");
        regrisk::check_gaussian_smooth(volume, ki, kj, kk, out);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::gaussian_smooth(volume, ki, kj, kk, out, team);
      },
      "out = volume (B, C, D, H, W) filtered along i, j, k by the odd-length kernels, "
      "replicated borders (csrc/demons/demons.h). threads: OpenMP team size (0: the default).",
      py::arg("volume"), py::arg("kernel_i"), py::arg("kernel_j"), py::arg("kernel_k"),
      py::arg("out"), py::arg("threads") = 0);
}

// CPU only (welford/welford.h says why).
void bind_welford_controlled(py::module_& m) {
  m.def(
      "welford_update_controlled",
      [](int64_t count_before, py::handle mean_g, py::handle m2_g, py::handle mean_d,
         py::handle m2_d, py::handle mean_s, py::handle m2_s, py::handle g_obj, py::handle d_obj,
         int threads) {
        using regrisk::bindings::host_array;
        const regrisk::WelfordState ga{host_array(mean_g, "mean_g"), host_array(m2_g, "m2_g")},
            da{host_array(mean_d, "mean_d"), host_array(m2_d, "m2_d")},
            sa{host_array(mean_s, "mean_sum"), host_array(m2_s, "m2_sum")};
        const regrisk::Array g = host_array(g_obj, "g"), d = host_array(d_obj, "d");
        regrisk::check_welford_update_controlled(
            count_before, {&ga.mean, &ga.m2, &da.mean, &da.m2, &sa.mean, &sa.m2}, g, d);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::welford_update_controlled(count_before, ga, da, sa, g, d, team);
      },
      "In place: the accumulators of g, d and g + d (mean (3,N), m2 (6,N) each, count_before "
      "samples) absorb g and d (B,3,N) and their float32 sum (csrc/welford/welford.h). threads: "
      "OpenMP team size (0: the default).",
      py::arg("count_before"), py::arg("mean_g"), py::arg("m2_g"), py::arg("mean_d"),
      py::arg("m2_d"), py::arg("mean_sum"), py::arg("m2_sum"), py::arg("g"), py::arg("d"),
      py::arg("threads") = 0);
}

// CPU only (warp/warp.h says why).
void bind_warp_grid(py::module_& m) {
  m.def(
      "warp_grid",
      [](py::handle volume_obj, py::handle grid_obj, py::handle out_obj, float fill, bool border,
         bool align_corners, int threads) {
        using regrisk::bindings::host_array;
        const regrisk::Array volume = host_array(volume_obj, "volume"),
                             grid = host_array(grid_obj, "grid"), out = host_array(out_obj, "out");
        regrisk::check_warp_grid(volume, grid, out);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::warp_grid(volume, grid, out, fill, regrisk::boundary_of(border), align_corners,
                           team);
      },
      "out (B,C,d,h,w) = volume (Bv,C,D,H,W) at grid (B,d,h,w,3), ONNX GridSample's normalised "
      "x, y, z (csrc/warp/warp.h). threads: OpenMP team size (0: the default).",
      py::arg("volume"), py::arg("grid"), py::arg("out"), py::arg("fill"), py::arg("border"),
      py::arg("align_corners"), py::arg("threads") = 0);
}

void bind_resample(py::module_& m) {
  using regrisk::bindings::host_array;
  m.def(
      "upsample2",
      [](py::handle volume_obj, py::handle out_obj, int threads) {
        const regrisk::Array volume = host_array(volume_obj, "volume"),
                             out = host_array(out_obj, "out");
        regrisk::check_upsample2(volume, out);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::upsample2(volume, out, team);
      },
      "out = volume (B, C, D, H, W) upsampled x2, linear with half-pixel centres and clamped "
      "edges (csrc/resample/resample.h). threads: OpenMP team size (0: the default).",
      py::arg("volume"), py::arg("out"), py::arg("threads") = 0);
  m.def(
      "average_pool",
      [](py::handle volume_obj, int factor, py::handle out_obj, int threads) {
        const regrisk::Array volume = host_array(volume_obj, "volume"),
                             out = host_array(out_obj, "out");
        regrisk::check_average_pool(volume, factor, out);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::average_pool(volume, factor, out, team);
      },
      "out = the mean of each factor^3 block of volume (B, C, D, H, W), stride factor "
      "(csrc/resample/resample.h). threads: OpenMP team size (0: the default).",
      py::arg("volume"), py::arg("factor"), py::arg("out"), py::arg("threads") = 0);
}

void bind_conv(py::module_& m) {
  using regrisk::bindings::host_array;
  m.def(
      "conv3x3x3",
      [](py::handle volume_obj, py::handle weight_obj, py::handle bias_obj, py::handle out_obj,
         int threads) {
        const regrisk::Array volume = host_array(volume_obj, "volume"),
                             weight = host_array(weight_obj, "weight"),
                             bias = host_array(bias_obj, "bias"), out = host_array(out_obj, "out");
        regrisk::check_conv3x3x3(volume, weight, bias, out);
        const regrisk::Threads team{checked_threads(threads, "threads", 0)};
        py::gil_scoped_release nogil;
        regrisk::conv3x3x3(volume, weight, bias, out, team);
      },
      "out = bias + the 3x3x3 convolution of volume (B, C, D, H, W) with weight (O, C, 3, 3, 3), "
      "zero padding 1 (csrc/conv/conv.h). threads: OpenMP team size (0: the default).",
      py::arg("volume"), py::arg("weight"), py::arg("bias"), py::arg("out"),
      py::arg("threads") = 0);
}

void set_num_threads(int n) { regrisk::cpu::set_default_threads(checked_threads(n, "n", 1)); }

// Compiler settings that shape the kernels' code: optimisation, assertions, baseline ISA.
constexpr const char* kFlags =
#if defined(__OPTIMIZE__)
    " optimized"
#endif
#if defined(NDEBUG)
    " NDEBUG"
#endif
#if defined(__AVX2__)
    " avx2"
#elif defined(__SSE2__)
    " sse2"
#endif
#if defined(__FAST_MATH__)
    " fast-math"
#endif
    "";

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
  d["flags"] = std::string(kFlags[0] ? kFlags + 1 : kFlags);  // without the leading space
  // Hot loops also built for AVX2 (REGRISK_CPU_CLONES) and whether this CPU runs that build.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  d["avx2_clones"] = true;
  __builtin_cpu_init();
  d["cpu_avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
#else
  d["avx2_clones"] = false;
  d["cpu_avx2"] = false;
#endif
  // Trilinear sampling by AVX-512 gathers (common/point_sampler.cpp), built in and taken here.
  d["avx512_gathers"] = regrisk::cpu::gather_sampling();
  d["cplusplus"] = static_cast<long>(__cplusplus);
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "regrisk CPU kernels (C++/OpenMP). Use regrisk.kernels, which validates and "
            "dispatches.";
  regrisk::bindings::bind_kernels<HostKernels>(m);
  bind_demons(m);
  bind_warp_grid(m);
  bind_welford_controlled(m);
  bind_resample(m);
  bind_conv(m);
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Team size of calls that pass threads=0 (1 to 4096; results do not depend on it).");
  m.def("get_num_threads", &regrisk::cpu::default_threads);
  m.def("build_info", &build_info);
}
