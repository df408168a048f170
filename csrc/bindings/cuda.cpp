// regrisk._cuda: the CUDA kernels, bound for python/regrisk/_cuda_ops.py.
//
// The kernels are bound in bindings/kernels.h, shared with regrisk._core, so the same checks
// guard both modules. Arrays are objects exposing __cuda_array_interface__ (CuPy arrays), read
// without copies; small matrices (M) are NumPy arrays. The last argument, launch = (device
// ordinal, stream handle as an integer: cupy.cuda.get_current_stream().ptr), says where the
// kernel is enqueued. Nothing synchronises: a call that passes its checks only enqueues work.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <utility>

// The ops (bind_kernels calls their Stream overloads, the CUDA builds), then the shared binding.
#include "bspline/bspline.h"
#include "compose/compose.h"
#include "warp/warp.h"
#include "welford/welford.h"
#include "bindings/kernels.h"

namespace py = pybind11;

namespace {

// CuPy arrays, and the device and stream to enqueue on.
struct DeviceKernels {
  using Where = std::pair<int, std::uintptr_t>;
  static constexpr const char* kWhereDoc =
      "launch: (device, stream), the CUDA device ordinal and the stream handle to enqueue on.";
  static regrisk::Array array(py::handle obj, const char* name) {
    return regrisk::bindings::device_array(obj, name);
  }
  static regrisk::Stream context(const Where& launch) {
    return regrisk::Stream{launch.first, launch.second};
  }
  static py::arg where_arg() { return py::arg("launch"); }
};

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "regrisk CUDA kernels (CuPy arrays in, asynchronous launches on a given stream)";
  regrisk::bindings::bind_kernels<DeviceKernels>(m);
}
