// The fused LSTM and GRU on the GPU (csrc/cuda/gated_rnn.cu): torch-free
// launchers. The design is the Elman RNN's (csrc/cuda/rnn.h): the input
// projection of every step is one large product in the binding (ATen), the
// recurrence is one persistent cooperative kernel (each block keeps the
// weight rows of its hidden units in shared memory for all T steps, a grid
// barrier between steps) or, when that cannot run, one launch per step of the
// same step code; the cells are the sequence kernels run for one step.
//
// The gates are G·H rows instead of H (LSTM G = 4: i, f, g, o; GRU G = 3:
// r, z, n, torch's order): a block owns hidden units [r0, r0 + U) and all G
// gate rows of each (rows q·H + j of W_hh), so the gate nonlinearities and
// the state update of its units run in the block, after a __syncthreads, with
// no grid barrier beyond the one per step.
//
// Buffers, all contiguous, "acc" the accumulation type (fp32; fp64 for fp64):
//   gates (T, B, 4H) acc   in:  x_t W_ihᵀ in gate slots 0..G-1 (slot 3 of the GRU unused)
//                          out: LSTM i, f, g, o; GRU r, z, n, a = h W_hnᵀ + b_hn
//                          (what the CPU ops save: the backward's only record of the step)
//   cell  (T, B, H) acc    LSTM: every c_t
//   out   (T, B, H)        every h_t, storage type
// The state h_t (dL/d(pre-activations) in BPTT) is carried between steps in
// the accumulation type, never rounded to fp16/bf16 (as the CPU kernels, which
// compute in fp32 from upcast inputs).
//
// BPTT (w_hh_t = W_hhᵀ, (H, G·H) row-major, made by the binding, so that a
// block's hidden units are rows as in the forward), step s = T-1-t:
//   LSTM  dh = grad_out[t] + dz_{t+1} W_hh,  dc = grad_cell[t] + f_{t+1} dc_{t+1}^total
//         dz_t = the four gate gradients (csrc/cpu/gates.h spells them out)
//   GRU   dh = grad_out[t] + z_{t+1} dh_{t+1} + (dz_r, dz_z, r dz_n)_{t+1} W_hh
//         dz_t = (dz_r, dz_z, dz_n, r dz_n): the input side (slots 0..2) and the
//         hidden side (slots 0, 1, 3)
// and a last step for grad_h0 (and the LSTM's grad_c0).
#pragma once
#include <cstdint>

#include "cuda/rnn.h"

namespace fusedseq::cuda {

enum class GatedKind : int32_t { Lstm = 0, Gru = 1 };

struct GatedSeqFwdArgs {
  GatedKind kind;
  const void* h0; int64_t ld_h0;      // (B, H)
  const void* c0; int64_t ld_c0;      // (B, H), LSTM only (else nullptr)
  const void* w_hh; int64_t ld_w_hh;  // (G H, H)
  const void* b_ih;                   // (G H) contiguous or nullptr
  const void* b_hh;                   // (G H) contiguous or nullptr
  void* gates;                        // (T, B, 4H) acc, in/out (above)
  void* out;                          // (T, B, H) out
  void* cell;                         // (T, B, H) acc out, LSTM only
  void* state;                        // workspace: 2 B H acc
  unsigned* grid_barrier;             // workspace: one zeroed counter
  int64_t T_, B, H;
  RnnDtype dtype;
  RnnPath path;
  void* stream;
};

struct GatedSeqBwdArgs {
  GatedKind kind;
  const void* grad_out;              // (T, B, H)
  const void* grad_cell;             // (T, B, H) acc, LSTM only: dL/dc_t from outside the recurrence
  const void* gates;                 // (T, B, 4H) acc: the forward's
  const void* cell;                  // (T, B, H) acc, LSTM: the forward's c_t
  const void* out;                   // (T, B, H), GRU: the forward's h_t
  const void* init; int64_t ld_init; // (B, H): LSTM c0, GRU h0
  const void* w_hh_t; int64_t ld_w_hh_t;  // (H, G H) = W_hhᵀ
  void* grad_z;                      // (T, B, 4H) acc out: LSTM dz_i, dz_f, dz_g, dz_o; GRU dz_r, dz_z, dz_n, r dz_n
  void* grad_h0;                     // (B, H) out
  void* grad_c0;                     // (B, H) out, LSTM only
  void* state;                       // workspace: 2 B G H acc
  void* carry;                       // workspace: B H acc
  unsigned* grid_barrier;            // workspace: one zeroed counter
  int64_t T_, B, H;
  RnnDtype dtype;
  RnnPath path;
  void* stream;
};

// Which path a recurrence of this shape takes on the current device, and why
// (as rnn_seq_plan; rows_per_block counts hidden units).
RnnPlan gated_seq_plan(GatedKind kind, int64_t H, RnnDtype dtype, bool backward);

// Both return the path that ran. Bad arguments: std::invalid_argument naming
// the field; CUDA and emulator failures: std::runtime_error.
RnnPath gated_seq_forward(const GatedSeqFwdArgs& a);
RnnPath gated_seq_backward(const GatedSeqBwdArgs& a);

}  // namespace fusedseq::cuda
