// Self-test: a persistent recurrence h_{t+1} = tanh(W h_t) for a batch of B
// vectors, the shape of our fused RNN kernels. One cooperative launch of
// `blocks` co-resident blocks runs every step; block b keeps rows
// [b R, (b + 1) R) of W (R = H / blocks) in shared memory for the whole
// sequence, computes those rows of h_{t+1} from all of h_t, and a grid
// barrier separates the steps (step t + 1 reads what every block wrote).
//
// Bug planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>):
//   missing_grid_barrier   steps are not separated: a block reads h_t before
//                          the other blocks have written it
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>

#include "cuda/selftest/selftest.h"

namespace fusedseq::cuda::selftest {
namespace {

constexpr int kThreads = 128, kWarps = kThreads / 32;

FUSEDSEQ_EXTERN_SHARED(float, rnn_w_rows);

__global__ void __launch_bounds__(kThreads) persistent_rnn_kernel(PersistentRnnParams p) {
  const int H = int(p.H), B = int(p.B), R = H / int(gridDim.x), r0 = int(blockIdx.x) * R;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int i = threadIdx.x; i < R * H; i += kThreads) rnn_w_rows[i] = p.w[int64_t(r0) * H + i];
  __syncthreads();
  GridBarrier grid{p.barrier};
  for (int64_t t = 0; t < p.steps; ++t) {
    const float* h = t == 0 ? p.h0 : p.out + (t - 1) * B * H;
    float* next = p.out + t * B * H;
    // One warp per (row, batch) output; lanes split the dot product.
    for (int o = warp; o < R * B; o += kWarps) {
      const int i = o % R, b = o / R;
      float acc = 0.0f;
      for (int k = lane; k < H; k += 32) acc += rnn_w_rows[i * H + k] * h[int64_t(b) * H + k];
      for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
      if (lane == 0) next[int64_t(b) * H + r0 + i] = tanhf(acc);
    }
#ifndef FUSEDSEQ_MUTANT_missing_grid_barrier
    grid.sync();
#endif
  }
}

}  // namespace

void persistent_rnn(const PersistentRnnParams& p) {
  auto require = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("fusedseq selftest persistent_rnn: ") + what);
  };
  require(p.B > 0 && p.H > 0 && p.steps > 0, "B, H and steps must be positive");
  require(p.blocks > 0 && p.H % p.blocks == 0, "H must be a multiple of the number of blocks");
  require(p.barrier != nullptr, "the grid barrier needs its workspace counter");
  const size_t smem = size_t(p.H / p.blocks) * size_t(p.H) * sizeof(float);
  require(smem <= 200 * 1024, "H too large: a block's rows of W must fit in shared memory");
  const int resident = max_cooperative_blocks(persistent_rnn_kernel, kThreads, smem);
  if (p.blocks > resident)
    throw std::runtime_error("fusedseq selftest persistent_rnn: " + std::to_string(p.blocks) +
                             " blocks cannot all be resident on this device (at most " + std::to_string(resident) +
                             ")");
  launch_cooperative(persistent_rnn_kernel, {dim3(unsigned(p.blocks)), dim3(kThreads), smem, p.stream}, p);
}

}  // namespace fusedseq::cuda::selftest
