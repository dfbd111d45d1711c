// libtorch's own intra-op thread pool for tchprune's loops (masks, optimizers, sparse kernels):
// running on the threads libtorch runs on (OpenMP) means no extra threads competing with them
// for the cores.
#include <ATen/Parallel.h>
#include <cstdint>

extern "C" void tchprune_parallel_for(int64_t count, void (*work)(void*, int64_t), void* context) {
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      work(context, i);
    }
  });
}
