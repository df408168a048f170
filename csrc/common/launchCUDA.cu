// Host side of the launch plumbing (common/launch.cuh): device selection and error reporting.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/launch.cuh"

namespace regrisk::cuda {

Dims32 dims32(const Grid3& g, const char* what) {
  if (g.size() > int64_t(UINT32_MAX)) {
    throw std::runtime_error(std::string("regrisk._cuda: ") + what +
                             ": more than 2^32 voxels per volume is not supported");
  }
  return Dims32{uint32_t(g.d), uint32_t(g.h), uint32_t(g.w)};
}

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("regrisk._cuda: cannot use CUDA device ") +
                             std::to_string(device) + ": " + cudaGetErrorString(err));
  }
  previous_ = current;  // the caller's device (CuPy's current one) comes back afterwards
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("regrisk._cuda: ") + what + " failed: " +
                             cudaGetErrorString(err));
  }
}

}  // namespace regrisk::cuda
