// The fused Elman RNN on the GPU (csrc/cuda/rnn.cu): torch-free launchers.
//
//   cell forward    h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)   one kernel
//   cell backward   dz = dh' ∘ act'(h'), dx = dz W_ih, dh = dz W_hh   one kernel
//                   (dW_ih = dzᵀ x, dW_hh = dzᵀ h, db = Σ dz: products in the binding)
//   recurrence      out[t] = act(proj[t] + b_ih + b_hh + h_{t-1} W_hhᵀ), proj[t] = x_t W_ihᵀ
//                   (one large product in the binding, unrounded: fp32 for fp16/bf16)
//   BPTT            dz_t = (grad_out[t] + [t = T-1] grad_h_n + dz_{t+1} W_hh) ∘ act'(out[t]),
//                   grad_h0 = dz_0 W_hh
//
// The two recurrences run as one persistent cooperative kernel (each block
// keeps its rows of W_hh, or of W_hhᵀ for BPTT, in shared memory for every
// step; a grid barrier separates the steps) when the rows fit on chip and
// every block can be resident, else as one kernel launch per step, which
// reads W_hh from global memory (L2). `path` forces either (tests; a forced
// persistent path that cannot run throws instead of falling back).
//
// Storage types: fp32, fp64, bf16, fp16; arithmetic in fp32 (fp64 for fp64),
// and the recurrent state h_t (dz_t in BPTT) is carried between steps in that
// precision in `state`, not rounded to the storage type; dL/dz leaves the
// backward kernels in that precision too, so that the weight gradients (its
// products with x and h) are not computed from a rounded dz.
// Every launcher checks what it needs and throws std::invalid_argument naming
// the field; CUDA and emulator failures are std::runtime_error.
#pragma once
#include <cstdint>

#include "common/params.h"

namespace fusedseq::cuda {

enum class RnnDtype : int32_t { F32 = 0, F64 = 1, BF16 = 2, FP16 = 3 };
enum class RnnPath : int32_t { Auto = 0, Persistent = 1, PerStep = 2 };

struct RnnCellFwdArgs {
  const void* x; int64_t ld_x;        // (B, I)
  const void* h; int64_t ld_h;        // (B, H)
  const void* w_ih; int64_t ld_w_ih;  // (H, I)
  const void* w_hh; int64_t ld_w_hh;  // (H, H)
  const void* b_ih;                   // (H) or nullptr
  const void* b_hh;                   // (H) or nullptr
  void* h_next;                       // (B, H) contiguous, out
  int64_t B, I, H;
  Activation act;
  RnnDtype dtype;
  void* stream;  // cudaStream_t; ignored by the emulator
};
void rnn_cell_forward(const RnnCellFwdArgs& a);

struct RnnCellBwdArgs {
  const void* grad_h_next; int64_t ld_grad_h_next;  // (B, H)
  const void* h_next; int64_t ld_h_next;            // (B, H)
  const void* w_ih; int64_t ld_w_ih;                // (H, I)
  const void* w_hh; int64_t ld_w_hh;                // (H, H)
  void* grad_z;                                     // (B, H) contiguous, out: dL/dz (z the pre-activation),
                                                    // in the accumulation type (fp32; fp64 for fp64)
  void* grad_x;                                     // (B, I) contiguous, out
  void* grad_h;                                     // (B, H) contiguous, out
  int64_t B, I, H;
  Activation act;
  RnnDtype dtype;
  void* stream;
};
void rnn_cell_backward(const RnnCellBwdArgs& a);

// The forward recurrence (see the top of this file).
struct RnnSeqFwdArgs {
  const void* h0; int64_t ld_h0;      // (B, H)
  const void* w_hh; int64_t ld_w_hh;  // (H, H)
  const void* b_ih;                   // (H) or nullptr
  const void* b_hh;                   // (H) or nullptr
  const void* proj;                   // (T, B, H) contiguous: x_t W_ihᵀ in the accumulation type
                                      // (may be `out` itself for fp32/fp64: each element is read before it is written)
  void* out;                          // (T, B, H) contiguous, out: h_t
  void* state;                        // workspace: 2 B H elements of the accumulation type
  unsigned* grid_barrier;             // workspace: one zeroed counter
  int64_t T_, B, H;
  Activation act;
  RnnDtype dtype;
  RnnPath path;
  void* stream;
};
// BPTT. w_hh_t is W_hhᵀ, row-major (the binding transposes it once), so that
// a block's hidden units are rows here as in the forward.
struct RnnSeqBwdArgs {
  const void* grad_out;                   // (T, B, H) contiguous
  const void* grad_h_n; int64_t ld_grad_h_n;  // (B, H)
  const void* out;                        // (T, B, H) contiguous: the forward's h_t
  const void* w_hh_t; int64_t ld_w_hh_t;  // (H, H) = W_hhᵀ
  void* grad_z;                           // (T, B, H) contiguous, out: dL/dz_t in the accumulation type
  void* grad_h0;                          // (B, H) contiguous, out
  void* state;                            // workspace: 2 B H elements of the accumulation type
  unsigned* grid_barrier;                 // workspace: one zeroed counter
  int64_t T_, B, H;
  Activation act;
  RnnDtype dtype;
  RnnPath path;
  void* stream;
};

// Which path a recurrence of this shape takes on the current device, and why
// (for benchmarks, tests and NOTES): blocks and rows per block of the
// persistent kernel, or 0 blocks and the reason it does not fit.
struct RnnPlan {
  bool persistent;
  int blocks, rows_per_block;
  int64_t smem_bytes;
  const char* why;  // static text
};
RnnPlan rnn_seq_plan(int64_t H, RnnDtype dtype, bool backward);

// Both return the path that ran.
RnnPath rnn_seq_forward(const RnnSeqFwdArgs& a);
RnnPath rnn_seq_backward(const RnnSeqBwdArgs& a);

}  // namespace fusedseq::cuda
