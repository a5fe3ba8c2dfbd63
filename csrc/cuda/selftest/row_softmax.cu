// Self-test: a numerically safe row softmax, one 128-thread block per row.
// The row is cached in dynamic shared memory; the max and the sum are reduced
// with warp shuffles, then across the four warps through shared memory and
// __syncthreads.
//
// Bugs planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>):
//   divergent_syncthreads  threads without a column return before the barriers
//   shuffle_outside_mask   the warp reduction names only half of the warp
//   smem_overread          the loop bound reads one float past the launched
//                          dynamic shared memory
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>

#include "cuda/selftest/selftest.h"

namespace fusedseq::cuda::selftest {
namespace {

constexpr int kThreads = 128, kWarps = kThreads / 32;

FUSEDSEQ_EXTERN_SHARED(float, softmax_row);

#ifdef FUSEDSEQ_MUTANT_shuffle_outside_mask
constexpr unsigned kReduceMask = 0x0000ffffu;
#else
constexpr unsigned kReduceMask = 0xffffffffu;
#endif

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// The block-wide reduction of v, returned to every thread.
template <class Op>
__device__ float block_reduce(float v, Op op) {
  __shared__ float partial[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(kReduceMask, v, offset));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float r = partial[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, partial[w]);
  __syncthreads();  // `partial` is reused by the next reduction
  return r;
}

__global__ void __launch_bounds__(kThreads) row_softmax_kernel(RowSoftmaxParams p) {
  const float* x = p.x + blockIdx.x * p.ldx;
  float* y = p.y + blockIdx.x * p.ldy;
  const int cols = int(p.cols);
#ifdef FUSEDSEQ_MUTANT_divergent_syncthreads
  if (threadIdx.x >= cols) return;  // "nothing to do" - but the barriers below need everyone
#endif
#ifdef FUSEDSEQ_MUTANT_smem_overread
  const int end = cols + 1;
#else
  const int end = cols;
#endif
  float m = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    softmax_row[c] = x[c];
    m = fmaxf(m, x[c]);
  }
  m = block_reduce(m, Max{});
  float s = 0.0f;
  for (int c = threadIdx.x; c < end; c += kThreads) {
    const float e = expf(softmax_row[c] - m);
    softmax_row[c] = e;
    s += e;
  }
  s = block_reduce(s, Sum{});
  const float inv = 1.0f / s;
  for (int c = threadIdx.x; c < cols; c += kThreads) y[c] = softmax_row[c] * inv;
}

}  // namespace

void row_softmax(const RowSoftmaxParams& p) {
  if (p.rows <= 0 || p.cols <= 0) throw std::invalid_argument("fusedseq selftest row_softmax: empty input");
  if (p.rows > 0x7fffffff) throw std::invalid_argument("fusedseq selftest row_softmax: too many rows");
  const size_t smem = size_t(p.cols) * sizeof(float);
  if (smem > 96 * 1024) throw std::invalid_argument("fusedseq selftest row_softmax: at most 24576 columns");
  launch(row_softmax_kernel, {dim3(unsigned(p.rows)), dim3(kThreads), smem, p.stream}, p);
}

}  // namespace fusedseq::cuda::selftest
