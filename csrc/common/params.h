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
#include <type_traits>

namespace fusedseq {

enum class Activation : int32_t { Tanh = 0, Relu = 1 };

// Runs body(begin, end) over sub-ranges of [begin, end), possibly on several
// threads. The bindings pass at::parallel_for, so the kernels share torch's
// thread pool (and its thread count) instead of bringing their own.
using ParallelFor = std::function<void(int64_t begin, int64_t end, int64_t grain,
                                       const std::function<void(int64_t, int64_t)>& body)>;

// How a sequence kernel with side products (the LSTM's input projection and
// dx) shares them with the recurrence over threads: Auto chooses; Pipeline
// runs the recurrence on one thread and the side product on another
// (cpu/step_pipeline.h); Split parallelises each step and each product.
enum class RecurrencePath { Auto, Pipeline, Split };

// Strides (in elements) of a (T, B, H) sequence over its T and B dims.
struct SeqStrides {
  int64_t t, b;
};

// ---------------------------------------------------------------- RNN cell --
// h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh). Matrices are row-major with the
// row strides given (ld_*), vectors contiguous.
template <typename T>
struct RnnCellFwdParams {
  const T* x; int64_t ld_x;           // (B, I)
  const T* h; int64_t ld_h;           // (B, H)
  const T* w_ih; int64_t ld_w_ih;     // (H, I)
  const T* w_hh; int64_t ld_w_hh;     // (H, H)
  const T* b_ih;                      // (H) or nullptr
  const T* b_hh;                      // (H) or nullptr
  T* h_next; int64_t ld_h_next;       // (B, H) out
  int64_t B, I, H;
  Activation act;
};

// Backward of the cell from its output: act'(z) is a function of h' alone
// (tanh: 1 - h'^2, relu: h' > 0), so the pre-activation is never stored.
template <typename T>
struct RnnCellBwdParams {
  const T* grad_h_next; int64_t ld_grad_h_next;  // (B, H)
  const T* h_next; int64_t ld_h_next;            // (B, H)
  const T* x; int64_t ld_x;                      // (B, I)
  const T* h; int64_t ld_h;                      // (B, H)
  const T* w_ih; int64_t ld_w_ih;                // (H, I)
  const T* w_hh; int64_t ld_w_hh;                // (H, H)
  T* grad_z;                                     // (B, H) workspace, contiguous: dL/dz, z the pre-activation
  T* grad_x; int64_t ld_grad_x;                  // (B, I) out
  T* grad_h; int64_t ld_grad_h;                  // (B, H) out
  T* grad_w_ih; int64_t ld_grad_w_ih;            // (H, I) out
  T* grad_w_hh; int64_t ld_grad_w_hh;            // (H, H) out
  T* grad_b;                                     // (H)    out, or nullptr (no bias)
  int64_t B, I, H;
  Activation act;
};

// ----------------------------------------------------------- RNN sequence --
// The recurrence alone: on entry out[t] holds x_t W_ihᵀ (one large matrix
// product done by the caller); on exit out[t] = h_t, where
// h_t = act(out[t] + b_ih + b_hh + h_{t-1} W_hhᵀ) and h_{-1} = h0. The biases
// are added in the recurrence's epilogue, not in a pass of their own.
//
// grid_barrier: a persistent CUDA kernel (every step in one cooperative
// launch) synchronises its blocks through this zeroed counter, which the
// binding allocates from torch's caching allocator for each call (kernels
// never allocate). Unused on the CPU (nullptr).
template <typename T>
struct RnnSeqFwdParams {
  const T* h0; int64_t ld_h0;      // (B, H)
  const T* w_hh; int64_t ld_w_hh;  // (H, H)
  const T* b_ih;                   // (H) or nullptr
  const T* b_hh;                   // (H) or nullptr
  T* out; SeqStrides out_st;       // (T, B, H) in: input projections, out: hidden states
  int64_t T_, B, H;
  Activation act;
  unsigned* grid_barrier;          // workspace (CUDA): one zeroed counter
};

// Back-propagation through time for the recurrence. Produces dL/dz_t for
// every step (from which the caller gets dx, dW_ih, dW_hh, db as large
// products) and dL/dh0.
//   dz_t = (grad_out[t] + [t == T-1] grad_h_n + dz_{t+1} W_hh) * act'(h_t)
//   grad_h0 = dz_0 W_hh
template <typename T>
struct RnnSeqBwdParams {
  const T* grad_out; SeqStrides grad_out_st;  // (T, B, H)
  const T* grad_h_n; int64_t ld_grad_h_n;     // (B, H)
  const T* out; SeqStrides out_st;            // (T, B, H) the forward's hidden states
  const T* w_hh; int64_t ld_w_hh;             // (H, H)
  T* grad_z; SeqStrides grad_z_st;            // (T, B, H) out
  T* grad_h0; int64_t ld_grad_h0;             // (B, H)    out
  int64_t T_, B, H;
  Activation act;
  unsigned* grid_barrier;                     // workspace (CUDA): one zeroed counter
};

// --------------------------------------------------------------- LSTM cell --
// gates = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh, (B, 4H) in torch's order i, f, g, o;
// i, f, o = σ(·), g = tanh(·); c' = f c + i g; h' = o tanh(c').
template <typename T>
struct LstmCellFwdParams {
  const T* x;     // (B, I)
  const T* h;     // (B, H)
  const T* c;     // (B, H)
  const T* w_ih;  // (4H, I)
  const T* w_hh;  // (4H, H)
  const T* b_ih;  // (4H) or nullptr
  const T* b_hh;  // (4H) or nullptr
  T* h_next;      // (B, H) out
  T* c_next;      // (B, H) out
  T* gates;       // (B, 4H) out: i, f, g, o after their activations (what the backward needs)
  int64_t B, I, H;
};

// c' is recomputed from the gates and c (the forward's own expression), so
// the backward needs neither c' nor the pre-activations.
template <typename T>
struct LstmCellBwdParams {
  const T* grad_h_next;  // (B, H)
  const T* grad_c_next;  // (B, H)
  const T* gates;        // (B, 4H) the forward's i, f, g, o
  const T* x;            // (B, I)
  const T* h;            // (B, H)
  const T* c;            // (B, H)
  const T* w_ih;         // (4H, I)
  const T* w_hh;         // (4H, H)
  T* grad_gates;         // (B, 4H)  scratch: dL/d(pre-activations)
  T* grad_x;             // (B, I)   out
  T* grad_h;             // (B, H)   out
  T* grad_c;             // (B, H)   out
  T* grad_w_ih;          // (4H, I)  out
  T* grad_w_hh;          // (4H, H)  out
  T* grad_b;             // (4H)     out (the gradient of either bias), or nullptr
  int64_t B, I, H;
};

// ----------------------------------------------------------- LSTM sequence --
// The recurrence alone: on entry gates[t] holds x_t W_ihᵀ (one large product
// done by the caller); each step adds h_{t-1} W_hhᵀ in place, and the
// epilogue the biases, and leaves the activated i, f, g, o there, with h_t in
// out[t] and c_t in cell[t]. What the backward needs: gates (4BH per step),
// cell (BH) and out.
template <typename T>
struct LstmSeqFwdParams {
  const T* h0;    // (B, H)
  const T* c0;    // (B, H)
  const T* w_hh;  // (4H, H)
  const T* b_ih;  // (4H) or nullptr
  const T* b_hh;  // (4H) or nullptr
  T* gates;       // (T, B, 4H) in: input projections, out: activated gates
  T* out;         // (T, B, H)  out: h_t
  T* cell;        // (T, B, H)  out: c_t
  int64_t T_, B, H;
  // When x is given, `gates` arrives unfilled and the kernel computes the
  // input projection x W_ihᵀ itself (chunk by chunk, beside the recurrence
  // on two threads: cpu/step_pipeline.h); otherwise the caller has.
  const T* x = nullptr;     // (T, B, I) or nullptr
  const T* w_ih = nullptr;  // (4H, I) when x is given
  int64_t I = 0;
  int64_t threads = 1;      // the intra-op threads the ParallelFor may use
  RecurrencePath path = RecurrencePath::Auto;
};

// Back-propagation through time. Produces dL/dz_t of the pre-activations of
// every step (from which the caller gets dx, dW_ih, dW_hh, db as large
// products), dL/dh0 and dL/dc0.
//   dh_t = grad_out[t] + dz_{t+1} W_hh          (dz_T = 0)
//   dc_t = grad_cell[t] + dc_{t+1} f_{t+1} + dh_t o_t (1 - tanh² c_t)
template <typename T>
struct LstmSeqBwdParams {
  const T* grad_out;   // (T, B, H)  dL/dh_t from outside the recurrence
  const T* grad_cell;  // (T, B, H)  dL/dc_t from outside the recurrence
  const T* gates;      // (T, B, 4H) the forward's i, f, g, o
  const T* cell;       // (T, B, H)  the forward's c_t
  const T* c0;         // (B, H)
  const T* w_hh;       // (4H, H)
  T* grad_gates;       // (T, B, 4H) out
  T* grad_h0;          // (B, H)     out
  T* grad_c0;          // (B, H)     out
  int64_t T_, B, H;
  // When grad_x is given the kernel also computes dx = dz W_ih (behind the
  // recurrence on two threads); otherwise the caller does.
  const T* w_ih = nullptr;  // (4H, I) when grad_x is given
  T* grad_x = nullptr;      // (T, B, I) out, or nullptr
  int64_t I = 0;
  // With grad_x, when grad_w_ih is given the kernel also computes the weight
  // gradients dW_ih = Σ dzᵀ x_t, dW_hh = Σ dzᵀ h_{t-1} and db = Σ dz, chunk
  // by chunk beside the recurrence (cpu/weight_grad_chunks.h).
  const T* x = nullptr;    // (T, B, I)
  const T* h0 = nullptr;   // (B, H)
  const T* out = nullptr;  // (T, B, H) the forward's h_t
  T* grad_w_ih = nullptr;  // (4H, I) out, or nullptr
  T* grad_w_hh = nullptr;  // (4H, H) out
  T* grad_b = nullptr;     // (4H) out
  int64_t threads = 1;
  RecurrencePath path = RecurrencePath::Auto;
};

// ---------------------------------------------------------------- GRU cell --
// torch's GRU: r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr), z likewise,
// n = tanh(x W_inᵀ + b_in + r ∘ (h W_hnᵀ + b_hn)), h' = (1 - z) n + z h.
template <typename T>
struct GruCellFwdParams {
  const T* x;     // (B, I)
  const T* h;     // (B, H)
  const T* w_ih;  // (3H, I)
  const T* w_hh;  // (3H, H)
  const T* b_ih;  // (3H) or nullptr
  const T* b_hh;  // (3H) or nullptr
  T* h_next;      // (B, H) out
  T* gates;       // (B, 4H) out: r, z, n and h W_hnᵀ + b_hn (what the backward needs)
  int64_t B, I, H;
};

template <typename T>
struct GruCellBwdParams {
  const T* grad_h_next;  // (B, H)
  const T* gates;        // (B, 4H) the forward's r, z, n, h W_hnᵀ + b_hn
  const T* x;            // (B, I)
  const T* h;            // (B, H)
  const T* w_ih;         // (3H, I)
  const T* w_hh;         // (3H, H)
  T* grad_gates;         // (B, 4H)  scratch: dz_r, dz_z, dz_n (input side) and dz_n r (hidden side's n)
  T* grad_x;             // (B, I)   out
  T* grad_h;             // (B, H)   out
  T* grad_w_ih;          // (3H, I)  out
  T* grad_w_hh;          // (3H, H)  out
  T* grad_b_ih;          // (3H)     out
  T* grad_b_hh;          // (3H)     out
  int64_t B, I, H;
};

// ------------------------------------------------------------ GRU sequence --
// On entry gates[t][:, 0:3H] holds x_t W_ihᵀ (one large product by the
// caller); each step adds the r and z rows of h_{t-1} W_hhᵀ in place, keeps
// the n rows apart (r multiplies them, b_hn included), adds the biases in the
// epilogue and leaves r, z, n and h_{t-1} W_hnᵀ + b_hn in gates[t] and h_t in
// out[t]. What the backward needs: gates (4BH per step) and out.
template <typename T>
struct GruSeqFwdParams {
  const T* h0;    // (B, H)
  const T* w_hh;  // (3H, H)
  const T* b_ih;  // (3H) or nullptr
  const T* b_hh;  // (3H) or nullptr
  T* gates;       // (T, B, 4H)
  T* out;         // (T, B, H) out
  int64_t T_, B, H;
};

// Back-propagation through time. grad_gates[t] = (dz_r, dz_z, dz_n, dz_n r):
// the first three are the gradients of the input side (x W_ihᵀ + b_ih), the
// (r, z, 4th) ones those of the hidden side (h W_hhᵀ + b_hh).
//   dh_t = grad_out[t] + dh_{t+1} z_{t+1} + dz^h_{t+1} W_hh
template <typename T>
struct GruSeqBwdParams {
  const T* grad_out;  // (T, B, H)
  const T* out;       // (T, B, H) the forward's h_t
  const T* gates;     // (T, B, 4H) the forward's r, z, n, h W_hnᵀ + b_hn
  const T* h0;        // (B, H)
  const T* w_hh;      // (3H, H)
  T* grad_gates;      // (T, B, 4H) out
  T* grad_h0;         // (B, H)     out
  int64_t T_, B, H;
};

// -------------------------------------------------------------- attention --
// O = softmax(Q Kᵀ · scale + mask) V for every (sequence, query head), with
// grouped-query heads: query head h reads key/value head h / (Hq / Hkv).
//
// Which keys a query row may see. Sequence b has Nq_b queries and Nk_b keys
// (dense: Nq and Nk; varlen: from cu_seqlens). Query i sits on the key
// diagonal diag(i) = i + (bottom_right ? Nk_b - Nq_b : 0): top-left as in
// scaled_dot_product_attention(is_causal=True), bottom-right as in
// FlashAttention-2 (>= 2.1). It sees key j when
//     causal:  j <= diag(i)
//     window:  diag(i) - window_left <= j <= diag(i) + window_right
//              (-1: that side unbounded; FlashAttention's window_size)
// and the mask allows it. Tiles of keys that no row of a query tile may see
// are never visited. A row that sees no key at all returns zeros, an LSE of
// -inf and zero gradients.
struct AttnShape {
  int64_t B, Hq, Hkv, Nq, Nk, D;  // varlen: B sequences; Nq, Nk the longest (max_seqlen_q, max_seqlen_k)
  double scale;                   // double so float64 attention stays float64-accurate
  bool causal;
  int64_t window_left, window_right;  // -1 = unbounded; the binding maps larger-than-useful values to -1
  bool bottom_right;
};

// Strides (in elements) of a (B, H, N, ·) tensor over its B, H and N dims.
// Row (b, h, token) of a tensor starts at b·b_ + h·h + token·n. Varlen
// tensors are packed (total_tokens, H, ·): b = 0, and token counts from the
// start of the whole pack (cu_seqlens[b] + i).
struct Strides3 {
  int64_t b, h, n;
};

// attn_mask, broadcast to (B, Hq, Nq, Nk) through its strides (0 along every
// broadcast dim): read tile by tile where it lies, never expanded. Bool:
// nonzero = may attend (SDPA's meaning). Additive: added to the scaled
// logits (a -inf entry masks). The mask has no gradient.
enum class MaskKind : int32_t { None = 0, Bool = 1, Additive = 2 };

struct AttnMask {
  MaskKind kind = MaskKind::None;
  const void* ptr = nullptr;       // Bool: uint8_t; Additive: the kernel's accumulation type (AttnAcc<T>)
  int64_t b = 0, h = 0, q = 0, k = 0;  // strides in elements
};

// Dropout on the attention probabilities, as SDPA's dropout_p: each element
// of softmax(·) is zeroed with probability p, the rest scaled by 1/(1 - p).
// The mask is a pure function of (seed, offset, row, key), regenerated in
// the backward, never stored:
//     row  = token · Hq + h   (token: the query's index in the whole batch,
//                              b·Nq + i dense, cu_seqlens_q[b] + i varlen)
//     (w0, w1, w2, w3) = Philox4x32-10(key = seed,
//                                      counter = (offset + j / 4, row)) (64-bit halves, low word first)
//     element (row, j) is dropped iff w_{j mod 4} < threshold
// The binding draws seed and offset from torch's generator for each call.
struct AttnDropout {
  double p = 0;             // 0: no dropout
  uint32_t threshold = 0;   // round(p · 2^32), clamped to 2^32 - 1
  uint64_t seed = 0, offset = 0;
};

// Packed variable-length batches (FlashAttention's varlen API): sequence b
// owns query tokens [cu_seqlens_q[b], cu_seqlens_q[b+1]) and key tokens
// [cu_seqlens_k[b], cu_seqlens_k[b+1]). Both null for dense (B, H, N, D).
struct AttnVarlen {
  const int32_t* cu_seqlens_q = nullptr;  // (B + 1), non-decreasing, from 0
  const int32_t* cu_seqlens_k = nullptr;  // (B + 1)
};

// Accumulation type: fp32 for every input type but float64. The LSE and all
// workspaces use it.
template <typename T>
using AttnAcc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The row log-sum-exp is stored as an unevaluated sum lse + lse_lo of two
// AttnAcc numbers. lse alone is the LSE rounded once (what
// attention_with_lse returns); lse_lo is what that rounding lost. With
// logits of magnitude L, fp32 rounding of lse alone costs ulp(L)/2 in the
// exponent the backward recomputes P with (3% at L = 1e6); with both parts
// the backward's P = exp((x - lse) - lse_lo) agrees with the forward's to
// fp32 rounding whatever L is.
template <typename T>
struct AttnFwdParams {
  using Acc = AttnAcc<T>;
  AttnShape s;
  AttnMask mask;
  AttnDropout dropout;
  AttnVarlen varlen;
  const T* q; Strides3 q_st;   // (B, Hq, Nq, D)   varlen: (total_q, Hq, D)
  const T* k; Strides3 k_st;   // (B, Hkv, Nk, D)  varlen: (total_k, Hkv, D)
  const T* v; Strides3 v_st;   // (B, Hkv, Nk, D)  varlen: (total_k, Hkv, D)
  T* out; Strides3 o_st;       // (B, Hq, Nq, D)   varlen: (total_q, Hq, D)   out
  Acc* lse; Acc* lse_lo;       // (B, Hq, Nq)      varlen: (Hq, total_q)      out, both with strides lse_st
  Strides3 lse_st;
  // Workspace, sized by the caller from the plan (cpu/attention_plan.h):
  int64_t num_splits;          // key ranges per row merged by log-sum-exp (flash-decoding); 1 = none
  Acc* o_accum;                // (num_splits, B, Hq, Nq, D) contiguous, when num_splits > 1
  Acc* ml_accum;               // (num_splits, B, Hq, Nq, 2) contiguous: each split's row max and sum
  T* k_packed;                 // K in 16-key panels (plan.pack_k), else nullptr
};

// Backward from the forward's out and LSE (FlashAttention-2's scheme):
//     P = exp(x - lse - lse_lo)          x = Q Kᵀ · scale (+ mask), recomputed
//     dV = (P ∘ Z)ᵀ dO                    Z: the dropout mask, scaled by 1/(1 - p)
//     dP = (dO Vᵀ) ∘ Z
//     dS = P ∘ (dP - delta),  delta = rowsum(dO ∘ O)
//     dQ = dS K · scale,      dK = dSᵀ Q · scale
template <typename T>
struct AttnBwdParams {
  using Acc = AttnAcc<T>;
  AttnShape s;
  AttnMask mask;
  AttnDropout dropout;
  AttnVarlen varlen;
  const T* q; Strides3 q_st;            // (B, Hq, Nq, D)
  const T* k; Strides3 k_st;            // (B, Hkv, Nk, D)
  const T* v; Strides3 v_st;            // (B, Hkv, Nk, D)
  const T* out; Strides3 o_st;          // (B, Hq, Nq, D)
  const T* grad_out; Strides3 do_st;    // (B, Hq, Nq, D)
  const Acc* lse; const Acc* lse_lo;    // (B, Hq, Nq), strides lse_st
  Strides3 lse_st;
  T* grad_q; Strides3 dq_st;            // (B, Hq, Nq, D)   out
  T* grad_k; Strides3 dk_st;            // (B, Hkv, Nk, D)  out
  T* grad_v; Strides3 dv_st;            // (B, Hkv, Nk, D)  out
  // Workspace, sized by the caller from the plan:
  Acc* delta;                           // (B, Hq, Nq) contiguous: rowsum(dO ∘ O)
  Acc* dq_accum;                        // (B, Hq, Nq, D) contiguous, or nullptr to accumulate in grad_q (T == Acc)
  Acc* dk_accum; Acc* dv_accum;         // (B, Hq, Nk, D) contiguous per-query-head partials when Hq > Hkv
  T* k_packed; T* v_packed;             // K and V in 16-key panels (plan.pack_k), else nullptr
};

// The dropout keep-mask itself, for tests: keep (B, Hq, Nq, Nk) contiguous,
// 1 where the element survives, exactly as the kernels draw it (dense rows).
// (T is unused: it only gives the kernel the shape of every other one in
// the kernel table.)
template <typename T>
struct AttnDropoutMaskParams {
  AttnShape s;
  AttnDropout dropout;
  uint8_t* keep;
};

}  // namespace fusedseq
