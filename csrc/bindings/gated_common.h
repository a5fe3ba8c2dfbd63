// What the LSTM and GRU ops' bindings share: the CPU/generic ones
// (lstm_ops.cpp, gru_ops.cpp) and the CUDA ones (lstm_cuda.cpp, gru_cuda.cpp,
// also built into the emulated library). One definition of what each op
// accepts, and of the large matrix products that follow the fused BPTT.
#pragma once
#include <optional>
#include <tuple>
#include <utility>

#include "bindings/checks.h"
#include "bindings/recurrent.h"
#include "bindings/stable.h"

namespace fusedseq::gated {

using OptTensor = std::optional<Tensor>;
constexpr int64_t kLstmGates = 4;  // i, f, g, o
constexpr int64_t kGruGates = 3;   // r, z, n
constexpr int64_t kSlots = 4;      // slots per unit of the saved `gates` (and of dz): LSTM i, f, g, o; GRU r, z, n, a

struct Dims {
  int64_t T_, B, I, H;
};

// ------------------------------------------------------------------ LSTM --
// lstm_cell(x (B, I), h (B, H), c (B, H), w_ih (4H, I), w_hh (4H, H), b_ih?, b_hh?)
inline Dims lstm_cell(const char* op, const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                      const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1), H = checks::first_state(op, "h", h, x, 0);
  checks::tensor_like(op, "c", c, x, {B, H}, "(B, H)");
  checks::recurrent_weights(op, x, I, H, kLstmGates, w_ih, w_hh, b_ih, b_hh);
  return {1, B, I, H};
}

// lstm_cell_backward(grad_h_next, grad_c_next (B, H), gates (B, 4H) compute dtype, x, h, c, w_ih, w_hh)
inline Dims lstm_cell_backward(const char* op, const Tensor& grad_h_next, const Tensor& grad_c_next,
                               const Tensor& gates, const Tensor& x, const Tensor& h, const Tensor& c,
                               const Tensor& w_ih, const Tensor& w_hh) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1), H = checks::first_state(op, "h", h, x, 0);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_h_next", &grad_h_next},
                         {"grad_c_next", &grad_c_next},
                         {"c", &c}})
    checks::tensor_like(op, name, *t, x, {B, H}, "(B, H)");
  checks::workspace(op, "gates", gates, compute_dtype(x), x, {B, kSlots * H}, "(B, 4H)");
  checks::recurrent_weights(op, x, I, H, kLstmGates, w_ih, w_hh, std::nullopt, std::nullopt);
  return {1, B, I, H};
}

// lstm(x (T, B, I), h0 (B, H), c0 (B, H), w_ih, w_hh, b_ih?, b_hh?)
inline Dims lstm(const char* op, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                 const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = checks::first_state(op, "h0", h0, x, 1);
  checks::tensor_like(op, "c0", c0, x, {B, H}, "(B, H)");
  checks::recurrent_weights(op, x, I, H, kLstmGates, w_ih, w_hh, b_ih, b_hh);
  return {T_, B, I, H};
}

// lstm_backward(grad_output, grad_cell_states (compute dtype), output, cell_states (compute dtype), gates
//               (T, B, 4H) compute dtype, x, h0, c0, w_ih, w_hh)
inline Dims lstm_backward(const char* op, const Tensor& grad_output, const Tensor& grad_cell_states,
                          const Tensor& output, const Tensor& cell_states, const Tensor& gates, const Tensor& x,
                          const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = checks::first_state(op, "h0", h0, x, 1);
  checks::tensor_like(op, "c0", c0, x, {B, H}, "(B, H)");
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_output", &grad_output}, {"output", &output}})
    checks::tensor_like(op, name, *t, x, {T_, B, H}, "(T, B, H)");
  const auto dt = compute_dtype(x);
  checks::workspace(op, "grad_cell_states", grad_cell_states, dt, x, {T_, B, H}, "(T, B, H)");
  checks::workspace(op, "cell_states", cell_states, dt, x, {T_, B, H}, "(T, B, H)");
  checks::workspace(op, "gates", gates, dt, x, {T_, B, kSlots * H}, "(T, B, 4H)");
  checks::recurrent_weights(op, x, I, H, kLstmGates, w_ih, w_hh, std::nullopt, std::nullopt);
  return {T_, B, I, H};
}

// ------------------------------------------------------------------- GRU --
// gru_cell(x (B, I), h (B, H), w_ih (3H, I), w_hh (3H, H), b_ih?, b_hh?)
inline Dims gru_cell(const char* op, const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                     const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1), H = checks::first_state(op, "h", h, x, 0);
  checks::recurrent_weights(op, x, I, H, kGruGates, w_ih, w_hh, b_ih, b_hh);
  return {1, B, I, H};
}

// gru_cell_backward(grad_h_next (B, H), gates (B, 4H) compute dtype, x, h, w_ih, w_hh)
inline Dims gru_cell_backward(const char* op, const Tensor& grad_h_next, const Tensor& gates, const Tensor& x,
                              const Tensor& h, const Tensor& w_ih, const Tensor& w_hh) {
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1), H = checks::first_state(op, "h", h, x, 0);
  checks::tensor_like(op, "grad_h_next", grad_h_next, x, {B, H}, "(B, H)");
  checks::workspace(op, "gates", gates, compute_dtype(x), x, {B, kSlots * H}, "(B, 4H)");
  checks::recurrent_weights(op, x, I, H, kGruGates, w_ih, w_hh, std::nullopt, std::nullopt);
  return {1, B, I, H};
}

// gru(x (T, B, I), h0 (B, H), w_ih, w_hh, b_ih?, b_hh?)
inline Dims gru(const char* op, const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = checks::first_state(op, "h0", h0, x, 1);
  checks::recurrent_weights(op, x, I, H, kGruGates, w_ih, w_hh, b_ih, b_hh);
  return {T_, B, I, H};
}

// gru_backward(grad_output, output (T, B, H), gates (T, B, 4H) compute dtype, x, h0, w_ih, w_hh)
inline Dims gru_backward(const char* op, const Tensor& grad_output, const Tensor& output, const Tensor& gates,
                         const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh) {
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = checks::first_state(op, "h0", h0, x, 1);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_output", &grad_output}, {"output", &output}})
    checks::tensor_like(op, name, *t, x, {T_, B, H}, "(T, B, H)");
  checks::workspace(op, "gates", gates, compute_dtype(x), x, {T_, B, kSlots * H}, "(T, B, 4H)");
  checks::recurrent_weights(op, x, I, H, kGruGates, w_ih, w_hh, std::nullopt, std::nullopt);
  return {T_, B, I, H};
}

// ----------------------------------------------------- the large products --
// After the LSTM's BPTT: (grad_w_ih, grad_w_hh, grad_b) from dz (rows, 4H)
// and the input x (rows, I) and state h (rows, H) each row saw. (The CPU
// kernel may have computed grad_x already, beside the recurrence.)
inline std::tuple<Tensor, Tensor, Tensor> lstm_weight_grads(const Tensor& dz, const Tensor& x, const Tensor& h) {
  return {mm(t(dz), x), mm(t(dz), h), sum_dim(dz, 0)};
}

// The same plus grad_x = dz W_ih (rows, I) first.
inline std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_input_and_weight_grads(const Tensor& dz, const Tensor& x,
                                                                              const Tensor& h, const Tensor& w_ih) {
  auto [dwi, dwh, db] = lstm_weight_grads(dz, x, h);
  return {mm(dz, w_ih), dwi, dwh, db};
}

// After the GRU's BPTT: from dz (rows of (dz_r, dz_z, dz_n, dz_n r)), x and
// h as above: (grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh). The first
// three slots feed the input side (x W_ihᵀ + b_ih), (dz_r, dz_z, dz_n r) the
// hidden side (h W_hhᵀ + b_hh).
inline std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_input_and_weight_grads(const Tensor& dz,
                                                                                    const Tensor& x,
                                                                                    const Tensor& h,
                                                                                    const Tensor& w_ih) {
  const int64_t H = dz.size(1) / kSlots;
  const auto input_side = columns(dz, 0, kGruGates * H);
  const auto rz = columns(dz, 0, 2 * H), n_hidden = columns(dz, kGruGates * H, H);
  const auto dwh = cat({mm(t(rz), h), mm(t(n_hidden), h)}, 0);
  return {mm(input_side, w_ih), mm(t(input_side), x), dwh, sum_dim(input_side, 0),
          cat({sum_dim(rz, 0), sum_dim(n_hidden, 0)}, 0)};
}

}  // namespace fusedseq::gated
