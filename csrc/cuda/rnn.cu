// The fused Elman RNN on the GPU: cell forward/backward kernels and the
// persistent (or per-step) recurrence, forward and BPTT. API and shapes in
// csrc/cuda/rnn.h; the CPU kernels (csrc/cpu/rnn_cpu.cpp) are the reference
// for the contract, benchmarks/NOTES.md for the floors and predictions.
//
// Every matrix product of a recurrent step is the warp tile of
// csrc/cuda/recurrent_tile.cuh (shared with the LSTM and GRU kernels).
//
// Kernels: cell forward (both products, biases, activation: one launch);
// cell backward (dx and dh in one launch, dz made per chunk in shared
// memory); the recurrences forward and BPTT as one persistent cooperative
// launch (W_hh rows, or W_hhᵀ rows, staged once in shared memory; a grid
// barrier between steps) or, when that cannot run, one launch per step of the
// same step code reading W from global memory.
//
// Bugs planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>, csrc/emu/README.md):
//   rnn_missing_grid_barrier   the persistent kernels' steps are not separated:
//                              a block reads h_{t-1} (dz_{t+1}) before the other
//                              blocks have written it
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/recurrent_tile.cuh"
#include "cuda/rnn.h"

namespace fusedseq::cuda {
namespace {

using namespace recurrent;
constexpr int kStepRows = kWarps * kRows;     // hidden units per block of the cell / per-step kernels
constexpr int kMinRows = 8;                   // fewest hidden units per block of the persistent kernels



// relu keeps NaN (as torch.relu); tanh in the arithmetic type.
template <class A>
__device__ __forceinline__ A activate(A v, Activation act) {
  if (act == Activation::Relu) return v < A(0) ? A(0) : v;
  if constexpr (std::is_same_v<A, double>) return tanh(v);
  else return tanhf(v);
}
// g · act'(z) from y = act(z): tanh' = 1 - y², relu' = [y > 0] (a select, as the CPU kernel).
template <class A>
__device__ __forceinline__ A times_act_grad(A g, A y, Activation act) {
  return act == Activation::Relu ? (y > A(0) ? g : A(0)) : g * (A(1) - y * y);
}

// ================================================================== cell ==
template <class T>
struct CellFwd {
  const T* x; int64_t ld_x;
  const T* h; int64_t ld_h;
  const T* w_ih; int64_t ld_w_ih;
  const T* w_hh; int64_t ld_w_hh;
  const T* b_ih;
  const T* b_hh;
  T* h_next;
  int64_t B, I, H;
  Activation act;
};

// Grid: H / kStepRows blocks; warp w owns units [j0, j0 + kRows) and runs both
// products of every batch tile into the same accumulators, then the biases
// and the activation: the whole cell in one pass over W_ih and W_hh.
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_cell_fwd_kernel(CellFwd<T> p) {
  using A = AccT<T>;
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int64_t j0 = int64_t(blockIdx.x) * kStepRows + int64_t(warp) * kRows;
  if (j0 >= p.H) return;  // the whole warp: no collective is left half-joined
  const int nr = int(min64(kRows, p.H - j0));
  const bool owner = lane % 4 == 0;  // the element this lane's epilogue owns (tile_sum_for_lane)
  const int mr = (lane / 4) / kBatch, mb = (lane / 4) % kBatch;
  for (int64_t b0 = 0; b0 < p.B; b0 += kBatch) {
    const int nb = int(min64(kBatch, p.B - b0));
    A acc[kRows][kBatch] = {};
    tile_dot(acc, p.w_ih + j0 * p.ld_w_ih, p.ld_w_ih, nr, p.x + b0 * p.ld_x, p.ld_x, nb, p.I, lane);
    tile_dot(acc, p.w_hh + j0 * p.ld_w_hh, p.ld_w_hh, nr, p.h + b0 * p.ld_h, p.ld_h, nb, p.H, lane);
    A v = tile_sum_for_lane(acc, lane);
    if (owner && mr < nr && mb < nb) {
      const int64_t j = j0 + mr, b = b0 + mb;
      if (p.b_ih) v += load<A>(p.b_ih + j);
      if (p.b_hh) v += load<A>(p.b_hh + j);
      store(p.h_next + b * p.H + j, activate(v, p.act));
    }
  }
}

template <class T>
struct CellBwd {
  const T* grad_h_next; int64_t ld_g;
  const T* h_next; int64_t ld_y;
  const T* w_ih; int64_t ld_w_ih;
  const T* w_hh; int64_t ld_w_hh;
  AccT<T>* grad_z;  // in the arithmetic type: the weight gradients are products of it
  T* grad_x;
  T* grad_h;
  int64_t B, I, H;
  Activation act;
};

// dx = dz W_ih and dh = dz W_hh in one launch: thread c owns column c of
// [W_ih | W_hh] (reads of W coalesced across the warp) and a batch tile of
// accumulators. dz = dh' ∘ act'(h') is computed once per chunk of kThreads
// units into shared memory, never materialised before the kernel; block 0
// also writes it out for the weight gradients.
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_cell_bwd_kernel(CellBwd<T> p) {
  using A = AccT<T>;
  __shared__ A dz_s[kBatch][kThreads];
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool is_x = c < p.I, active = c < p.I + p.H;
  const T* w = is_x ? p.w_ih + c : p.w_hh + (c - p.I);
  const int64_t ld_w = is_x ? p.ld_w_ih : p.ld_w_hh;
  for (int64_t b0 = 0; b0 < p.B; b0 += kBatch) {
    const int nb = int(min64(kBatch, p.B - b0));
    A acc[kBatch] = {};
    for (int64_t jc = 0; jc < p.H; jc += kThreads) {
      const int nj = int(min64(kThreads, p.H - jc));
      __syncthreads();  // the previous chunk is consumed
      if (int(threadIdx.x) < nj) {
        const int64_t j = jc + threadIdx.x;
        for (int b = 0; b < nb; ++b) {
          const A dz = times_act_grad(load<A>(p.grad_h_next + (b0 + b) * p.ld_g + j),
                                      load<A>(p.h_next + (b0 + b) * p.ld_y + j), p.act);
          dz_s[b][threadIdx.x] = dz;
          if (blockIdx.x == 0) store(p.grad_z + (b0 + b) * p.H + j, dz);
        }
      }
      __syncthreads();
      if (active)
        for (int jj = 0; jj < nj; ++jj) {
          const A wv = load<A>(w + (jc + jj) * ld_w);
          for (int b = 0; b < kBatch; ++b)
            if (b < nb) acc[b] += dz_s[b][jj] * wv;
        }
    }
    if (active)
      for (int b = 0; b < nb; ++b) {
        if (is_x) store(p.grad_x + (b0 + b) * p.I + c, acc[b]);
        else store(p.grad_h + (b0 + b) * p.H + (c - p.I), acc[b]);
      }
  }
}


template <class T>
struct SeqFwd {
  const T* h0; int64_t ld_h0;
  const T* w_hh; int64_t ld_w_hh;
  const T* b_ih;
  const T* b_hh;
  const AccT<T>* proj;  // may alias out (fp32, fp64)
  T* out;
  AccT<T>* state;  // 2 x (B, H): h_t in the arithmetic type, ping-pong
  unsigned* grid_barrier;
  int64_t T_, B, H;
  Activation act;
};

// Step t for the block's units [r0, r0 + nrows), whose rows of W_hh start at
// w (shared memory in the persistent kernel, global in the per-step one):
// out[t] = act(proj[t] + b_ih + b_hh + h_{t-1} W_hhᵀ), h_{-1} = h0.
template <class T>
__device__ __forceinline__ void fwd_step(const SeqFwd<T>& p, int64_t t, const T* w, int64_t ld_w, int64_t r0,
                                         int nrows) {
  using A = AccT<T>;
  const int64_t BH = p.B * p.H;
  A* next = p.state + (t & 1) * BH;
  const A* prev = p.state + ((t + 1) & 1) * BH;
  T* out_t = p.out + t * BH;
  for_each_tile<A>(
      nrows, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        A acc[kRows][kBatch] = {};
        if (t == 0) tile_dot(acc, w + i0 * ld_w, ld_w, nr, p.h0 + b0 * p.ld_h0, p.ld_h0, nb, p.H, lane);
        else tile_dot(acc, w + i0 * ld_w, ld_w, nr, prev + b0 * p.H, p.H, nb, p.H, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int i, int64_t b, A v) {
        const int64_t j = r0 + i, at = b * p.H + j;
        v += p.proj[t * BH + at];
        if (p.b_ih) v += load<A>(p.b_ih + j);
        if (p.b_hh) v += load<A>(p.b_hh + j);
        const A h = activate(v, p.act);
        next[at] = h;
        store(out_t + at, h);
      });
}

template <class T>
struct SeqBwd {
  const T* grad_out;
  const T* grad_h_n; int64_t ld_grad_h_n;
  const T* out;
  const T* w_hh_t; int64_t ld_w;
  AccT<T>* grad_z;  // in the arithmetic type: the weight gradients are products of it
  T* grad_h0;
  AccT<T>* state;  // 2 x (B, H): dz_t in the arithmetic type, ping-pong
  unsigned* grid_barrier;
  int64_t T_, B, H;
  Activation act;
};

// Step s = 0..T of BPTT for the block's units, w its rows of W_hhᵀ:
//   s < T (t = T-1-s): dz_t = (grad_out[t] + [s = 0] grad_h_n + dz_{t+1} W_hh) ∘ act'(out[t]);
//   s = T:             grad_h0 = dz_0 W_hh.
template <class T>
__device__ __forceinline__ void bwd_step(const SeqBwd<T>& p, int64_t s, const T* w, int64_t ld_w, int64_t r0,
                                         int nrows) {
  using A = AccT<T>;
  const int64_t BH = p.B * p.H, t = p.T_ - 1 - s;
  A* next = p.state + (s & 1) * BH;
  const A* prev = p.state + ((s + 1) & 1) * BH;
  for_each_tile<A>(
      nrows, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        if (s == 0) return A(0);  // (warp-uniform) nothing flows back into the last step
        A acc[kRows][kBatch] = {};
        tile_dot(acc, w + i0 * ld_w, ld_w, nr, prev + b0 * p.H, p.H, nb, p.H, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int i, int64_t b, A v) {
        const int64_t j = r0 + i, at = b * p.H + j;
        if (t < 0) {
          store(p.grad_h0 + at, v);
          return;
        }
        v += load<A>(p.grad_out + t * BH + at);
        if (s == 0) v += load<A>(p.grad_h_n + b * p.ld_grad_h_n + j);
        const A dz = times_act_grad(v, load<A>(p.out + t * BH + at), p.act);
        next[at] = dz;
        store(p.grad_z + t * BH + at, dz);
      });
}

FUSEDSEQ_EXTERN_SHARED(unsigned char, rnn_w_smem);


// One cooperative launch for all T steps: block b owns units
// [b R, b R + R), keeps their rows of W_hh in shared memory throughout, and
// the grid barrier separates step t (which writes h_t) from step t + 1
// (which reads all of it).
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_fwd_persistent_kernel(SeqFwd<T> p, int rows_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int nrows = int(min64(rows_per_block, p.H - r0));
  const T* w_s = stage_rows(reinterpret_cast<T*>(rnn_w_smem), p.w_hh, p.ld_w_hh, r0, nrows, p.H);
  GridBarrier grid{p.grid_barrier};
  for (int64_t t = 0; t < p.T_; ++t) {
    fwd_step(p, t, w_s, p.H, r0, nrows);
#ifndef FUSEDSEQ_MUTANT_rnn_missing_grid_barrier
    if (t + 1 < p.T_) grid.sync();
#endif
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) rnn_bwd_persistent_kernel(SeqBwd<T> p, int rows_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int nrows = int(min64(rows_per_block, p.H - r0));
  const T* w_s = stage_rows(reinterpret_cast<T*>(rnn_w_smem), p.w_hh_t, p.ld_w, r0, nrows, p.H);
  GridBarrier grid{p.grid_barrier};
  for (int64_t s = 0; s <= p.T_; ++s) {
    bwd_step(p, s, w_s, p.H, r0, nrows);
#ifndef FUSEDSEQ_MUTANT_rnn_missing_grid_barrier
    if (s < p.T_) grid.sync();
#endif
  }
}

// The fallback: one launch per step, W read from global memory (L2).
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_fwd_step_kernel(SeqFwd<T> p, int64_t t) {
  const int64_t r0 = int64_t(blockIdx.x) * kStepRows;
  fwd_step(p, t, p.w_hh + r0 * p.ld_w_hh, p.ld_w_hh, r0, int(min64(kStepRows, p.H - r0)));
}
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_bwd_step_kernel(SeqBwd<T> p, int64_t s) {
  const int64_t r0 = int64_t(blockIdx.x) * kStepRows;
  bwd_step(p, s, p.w_hh_t + r0 * p.ld_w, p.ld_w, r0, int(min64(kStepRows, p.H - r0)));
}

// ================================================================= host ==

template <class T>
RnnPlan plan_for(int64_t H, bool backward) {
  const DeviceLimits dev = device_limits();
  const int64_t row_bytes = H * int64_t(sizeof(T));
  if (!dev.cooperative) return {false, 0, 0, 0, "the device has no cooperative launch"};
  // At most one block per SM, the rows split evenly (in whole register
  // tiles), but at least kMinRows per block: below that the grid barrier's
  // arrivals (one per block) cost more than the rows' work saves (NOTES.md).
  int64_t rows = (H + dev.sms - 1) / dev.sms;
  rows = (rows + kRows - 1) / kRows * kRows;
  rows = rows > kMinRows ? rows : kMinRows;
  rows = rows < H ? rows : H;
  const int64_t smem = rows * row_bytes;
  if (smem > dev.smem_per_block)
    return {false, 0, 0, 0, "W_hh does not fit in the shared memory of all SMs (rows x H x element > per-block limit)"};
  const int blocks = int((H + rows - 1) / rows);
  const int resident = backward ? max_cooperative_blocks(rnn_bwd_persistent_kernel<T>, kThreads, size_t(smem))
                                : max_cooperative_blocks(rnn_fwd_persistent_kernel<T>, kThreads, size_t(smem));
  if (blocks > resident) return {false, 0, 0, 0, "a cooperative launch cannot make all blocks co-resident"};
  return {true, blocks, int(rows), smem, "W_hh stays in shared memory: one cooperative launch"};
}


}  // namespace

RnnPlan rnn_seq_plan(int64_t H, RnnDtype dtype, bool backward) {
  require(H > 0, "rnn_seq_plan", "H must be positive");
  return dispatch(dtype, [&]<class T>() { return plan_for<T>(H, backward); });
}

void rnn_cell_forward(const RnnCellFwdArgs& a) {
  const char* what = "rnn_cell_forward";
  require(a.B > 0 && a.I > 0 && a.H > 0, what, "B, I and H must be positive");
  require(a.x && a.h && a.w_ih && a.w_hh && a.h_next, what, "x, h, w_ih, w_hh and h_next are required");
  dispatch(a.dtype, [&]<class T>() {
    const CellFwd<T> p{static_cast<const T*>(a.x), a.ld_x, static_cast<const T*>(a.h), a.ld_h,
                       static_cast<const T*>(a.w_ih), a.ld_w_ih, static_cast<const T*>(a.w_hh), a.ld_w_hh,
                       static_cast<const T*>(a.b_ih), static_cast<const T*>(a.b_hh), static_cast<T*>(a.h_next),
                       a.B, a.I, a.H, a.act};
    launch(rnn_cell_fwd_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p);
  });
}

void rnn_cell_backward(const RnnCellBwdArgs& a) {
  const char* what = "rnn_cell_backward";
  require(a.B > 0 && a.I > 0 && a.H > 0, what, "B, I and H must be positive");
  require(a.grad_h_next && a.h_next && a.w_ih && a.w_hh && a.grad_z && a.grad_x && a.grad_h, what,
          "every tensor is required");
  dispatch(a.dtype, [&]<class T>() {
    const CellBwd<T> p{static_cast<const T*>(a.grad_h_next), a.ld_grad_h_next, static_cast<const T*>(a.h_next),
                       a.ld_h_next, static_cast<const T*>(a.w_ih), a.ld_w_ih, static_cast<const T*>(a.w_hh),
                       a.ld_w_hh, static_cast<AccT<T>*>(a.grad_z), static_cast<T*>(a.grad_x), static_cast<T*>(a.grad_h),
                       a.B, a.I, a.H, a.act};
    launch(rnn_cell_bwd_kernel<T>, {dim3(blocks_for(a.I + a.H, kThreads)), dim3(kThreads), 0, a.stream}, p);
  });
}

RnnPath rnn_seq_forward(const RnnSeqFwdArgs& a) {
  const char* what = "rnn_seq_forward";
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.h0 && a.w_hh && a.proj && a.out && a.state, what, "h0, w_hh, proj, out and state are required");
  return dispatch(a.dtype, [&]<class T>() {
    const SeqFwd<T> p{static_cast<const T*>(a.h0), a.ld_h0, static_cast<const T*>(a.w_hh), a.ld_w_hh,
                      static_cast<const T*>(a.b_ih), static_cast<const T*>(a.b_hh),
                      static_cast<const AccT<T>*>(a.proj), static_cast<T*>(a.out), static_cast<AccT<T>*>(a.state),
                      a.grid_barrier, a.T_, a.B, a.H, a.act};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<T>(a.H, false);
    return run_recurrence(
        a.path, plan, what, a.grid_barrier, a.stream, rnn_fwd_persistent_kernel<T>, p, [&] {
          for (int64_t t = 0; t < a.T_; ++t)
            launch(rnn_fwd_step_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p, t);
        });
  });
}

RnnPath rnn_seq_backward(const RnnSeqBwdArgs& a) {
  const char* what = "rnn_seq_backward";
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.grad_out && a.grad_h_n && a.out && a.w_hh_t && a.grad_z && a.grad_h0 && a.state, what,
          "every tensor is required");
  return dispatch(a.dtype, [&]<class T>() {
    const SeqBwd<T> p{static_cast<const T*>(a.grad_out), static_cast<const T*>(a.grad_h_n), a.ld_grad_h_n,
                      static_cast<const T*>(a.out), static_cast<const T*>(a.w_hh_t), a.ld_w_hh_t,
                      static_cast<AccT<T>*>(a.grad_z), static_cast<T*>(a.grad_h0), static_cast<AccT<T>*>(a.state),
                      a.grid_barrier, a.T_, a.B, a.H, a.act};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<T>(a.H, true);
    return run_recurrence(
        a.path, plan, what, a.grid_barrier, a.stream, rnn_bwd_persistent_kernel<T>, p, [&] {
          for (int64_t s = 0; s <= a.T_; ++s)
            launch(rnn_bwd_step_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p, s);
        });
  });
}

}  // namespace fusedseq::cuda
