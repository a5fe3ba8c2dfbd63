// The RNN ops on their CUDA kernels (csrc/cuda/rnn.cu): the same checks as
// the CPU bindings (rnn_common.h), outputs in the input dtype (no upcast
// copies: the kernels read fp16/bf16 as they are and compute in fp32), the
// large products through ATen (cuBLAS), and the fused kernels in between.
// Built twice (cuda_ops.h): for CUDA tensors in the CUDA extension, and for
// CPU tensors in the emulated library.
// FUSEDSEQ_CUDA_RNN_PATH chooses the recurrences' path (recurrent_cuda.h).
#include "bindings/cuda_binding.h"
#include "bindings/cuda_ops.h"
#include "bindings/recurrent_cuda.h"
#include "bindings/rnn_common.h"
#include "cuda/rnn.h"

namespace fusedseq::cuda_bindings {
namespace {

using rnn_common::OptTensor;

// The dtype the recurrent state is carried in between steps.
ScalarType state_dtype(ScalarType st) { return st == ScalarType::Double ? ScalarType::Double : ScalarType::Float; }

}  // namespace

Tensor rnn_cell(const Tensor& x,        // (B, I)
                const Tensor& h,        // (B, H)
                const Tensor& w_ih,     // (H, I)
                const Tensor& w_hh,     // (H, H)
                const OptTensor& b_ih,  // (H,)
                const OptTensor& b_hh,  // (H,)
                std::string nonlinearity) {
  const char* op = "fusedseq.rnn_cell";
  const auto d = rnn_common::cell(op, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type();
  // Any row strides; only a non-unit column stride is copied.
  const auto xc = unit_last_stride(x, st), hc = unit_last_stride(h, st);
  const auto wi = unit_last_stride(w_ih, st), wh = unit_last_stride(w_hh, st);
  const auto bi = as_compute(b_ih, st), bh = as_compute(b_hh, st);
  Tensor out = empty({d.B, d.H}, st, x);
  cuda::rnn_cell_forward({xc.data_ptr(), xc.stride(0), hc.data_ptr(), hc.stride(0), wi.data_ptr(), wi.stride(0),
                          wh.data_ptr(), wh.stride(0), bi ? bi->data_ptr() : nullptr, bh ? bh->data_ptr() : nullptr,
                          out.data_ptr(), d.B, d.I, d.H, d.act, rnn_dtype(st), ctx.stream()});
  return out;
}

// -> (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(const Tensor& grad_h_next,  // (B, H)
                                                                     const Tensor& h_next,       // (B, H)
                                                                     const Tensor& x,            // (B, I)
                                                                     const Tensor& h,            // (B, H)
                                                                     const Tensor& w_ih,         // (H, I)
                                                                     const Tensor& w_hh,         // (H, H)
                                                                     std::string nonlinearity) {
  const char* op = "fusedseq.rnn_cell_backward";
  const auto d = rnn_common::cell_backward(op, grad_h_next, h_next, x, h, w_ih, w_hh, nonlinearity);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type();
  const auto g = unit_last_stride(grad_h_next, st), y = unit_last_stride(h_next, st);
  const auto wi = unit_last_stride(w_ih, st), wh = unit_last_stride(w_hh, st);
  const ScalarType acc = state_dtype(st);
  Tensor dz = empty({d.B, d.H}, acc, x), dx = empty({d.B, d.I}, st, x), dh = empty({d.B, d.H}, st, x);
  cuda::rnn_cell_backward({g.data_ptr(), g.stride(0), y.data_ptr(), y.stride(0), wi.data_ptr(), wi.stride(0),
                           wh.data_ptr(), wh.stride(0), dz.data_ptr(), dx.data_ptr(), dh.data_ptr(), d.B, d.I, d.H,
                           d.act, rnn_dtype(st), ctx.stream()});
  // The weight gradients are products over the batch: ATen's (cuBLAS), from
  // the unrounded dz (fp16/bf16 inputs are widened for them: B (H + I) elements).
  const auto xa = to_dtype(x, acc), ha = to_dtype(h, acc);
  return {dx, dh, to_dtype(mm(t(dz), xa), st), to_dtype(mm(t(dz), ha), st), to_dtype(sum_dim(dz, 0), st)};
}

// -> (output (T, B, H), h_n (B, H))
std::tuple<Tensor, Tensor> rnn(const Tensor& x,        // (T, B, I)
                               const Tensor& h0,       // (B, H)
                               const Tensor& w_ih,     // (H, I)
                               const Tensor& w_hh,     // (H, H)
                               const OptTensor& b_ih,  // (H,)
                               const OptTensor& b_hh,  // (H,)
                               std::string nonlinearity) {
  const char* op = "fusedseq.rnn";
  const auto d = rnn_common::seq(op, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity);
  const cuda::RnnPath path = path_from_env(op);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type();
  const auto xc = as_compute(x, st), hc = unit_last_stride(h0, st), wh = unit_last_stride(w_hh, st);
  const auto bi = as_compute(b_ih, st), bh = as_compute(b_hh, st);
  Tensor out = empty({d.T_, d.B, d.H}, st, x);
  // Every step's input projection, one product. fp32/fp64: straight into
  // `out`, which the recurrence overwrites in place. fp16/bf16: in fp32 from
  // widened operands, so that x W_ihᵀ is not rounded before the biases and
  // h W_hhᵀ join it (a relu's mask would flip where they cancel).
  const ScalarType acc = state_dtype(st);
  Tensor proj = acc == st ? out : empty({d.T_, d.B, d.H}, acc, x);
  rnn_common::project_inputs(proj, to_dtype(xc, acc), to_dtype(w_ih, acc));
  Tensor state = empty({2, d.B, d.H}, acc, x);
  Tensor barrier = zeroed_workspace(x, 1);
  cuda::rnn_seq_forward({hc.data_ptr(), hc.stride(0), wh.data_ptr(), wh.stride(0), bi ? bi->data_ptr() : nullptr,
                         bh ? bh->data_ptr() : nullptr, proj.data_ptr(), out.data_ptr(), state.data_ptr(),
                         static_cast<unsigned*>(barrier.data_ptr()), d.T_, d.B, d.H, d.act, rnn_dtype(st), path,
                         ctx.stream()});
  Tensor h_n = empty({d.B, d.H}, st, x);
  copy_into(h_n, strided_view(out, {d.B, d.H}, {d.H, 1}, (d.T_ - 1) * d.B * d.H));
  return {out, h_n};
}

// -> (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_output,  // (T, B, H)
                                                                const Tensor& grad_h_n,     // (B, H)
                                                                const Tensor& output,       // (T, B, H)
                                                                const Tensor& x,            // (T, B, I)
                                                                const Tensor& h0,           // (B, H)
                                                                const Tensor& w_ih,         // (H, I)
                                                                const Tensor& w_hh,         // (H, H)
                                                                std::string nonlinearity) {
  const char* op = "fusedseq.rnn_backward";
  const auto d = rnn_common::seq_backward(op, grad_output, grad_h_n, output, x, h0, w_ih, w_hh, nonlinearity);
  const cuda::RnnPath path = path_from_env(op);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type();
  const ScalarType acc = state_dtype(st);
  const auto go = as_compute(grad_output, st), gh = unit_last_stride(grad_h_n, st), y = as_compute(output, st);
  // W_hhᵀ row-major, once per call (H² elements): BPTT's hidden units are its rows.
  const auto wht = torch::stable::contiguous(t(w_hh));
  Tensor dz = empty({d.T_, d.B, d.H}, acc, x), dh0 = empty({d.B, d.H}, st, x);
  Tensor state = empty({2, d.B, d.H}, state_dtype(st), x);
  Tensor barrier = zeroed_workspace(x, 1);
  cuda::rnn_seq_backward({go.data_ptr(), gh.data_ptr(), gh.stride(0), y.data_ptr(), wht.data_ptr(), wht.stride(0),
                          dz.data_ptr(), dh0.data_ptr(), state.data_ptr(), static_cast<unsigned*>(barrier.data_ptr()),
                          d.T_, d.B, d.H, d.act, rnn_dtype(st), path, ctx.stream()});
  // The products take the unrounded dz, so fp16/bf16 operands are widened for
  // them (T B (I + H) elements): cuBLAS then runs them in fp32 (see benchmarks/NOTES.md).
  const auto [dx, dwi, dwh, db] = rnn_common::input_and_weight_grads(dz, as_compute(x, acc), as_compute(h0, acc),
                                                                    as_compute(output, acc), to_dtype(w_ih, acc));
  return {to_dtype(dx, st), dh0, to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

}  // namespace fusedseq::cuda_bindings
