// The one place where fusedseq's op schemas are declared, and the Python
// module fusedseq._C (build facts only: the ops reach Python through
// torch.ops.fusedseq.*).
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "cpu/kernels_cpu.h"

#ifdef FUSEDSEQ_WITH_CUDA
#include "cuda/kernels_cuda.h"
#endif

TORCH_LIBRARY(fusedseq, m) {
  // h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), act = nonlinearity ('tanh' | 'relu')
  m.def("rnn_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
        "str nonlinearity) -> Tensor");
  // -> (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b); grad_b is the gradient of either bias
  m.def("rnn_cell_backward(Tensor grad_h_next, Tensor h_next, Tensor x, Tensor h, Tensor w_ih, "
        "Tensor w_hh, str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // x (T, B, I), h0 (B, H) -> (output (T, B, H), h_n (B, H))
  m.def("rnn(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
        "str nonlinearity) -> (Tensor, Tensor)");
  // -> (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b)
  m.def("rnn_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor x, Tensor h0, "
        "Tensor w_ih, Tensor w_hh, str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // softmax(q kᵀ · scale + attn_mask) v with SDPA's meaning for every argument, plus a sliding window
  // (window_left/right, -1 = unbounded) and dropout drawn from Philox(seed, offset).
  // q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D), attn_mask broadcastable to (B, Hq, Nq, Nk)
  //   -> (out (B, Hq, Nq, D), lse (B, Hq, Nq), lse_lo (B, Hq, Nq)); lse + lse_lo is the row log-sum-exp
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float dropout_p, bool is_causal, "
        "float scale, int window_left, int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)");
  // -> (grad_q, grad_k, grad_v); attn_mask gets no gradient
  m.def("attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor lse_lo, "
        "Tensor? attn_mask, float dropout_p, bool is_causal, float scale, int window_left, int window_right, "
        "int seed, int offset) -> (Tensor, Tensor, Tensor)");
  // Packed variable-length sequences (FlashAttention-2's varlen API; causal and windows bottom-right aligned):
  // q (total_q, Hq, D), k/v (total_k, Hkv, D), cu_seqlens int32 (B + 1)
  //   -> (out (total_q, Hq, D), lse (Hq, total_q), lse_lo (Hq, total_q))
  m.def("attention_varlen_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
        "int max_seqlen_q, int max_seqlen_k, float dropout_p, bool is_causal, float scale, int window_left, "
        "int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)");
  // -> (grad_q, grad_k, grad_v)
  m.def("attention_varlen_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "Tensor lse_lo, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, "
        "float dropout_p, bool is_causal, float scale, int window_left, int window_right, int seed, int offset) "
        "-> (Tensor, Tensor, Tensor)");
  // The dropout keep-mask attention_fwd draws for q's (B, Hq, Nq) and Nk keys: bool (B, Hq, Nq, Nk). For tests.
  m.def("attention_dropout_mask(Tensor q, int Nk, float dropout_p, int seed, int offset) -> Tensor");
}

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedseq compiled extension: registers torch.ops.fusedseq.* on import";
  m.def("build_info", []() {
    py::dict d;
    d["version"] = FUSEDSEQ_VERSION;
    d["torch_version"] = FUSEDSEQ_TORCH_VERSION;
#ifdef FUSEDSEQ_WITH_CUDA
    d["cuda_compiled"] = true;
    d["cuda_archs"] = FUSEDSEQ_CUDA_ARCHS;
    d["cuda_runtime_version"] = fusedseq::cuda::runtime_version();
#else
    d["cuda_compiled"] = false;
    d["cuda_archs"] = "";
    d["cuda_runtime_version"] = py::none();
#endif
    // Ops with a CUDA kernel in this build (the CUDA issues fill this in).
    d["cuda_ops"] = py::list();
    d["cpu_simd"] = fusedseq::cpu::simd_isa();
    return d;
  });
#ifdef FUSEDSEQ_WITH_CUDA
  // Launches a one-thread kernel on `device`: proves the build holds code the
  // GPU can run. Returns "" or the CUDA error text.
  m.def("cuda_probe", [](int device) { return std::string(fusedseq::cuda::probe_device(device)); });
#endif
}
