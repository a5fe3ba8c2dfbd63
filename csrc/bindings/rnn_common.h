// What the RNN ops' bindings share: the CPU/generic ones (rnn_ops.cpp) and
// the CUDA ones (rnn_cuda.cpp, also built into the emulated library). One
// definition of what each op accepts, and of the large matrix products that
// surround the fused recurrence (ATen's: cuBLAS on a GPU).
#pragma once
#include <optional>
#include <tuple>
#include <string>
#include <utility>

#include "bindings/checks.h"
#include "bindings/errors.h"
#include "bindings/recurrent.h"
#include "bindings/stable.h"

namespace fusedseq::rnn_common {

using OptTensor = std::optional<Tensor>;

struct Dims {
  int64_t T_, B, I, H;
  Activation act;
};

// The weights and biases against the input width I and the hidden width H.
inline void weights(const char* op, const Tensor& x, int64_t I, int64_t H, const Tensor& w_ih, const Tensor& w_hh,
                    const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::recurrent_weights(op, x, I, H, /*gates=*/1, w_ih, w_hh, b_ih, b_hh);
}

// rnn_cell(x (B, I), h (B, H), w_ih, w_hh, b_ih?, b_hh?, nonlinearity)
inline Dims cell(const char* op, const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                 const OptTensor& b_ih, const OptTensor& b_hh, const std::string& nonlinearity) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h", h, 2, "(B, H)");
  checks::like(op, "h", h, "x", x);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  FUSEDSEQ_CHECK_VALUE(h.size(0) == B, op, ": argument 'h' must have shape (B, H) with B = ", B,
                       " (the batch of 'x'), got ", checks::sizes_str(h.sizes()));
  weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  return {1, B, I, H, checks::activation(op, nonlinearity)};
}

// rnn_cell_backward(grad_h_next (B, H), h_next (B, H), x (B, I), h (B, H), w_ih, w_hh, nonlinearity)
inline Dims cell_backward(const char* op, const Tensor& grad_h_next, const Tensor& h_next, const Tensor& x,
                          const Tensor& h, const Tensor& w_ih, const Tensor& w_hh, const std::string& nonlinearity) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1);
  checks::tensor(op, "h", h, 2, "(B, H)");
  const int64_t H = h.size(1);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_h_next", &grad_h_next},
                         {"h_next", &h_next},
                         {"h", &h}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    checks::like(op, name, *t, "x", x);
    checks::shape(op, name, *t, {B, H}, "(B, H)");
  }
  weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  return {1, B, I, H, checks::activation(op, nonlinearity)};
}

// rnn(x (T, B, I), h0 (B, H), w_ih, w_hh, b_ih?, b_hh?, nonlinearity)
inline Dims seq(const char* op, const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, const std::string& nonlinearity) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  checks::like(op, "h0", h0, "x", x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  FUSEDSEQ_CHECK_VALUE(h0.size(0) == B, op, ": argument 'h0' must have shape (B, H) with B = ", B,
                       " (dim 1 of 'x'), got ", checks::sizes_str(h0.sizes()));
  weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  return {T_, B, I, H, checks::activation(op, nonlinearity)};
}

// rnn_backward(grad_output (T, B, H), grad_h_n (B, H), output (T, B, H), x (T, B, I), h0 (B, H), w_ih, w_hh,
//              nonlinearity)
inline Dims seq_backward(const char* op, const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& output,
                         const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                         const std::string& nonlinearity) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_output", &grad_output}, {"output", &output}}) {
    checks::tensor(op, name, *t, 3, "(T, B, H)");
    checks::like(op, name, *t, "x", x);
    checks::shape(op, name, *t, {T_, B, H}, "(T, B, H)");
  }
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_h_n", &grad_h_n}, {"h0", &h0}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    checks::like(op, name, *t, "x", x);
    checks::shape(op, name, *t, {B, H}, "(B, H)");
  }
  weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  return {T_, B, I, H, checks::activation(op, nonlinearity)};
}

// ----------------------------------------------------- the large products --
// out (T, B, H) <- x (T, B, I) W_ihᵀ: every step's input projection as one
// product, written where the recurrence then adds h W_hhᵀ and the biases in
// place. x and out contiguous; w_ih (H, I) any strides.
inline void project_inputs(const Tensor& out, const Tensor& x, const Tensor& w_ih) {
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0);
  mm_out(view2d(out, T_ * B, H), view2d(x, T_ * B, I), t(w_ih));
}

// After BPTT, everything left is a large product over all T·B rows at once:
// returns (grad_x (T, B, I), grad_w_ih, grad_w_hh, grad_b) from dz (T, B, H),
// x (T, B, I), h0 (B, H), output (T, B, H) (all contiguous) and w_ih (H, I).
inline std::tuple<Tensor, Tensor, Tensor, Tensor> input_and_weight_grads(const Tensor& dz, const Tensor& x,
                                                                         const Tensor& h0, const Tensor& output,
                                                                         const Tensor& w_ih) {
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const auto dz2 = view2d(dz, T_ * B, H);
  const auto dx = strided_view(mm(dz2, w_ih), {T_, B, I}, {B * I, I, 1});
  const auto dwi = mm(t(dz2), view2d(x, T_ * B, I));
  const auto dwh = mm(t(dz2), previous_states(h0, output));
  return {dx, dwi, dwh, sum_dim(dz2, 0)};
}

}  // namespace fusedseq::rnn_common
