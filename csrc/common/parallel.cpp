// The process-wide default team size: what a kernel call gets when it passes Threads{0}.
#include "common/parallel.h"

#include <atomic>

#if defined(REGRISK_OPENMP)
#include <omp.h>
#endif

namespace regrisk {
namespace cpu {
namespace {
std::atomic<int> g_default{0};  // 0: OpenMP's default team size
}

void set_default_threads(int n) { g_default.store(n > 0 ? n : 0); }

int default_threads() {
#if defined(REGRISK_OPENMP)
  const int n = g_default.load();
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace cpu
}  // namespace regrisk
