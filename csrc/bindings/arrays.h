// Python objects -> regrisk::Array (common/array.h) for the bindings: NumPy arrays (host
// memory, both modules: the CPU kernels' arrays and the CUDA kernels' small host matrices) and
// objects exposing __cuda_array_interface__ such as CuPy arrays (device memory, regrisk._cuda).
// Nothing is converted or copied: the checks (common/checks.h) then judge what was handed over.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "common/array.h"
#include "common/checks.h"

namespace regrisk::bindings {

namespace py = pybind11;

inline void set_dtype(Array& a, const std::string& dtype) {
  std::strncpy(a.dtype, dtype.c_str(), sizeof a.dtype - 1);
}

inline Array host_array(py::handle obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) fail(std::string(name) + ": expected a numpy array");
  const auto arr = py::reinterpret_borrow<py::array>(obj);
  Array a;
  a.name = name;
  a.float32 = arr.dtype().is(py::dtype::of<float>());
  // the name only for messages: str(dtype) runs Python code (~10 us a call, nine per demons step)
  set_dtype(a, a.float32 ? std::string("float32") : std::string(py::str(arr.dtype())));
  a.ndim = static_cast<int>(arr.ndim());
  for (int i = 0; i < a.ndim && i < Array::kMaxDims; ++i) a.shape[i] = arr.shape(i);
  a.data = reinterpret_cast<std::uintptr_t>(arr.data());
  a.nbytes = static_cast<int64_t>(arr.nbytes());
  a.c_contiguous = (arr.flags() & py::array::c_style) != 0;
  a.aligned = (arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
  a.writable = arr.writeable();
  a.host = true;
  return a;
}

// C order per the interface: no strides, or the C strides (axes of extent 1 may have any).
inline bool c_strides(const Array& a, py::handle strides, int64_t itemsize) {
  if (strides.is_none()) return true;
  const auto s = strides.cast<py::tuple>();
  int64_t expected = itemsize;
  for (int i = a.ndim - 1; i >= 0; --i) {
    if (a.shape[i] != 1 && s[i].cast<int64_t>() != expected) return false;
    expected *= a.shape[i];
  }
  return true;
}

// Reads the interface (version 2 or 3): shape, typestr, data = (pointer, read-only), strides.
inline Array interface_array(const py::dict& cai, const char* name) {
  Array a;
  a.name = name;
  const std::string typestr = cai["typestr"].cast<std::string>();
  set_dtype(a, typestr);
  const auto shape = cai["shape"].cast<py::tuple>();
  a.ndim = static_cast<int>(shape.size());
  int64_t size = 1;
  for (int i = 0; i < a.ndim; ++i) {
    const int64_t n = shape[i].cast<int64_t>();
    if (i < Array::kMaxDims) a.shape[i] = n;
    size *= n;
  }
  const auto data = cai["data"].cast<py::tuple>();
  a.data = data[0].cast<std::uintptr_t>();
  const int64_t itemsize = typestr.size() > 2 ? std::stoll(typestr.substr(2)) : 0;
  a.nbytes = size * itemsize;
  a.float32 = typestr == "<f4" || typestr == "=f4";
  const py::object strides = cai.contains("strides") ? py::object(cai["strides"]) : py::none();
  a.c_contiguous = a.ndim <= Array::kMaxDims && c_strides(a, strides, itemsize);
  a.aligned = a.data % 4 == 0;
  a.writable = !data[1].cast<bool>();
  a.host = false;
  return a;
}

inline Array device_array(py::handle obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    fail(std::string(name) + ": expected a cupy array (an object with __cuda_array_interface__)");
  try {
    return interface_array(obj.attr("__cuda_array_interface__").cast<py::dict>(), name);
  } catch (const std::exception&) {  // a missing key, a wrong type, an unreadable typestr
  }
  fail(std::string(name) + ": malformed __cuda_array_interface__");
}

}  // namespace regrisk::bindings
