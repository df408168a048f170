// Host emulation of the few CUDA features the kernels use, for checking the CUDA sources on a
// machine without a GPU (tests/test_cuda_kernels.py). Every block runs its threads as real host
// threads, so __syncthreads() is a barrier and __shared__ arrays (function statics) are shared
// by the block's threads; blocks run one after another on a deliberately small grid, so the
// kernels' grid-stride loops over voxels, rows and batch run too.
//
// The test copies csrc/, replaces `#include <cuda_runtime.h>` by this header and every
// `kernel<<<grid, threads, 0, stream>>>(args)` by `emu_launch(grid, threads, kernel, args)`.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

using std::sqrt;

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 blockIdx, threadIdx;
inline dim3 gridDim, blockDim;
inline std::barrier<>* emu_block_barrier = nullptr;
#define __syncthreads() emu_block_barrier->arrive_and_wait()

typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr int cudaSuccess = 0;
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return 0;
}
inline cudaError_t cudaSetDevice(int) { return 0; }
inline cudaError_t cudaGetLastError() { return 0; }
inline const char* cudaGetErrorString(cudaError_t) { return "emu"; }

// Host threads the emulated launches have run (reported by the test program).
inline long emu_threads = 0;

template <class K, class... A>
void emu_launch(dim3 g, int threads, K k, A... a) {
  gridDim = dim3(g.x > 3 ? 3 : g.x, g.y > 2 ? 2 : g.y);
  blockDim = dim3(threads);
  for (unsigned by = 0; by < gridDim.y; ++by) {
    for (unsigned bx = 0; bx < gridDim.x; ++bx) {
      std::barrier<> bar(threads);
      emu_block_barrier = &bar;
      std::vector<std::thread> pool;
      for (int tx = 0; tx < threads; ++tx) {
        pool.emplace_back([=] {
          blockIdx = dim3(bx, by);
          threadIdx = dim3(tx);
          k(a...);
        });
      }
      for (auto& t : pool) t.join();
      emu_threads += threads;
    }
  }
}
