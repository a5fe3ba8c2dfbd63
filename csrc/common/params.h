// Torch-free parameter blocks shared by the CPU and CUDA kernels.
//
// A kernel sees raw pointers, sizes and strides, never an at::Tensor: the
// bindings (csrc/bindings/) validate tensors, allocate outputs and fill these
// structs. Strides are in elements. Every tensor's innermost dimension has unit
// stride (the bindings make it so); the outer strides are free, which is what
// lets a transposed (B, N, H, D) view reach the attention kernel uncopied.
#pragma once
#include <cstdint>
#include <functional>

namespace fusedseq {

enum class Activation : int32_t { Tanh = 0, Relu = 1 };

// Runs body(begin, end) over sub-ranges of [begin, end), possibly on several
// threads. The bindings pass at::parallel_for, so the kernels share torch's
// thread pool (and its thread count) instead of bringing their own.
using ParallelFor = std::function<void(int64_t begin, int64_t end, int64_t grain,
                                       const std::function<void(int64_t, int64_t)>& body)>;

// ---------------------------------------------------------------- RNN cell --
// h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh). All matrices row-major, contiguous.
template <typename T>
struct RnnCellFwdParams {
  const T* x;     // (B, I)
  const T* h;     // (B, H)
  const T* w_ih;  // (H, I)
  const T* w_hh;  // (H, H)
  const T* b_ih;  // (H) or nullptr
  const T* b_hh;  // (H) or nullptr
  T* h_next;      // (B, H) out
  int64_t B, I, H;
  Activation act;
};

// Backward of the cell from its output: act'(z) is a function of h' alone
// (tanh: 1 - h'^2, relu: h' > 0), so the pre-activation is never stored.
template <typename T>
struct RnnCellBwdParams {
  const T* grad_h_next;  // (B, H)
  const T* h_next;       // (B, H)
  const T* x;            // (B, I)
  const T* h;            // (B, H)
  const T* w_ih;         // (H, I)
  const T* w_hh;         // (H, H)
  T* grad_z;             // (B, H)  scratch: dL/dz, z the pre-activation
  T* grad_x;             // (B, I)  out
  T* grad_h;             // (B, H)  out
  T* grad_w_ih;          // (H, I)  out
  T* grad_w_hh;          // (H, H)  out
  T* grad_b;             // (H)     out, or nullptr (no bias)
  int64_t B, I, H;
  Activation act;
};

// ----------------------------------------------------------- RNN sequence --
// The recurrence alone: on entry out[t] holds x_t W_ihᵀ (one large matrix
// product done by the caller); on exit out[t] = h_t, where
// h_t = act(out[t] + b_ih + b_hh + h_{t-1} W_hhᵀ) and h_{-1} = h0. The biases
// are added in the recurrence's epilogue, not in a pass of their own.
template <typename T>
struct RnnSeqFwdParams {
  const T* h0;    // (B, H)
  const T* w_hh;  // (H, H)
  const T* b_ih;  // (H) or nullptr
  const T* b_hh;  // (H) or nullptr
  T* out;         // (T, B, H) in: input projections, out: hidden states
  int64_t T_, B, H;
  Activation act;
};

// Back-propagation through time for the recurrence. Produces dL/dz_t for
// every step (from which the caller gets dx, dW_ih, dW_hh, db as large
// products) and dL/dh0.
//   dz_t = (grad_out[t] + [t == T-1] grad_h_n + dz_{t+1} W_hh) * act'(h_t)
//   grad_h0 = dz_0 W_hh
template <typename T>
struct RnnSeqBwdParams {
  const T* grad_out;  // (T, B, H)
  const T* grad_h_n;  // (B, H)
  const T* out;       // (T, B, H) the forward's hidden states
  const T* w_hh;      // (H, H)
  T* grad_z;          // (T, B, H) out
  T* grad_h0;         // (B, H)    out
  int64_t T_, B, H;
  Activation act;
};

// -------------------------------------------------------------- attention --
// O = softmax(Q Kᵀ · scale [+ causal mask]) V, GQA: query head h reads
// key/value head h / (Hq / Hkv). Causal is top-left aligned, as in
// scaled_dot_product_attention(is_causal=True): query i sees keys j <= i.
struct AttnShape {
  int64_t B, Hq, Hkv, Nq, Nk, D;
  double scale;  // double so float64 attention stays float64-accurate
  bool causal;
};

// Strides (in elements) of a (B, H, N, D) tensor over its B, H and N dims.
struct Strides3 {
  int64_t b, h, n;
};

template <typename T>
struct AttnFwdParams {
  AttnShape s;
  const T* q; Strides3 q_st;  // (B, Hq, Nq, D)
  const T* k; Strides3 k_st;  // (B, Hkv, Nk, D)
  const T* v; Strides3 v_st;  // (B, Hkv, Nk, D)
  T* out;                     // (B, Hq, Nq, D) contiguous, out
  T* lse;                     // (B, Hq, Nq) contiguous, out: natural-log row log-sum-exp
};

template <typename T>
struct AttnBwdParams {
  AttnShape s;
  const T* q; Strides3 q_st;       // (B, Hq, Nq, D)
  const T* k; Strides3 k_st;       // (B, Hkv, Nk, D)
  const T* v; Strides3 v_st;       // (B, Hkv, Nk, D)
  const T* out; Strides3 o_st;     // (B, Hq, Nq, D)
  const T* grad_out; Strides3 do_st;  // (B, Hq, Nq, D)
  const T* lse;                    // (B, Hq, Nq) contiguous
  T* grad_q;                       // (B, Hq, Nq, D) contiguous, out
  T* grad_k;                       // (B, Hkv, Nk, D) contiguous, out
  T* grad_v;                       // (B, Hkv, Nk, D) contiguous, out
};

}  // namespace fusedseq
