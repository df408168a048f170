// Where a kernel runs. Every op has one C++ name with two overloads that differ only in this
// last argument: Threads selects the C++/OpenMP build (csrc/<op>/<op>.cpp), Stream the CUDA
// build (csrc/<op>/<op>CUDA.cu). Both travel with the call: nothing process-wide is read
// except the default team size when Threads is 0.
#pragma once

#include <cstdint>

namespace regrisk {

// OpenMP team size for one call; 0 asks for the process default (common/parallel.h).
struct Threads {
  int n = 0;
};

// CUDA device ordinal and stream (a cudaStream_t as an integer, so no CUDA header is needed).
struct Stream {
  int device = 0;
  std::uintptr_t handle = 0;
};

}  // namespace regrisk
