// The LSTM ops on their CUDA kernels (csrc/cuda/gated_rnn.cu): the checks of
// the CPU bindings (gated_common.h), the same outputs and saved workspaces
// (h and the gradients in the input dtype; gates, cell states and the
// internal dz in the compute dtype, fp32 for fp16/bf16), the large products
// through ATen (cuBLAS) and the fused recurrence in between. A cell is the
// recurrence run for one step (one launch after the input product). Built
// twice (cuda_ops.h): for CUDA tensors in the CUDA extension, and for CPU
// tensors in the emulated library. FUSEDSEQ_CUDA_RNN_PATH chooses the
// sequence's path (recurrent_cuda.h).
#include "bindings/cuda_binding.h"
#include "bindings/cuda_ops.h"
#include "bindings/gated_common.h"
#include "bindings/recurrent_cuda.h"
#include "cuda/gated_rnn.h"

namespace fusedseq::cuda_bindings {
namespace {

using gated::kSlots;
using gated::OptTensor;

struct Forward {
  Tensor out, cell, gates;
};

// The fused recurrence over x (T, B, I): every step's input projection as
// one product into `gates` (fp32 for fp16/bf16, from widened operands, so
// that x W_ihᵀ is not rounded before h W_hhᵀ and the biases join it), then
// the kernel. Returns out (T, B, H) input dtype, cell (T, B, H) and gates
// (T, B, 4H) in the compute dtype.
Forward forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, const gated::Dims& d, cuda::RnnPath path, void* stream) {
  const ScalarType st = x.scalar_type(), acc = compute_dtype(x);
  const auto hc = unit_last_stride(h0, st), cc = unit_last_stride(c0, st), wh = unit_last_stride(w_hh, st);
  const auto bi = as_compute(b_ih, st), bh = as_compute(b_hh, st);
  Tensor gates = empty({d.T_, d.B, kSlots * d.H}, acc, x);
  mm_out(view2d(gates, d.T_ * d.B, kSlots * d.H), view2d(as_compute(x, acc), d.T_ * d.B, d.I),
         t(to_dtype(w_ih, acc)));
  Tensor out = empty({d.T_, d.B, d.H}, st, x), cell = empty({d.T_, d.B, d.H}, acc, x);
  Tensor state = empty({2, d.B, d.H}, acc, x), barrier = zeroed_workspace(x, 1);
  cuda::gated_seq_forward({cuda::GatedKind::Lstm, hc.data_ptr(), hc.stride(0), cc.data_ptr(), cc.stride(0),
                           wh.data_ptr(), wh.stride(0), bi ? bi->data_ptr() : nullptr, bh ? bh->data_ptr() : nullptr,
                           gates.data_ptr(), out.data_ptr(), cell.data_ptr(), state.data_ptr(),
                           static_cast<unsigned*>(barrier.data_ptr()), d.T_, d.B, d.H, rnn_dtype(st), path, stream});
  return {out, cell, gates};
}

// BPTT from the forward's record; returns dz (T, B, 4H) compute dtype and
// grad_h0, grad_c0 (B, H) input dtype. grad_out (T, B, H) input dtype,
// grad_cell (T, B, H) compute dtype, gates (T, B, 4H) and cell (T, B, H)
// compute dtype, all contiguous; `cell` may be null for one step (c_{t-1}
// is then c0).
std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& x, const Tensor& grad_out, const Tensor& grad_cell,
                                            const Tensor& gates, const Tensor* cell, const Tensor& c0,
                                            const Tensor& w_hh, const gated::Dims& d, cuda::RnnPath path,
                                            void* stream) {
  const ScalarType st = x.scalar_type(), acc = compute_dtype(x);
  const auto cc = unit_last_stride(c0, st);
  // W_hhᵀ row-major, once per call (4H² elements): BPTT's hidden units are its rows.
  const auto wht = torch::stable::contiguous(t(w_hh));
  Tensor dz = empty({d.T_, d.B, kSlots * d.H}, acc, x), dh0 = empty({d.B, d.H}, st, x),
         dc0 = empty({d.B, d.H}, st, x);
  Tensor state = empty({2, d.B, gated::kLstmGates * d.H}, acc, x), carry = empty({d.B, d.H}, acc, x);
  Tensor barrier = zeroed_workspace(x, 1);
  cuda::gated_seq_backward({cuda::GatedKind::Lstm, grad_out.data_ptr(), grad_cell.data_ptr(), gates.data_ptr(),
                            cell ? cell->data_ptr() : nullptr, nullptr, cc.data_ptr(), cc.stride(0), wht.data_ptr(), wht.stride(0),
                            dz.data_ptr(), dh0.data_ptr(), dc0.data_ptr(), state.data_ptr(), carry.data_ptr(),
                            static_cast<unsigned*>(barrier.data_ptr()), d.T_, d.B, d.H, rnn_dtype(st), path, stream});
  return {dz, dh0, dc0};
}

}  // namespace

// -> (h' (B, H), c' (B, H), gates (B, 4H) compute dtype)
std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& x,        // (B, I)
                                             const Tensor& h,        // (B, H)
                                             const Tensor& c,        // (B, H)
                                             const Tensor& w_ih,     // (4H, I)
                                             const Tensor& w_hh,     // (4H, H)
                                             const OptTensor& b_ih,  // (4H,)
                                             const OptTensor& b_hh)  // (4H,)
{
  const char* op = "fusedseq.lstm_cell";
  const auto d = gated::lstm_cell(op, x, h, c, w_ih, w_hh, b_ih, b_hh);
  DeviceContext ctx(op, {{"x", &x}});
  const auto x3 = strided_view(x, {1, d.B, d.I}, {d.B * x.stride(0), x.stride(0), x.stride(1)});
  const auto f = forward(x3, h, c, w_ih, w_hh, b_ih, b_hh, d, cuda::RnnPath::PerStep, ctx.stream());
  return {view2d(f.out, d.B, d.H), to_dtype(view2d(f.cell, d.B, d.H), x.scalar_type()),
          view2d(f.gates, d.B, kSlots * d.H)};
}

// -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const Tensor& grad_h_next,  // (B, H)
    const Tensor& grad_c_next,  // (B, H)
    const Tensor& gates,        // (B, 4H) compute dtype
    const Tensor& x,            // (B, I)
    const Tensor& h,            // (B, H)
    const Tensor& c,            // (B, H)
    const Tensor& w_ih,         // (4H, I)
    const Tensor& w_hh)         // (4H, H)
{
  const char* op = "fusedseq.lstm_cell_backward";
  const auto d = gated::lstm_cell_backward(op, grad_h_next, grad_c_next, gates, x, h, c, w_ih, w_hh);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type(), acc = compute_dtype(x);
  const auto [dz, dh, dc] = backward(x, as_compute(grad_h_next, st), as_compute(grad_c_next, acc),
                                     as_compute(gates, acc), nullptr, c, w_hh, d,
                                     cuda::RnnPath::PerStep, ctx.stream());
  // The products take the unrounded dz, so fp16/bf16 operands are widened for them.
  const auto [dx, dwi, dwh, db] = gated::lstm_input_and_weight_grads(
      view2d(dz, d.B, kSlots * d.H), to_dtype(x, acc), to_dtype(h, acc), to_dtype(w_ih, acc));
  return {to_dtype(dx, st), dh, dc, to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

// -> (output (T, B, H), cell_states (T, B, H) compute dtype, gates (T, B, 4H) compute dtype)
std::tuple<Tensor, Tensor, Tensor> lstm(const Tensor& x,        // (T, B, I)
                                        const Tensor& h0,       // (B, H)
                                        const Tensor& c0,       // (B, H)
                                        const Tensor& w_ih,     // (4H, I)
                                        const Tensor& w_hh,     // (4H, H)
                                        const OptTensor& b_ih,  // (4H,)
                                        const OptTensor& b_hh)  // (4H,)
{
  const char* op = "fusedseq.lstm";
  const auto d = gated::lstm(op, x, h0, c0, w_ih, w_hh, b_ih, b_hh);
  const cuda::RnnPath path = path_from_env(op);
  DeviceContext ctx(op, {{"x", &x}});
  const auto f = forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, d, path, ctx.stream());
  return {f.out, f.cell, f.gates};
}

// -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_output,       // (T, B, H)
    const Tensor& grad_cell_states,  // (T, B, H) compute dtype
    const Tensor& output,            // (T, B, H)
    const Tensor& cell_states,       // (T, B, H) compute dtype
    const Tensor& gates,             // (T, B, 4H) compute dtype
    const Tensor& x,                 // (T, B, I)
    const Tensor& h0,                // (B, H)
    const Tensor& c0,                // (B, H)
    const Tensor& w_ih,              // (4H, I)
    const Tensor& w_hh)              // (4H, H)
{
  const char* op = "fusedseq.lstm_backward";
  const auto d = gated::lstm_backward(op, grad_output, grad_cell_states, output, cell_states, gates, x, h0, c0, w_ih,
                                      w_hh);
  const cuda::RnnPath path = path_from_env(op);
  DeviceContext ctx(op, {{"x", &x}});
  const ScalarType st = x.scalar_type(), acc = compute_dtype(x);
  const auto cs = as_compute(cell_states, acc);
  const auto [dz, dh0, dc0] = backward(x, as_compute(grad_output, st), as_compute(grad_cell_states, acc),
                                       as_compute(gates, acc), &cs, c0, w_hh, d, path, ctx.stream());
  // Everything left is a large product over all T·B rows at once, from the
  // unrounded dz (fp16/bf16 operands widened: T B (I + H) elements).
  const int64_t rows = d.T_ * d.B;
  const auto [dx, dwi, dwh, db] = gated::lstm_input_and_weight_grads(
      view2d(dz, rows, kSlots * d.H), view2d(as_compute(x, acc), rows, d.I),
      previous_states(as_compute(h0, acc), as_compute(output, acc)), to_dtype(w_ih, acc));
  return {to_dtype(strided_view(dx, {d.T_, d.B, d.I}, {d.B * d.I, d.I, 1}), st),
          dh0,
          dc0,
          to_dtype(dwi, st),
          to_dtype(dwh, st),
          to_dtype(db, st)};
}

}  // namespace fusedseq::cuda_bindings
