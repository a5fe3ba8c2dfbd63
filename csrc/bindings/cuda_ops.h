// Which ops have a CUDA kernel: the one list, from which everything else is
// derived (csrc/bindings/cuda_library.cpp):
//   - a CUDA build registers each as torch.ops.fusedseq.<op> for CUDA tensors,
//     and the generic bindings stop registering their "no CUDA kernel yet"
//     fallback for it (register_generic below);
//   - the emulated library registers the very same binding, compiled with g++
//     against the emulator, as torch.ops.fusedseq_emulated.<op> for CPU tensors
//     (the schemas are fusedseq's own, from schemas.h);
//   - fusedseq.build_info()["cuda_ops"] lists them.
//
// Adding an op's CUDA kernel (issues 10 and 11) is one step:
//   write csrc/cuda/<op>.cu (kernels and a torch-free launcher taking a params
//   struct from csrc/common/params.h), csrc/bindings/<op>_cuda.cpp (the binding:
//   checks, then cuda_binding.h's DeviceContext for the device guard and the
//   stream, outputs in the input dtype, workspaces from torch's allocator), and
//   add its X(op, binding) line below with the binding's declaration.
// tests/conftest.py's `device` fixture then runs every test of that op on the
// emulated kernel too ("emulated"), and on the GPU where there is one.
#pragma once
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/stable.h"

// X(op, binding) for every fusedseq op that has a CUDA kernel.
// Issue 10: attention (csrc/bindings/attention_cuda.cpp, csrc/cuda/attention*.cu).
// Issue 11: the RNN ops (csrc/bindings/rnn_cuda.cpp, csrc/cuda/rnn.cu).
// Issue 13: the LSTM and GRU ops (csrc/bindings/{lstm,gru}_cuda.cpp, csrc/cuda/gated_rnn.cu).
#define FUSEDSEQ_CUDA_OPS(X)                                                     \
  X(attention_fwd, attention_fwd)                                                \
  X(attention_bwd, attention_bwd)                                                \
  X(rnn_cell, rnn_cell)                                                          \
  X(rnn_cell_backward, rnn_cell_backward)                                        \
  X(rnn, rnn)                                                                    \
  X(rnn_backward, rnn_backward)                                                  \
  X(lstm_cell, lstm_cell)                                                        \
  X(lstm_cell_backward, lstm_cell_backward)                                      \
  X(lstm, lstm)                                                                  \
  X(lstm_backward, lstm_backward)                                                \
  X(gru_cell, gru_cell)                                                          \
  X(gru_cell_backward, gru_cell_backward)                                        \
  X(gru, gru)                                                                    \
  X(gru_backward, gru_backward)

namespace fusedseq::cuda_bindings {
// Declarations of the bindings named in FUSEDSEQ_CUDA_OPS, one per line, e.g.
//   std::tuple<Tensor, Tensor> attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
//                                            double scale);
// attention_cuda.cpp:
std::tuple<Tensor, Tensor, Tensor> attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v,
                                                 const std::optional<Tensor>& attn_mask, double dropout_p,
                                                 bool is_causal, double scale, int64_t window_left,
                                                 int64_t window_right, int64_t seed, int64_t offset);
std::tuple<Tensor, Tensor, Tensor> attention_bwd(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& out, const Tensor& lse,
                                                 const Tensor& lse_lo, const std::optional<Tensor>& attn_mask,
                                                 double dropout_p, bool is_causal, double scale,
                                                 int64_t window_left, int64_t window_right, int64_t seed,
                                                 int64_t offset);
// rnn_cuda.cpp (shapes as the schemas in schemas.h):
Tensor rnn_cell(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh, std::string nonlinearity);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(const Tensor& grad_h_next, const Tensor& h_next,
                                                                     const Tensor& x, const Tensor& h,
                                                                     const Tensor& w_ih, const Tensor& w_hh,
                                                                     std::string nonlinearity);
std::tuple<Tensor, Tensor> rnn(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                               const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
                               std::string nonlinearity);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_output, const Tensor& grad_h_n,
                                                                const Tensor& output, const Tensor& x,
                                                                const Tensor& h0, const Tensor& w_ih,
                                                                const Tensor& w_hh, std::string nonlinearity);
// lstm_cuda.cpp, gru_cuda.cpp (shapes as the schemas in schemas.h):
using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                                             const Tensor& w_hh, const std::optional<Tensor>& b_ih,
                                             const std::optional<Tensor>& b_hh);
Grads6 lstm_cell_backward(const Tensor& grad_h_next, const Tensor& grad_c_next, const Tensor& gates, const Tensor& x,
                          const Tensor& h, const Tensor& c, const Tensor& w_ih, const Tensor& w_hh);
std::tuple<Tensor, Tensor, Tensor> lstm(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                        const Tensor& w_hh, const std::optional<Tensor>& b_ih,
                                        const std::optional<Tensor>& b_hh);
Grads6 lstm_backward(const Tensor& grad_output, const Tensor& grad_cell_states, const Tensor& output,
                     const Tensor& cell_states, const Tensor& gates, const Tensor& x, const Tensor& h0,
                     const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh);
std::tuple<Tensor, Tensor> gru_cell(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                                    const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh);
Grads6 gru_cell_backward(const Tensor& grad_h_next, const Tensor& gates, const Tensor& x, const Tensor& h,
                         const Tensor& w_ih, const Tensor& w_hh);
std::tuple<Tensor, Tensor> gru(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                               const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh);
Grads6 gru_backward(const Tensor& grad_output, const Tensor& output, const Tensor& gates, const Tensor& x,
                    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh);
}  // namespace fusedseq::cuda_bindings

namespace fusedseq {

// The ops of FUSEDSEQ_CUDA_OPS, by name.
inline std::vector<std::string> cuda_op_names() {
  std::vector<std::string> names;
#define FUSEDSEQ_NAME(op, fn) names.emplace_back(#op);
  FUSEDSEQ_CUDA_OPS(FUSEDSEQ_NAME)
#undef FUSEDSEQ_NAME
  return names;
}

// Registers a generic binding (checks, then the CPU kernel or "no CUDA kernel
// yet") for dispatch key `key`, except for CUDA when this build registers the
// op's real CUDA kernel instead.
template <typename Library, typename Boxed>
void register_generic(Library& m, const char* key, const char* op, Boxed fn) {
#ifdef FUSEDSEQ_WITH_CUDA
  if (std::strcmp(key, "CUDA") == 0)
    for (const auto& name : cuda_op_names())
      if (name == op) return;
#endif
  (void)key;
  m.impl(op, fn);
}

}  // namespace fusedseq
