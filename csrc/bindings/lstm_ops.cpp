// torch-facing side of the LSTM ops: checks, output allocation, the large
// matrix products that belong to ATen, and the calls into the fused kernels.
//
// What crosses from the forward to the backward is returned by the forward
// ops as outputs, in the compute dtype (float32 for fp16/bf16 inputs): the
// activated gates (·, 4H) and, for the sequence, every cell state (T, B, H).
#include "bindings/checks.h"
#include "bindings/cuda_ops.h"
#include "bindings/gated_common.h"
#include "bindings/recurrent.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using OptTensor = std::optional<Tensor>;
constexpr int64_t G = gated::kLstmGates;

// --------------------------------------------------------------- lstm_cell --
// Returns (h' (B, H), c' (B, H), gates (B, 4H)).
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
  const int64_t B = d.B, I = d.I, H = d.H;
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt), cc = as_compute(c, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  auto h_next = empty({B, H}, dt, x), c_next = empty({B, H}, dt, x), gates = empty({B, G * H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    LstmCellFwdParams<T> p{ptr<T>(xc), ptr<T>(hc), ptr<T>(cc), ptr<T>(wi), ptr<T>(wh), ptr<T>(bi), ptr<T>(bh),
                           ptr<T>(h_next), ptr<T>(c_next), ptr<T>(gates), B, I, H};
    cpu::kernels<T>().lstm_cell_forward(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {to_dtype(h_next, st), to_dtype(c_next, st), gates};
}

// Returns (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b); grad_b
// serves both biases (they enter the gates the same way).
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
  const int64_t B = d.B, I = d.I, H = d.H;
  const auto dt = compute_dtype(x);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto gh = as_compute(grad_h_next, dt), gc = as_compute(grad_c_next, dt), g = as_compute(gates, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt), cc = as_compute(c, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  auto dz = empty({B, G * H}, dt, x), dx = empty({B, I}, dt, x), dh = empty({B, H}, dt, x), dc = empty({B, H}, dt, x);
  auto dwi = empty({G * H, I}, dt, x), dwh = empty({G * H, H}, dt, x), db = empty({G * H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    LstmCellBwdParams<T> p{ptr<T>(gh),  ptr<T>(gc),  ptr<T>(g),   ptr<T>(xc), ptr<T>(hc),  ptr<T>(cc),
                           ptr<T>(wi),  ptr<T>(wh),  ptr<T>(dz),  ptr<T>(dx), ptr<T>(dh),  ptr<T>(dc),
                           ptr<T>(dwi), ptr<T>(dwh), ptr<T>(db),  B,          I,           H};
    cpu::kernels<T>().lstm_cell_backward(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {to_dtype(dx, st), to_dtype(dh, st), to_dtype(dc, st), to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

// -------------------------------------------------------------------- lstm --
// Returns (output (T, B, H), cell_states (T, B, H), gates (T, B, 4H)).
// Time-major; batch_first is the Python wrapper's business.
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
  const int64_t T_ = d.T_, B = d.B, I = d.I, H = d.H;
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt), cc = as_compute(c0, dt), wh = as_compute(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  // The input projection of every step is one large product into `gates`;
  // the recurrence then adds h W_hhᵀ and the biases in place. Where our
  // register tiles run (fp32, AVX2) the kernel computes it, beside the
  // recurrence; otherwise it is one ATen product here.
  auto gates = empty({T_, B, G * H}, dt, x);
  const auto path = cpu_recurrence_choice(op, dt);
  const bool fused_side = path.fuse_side_products;
  const auto wi = as_compute(w_ih, dt);
  if (!fused_side) mm_out(view2d(gates, T_ * B, G * H), view2d(xc, T_ * B, I), t(wi));
  auto out = empty({T_, B, H}, dt, x), cell = empty({T_, B, H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    LstmSeqFwdParams<T> p{ptr<T>(hc),    ptr<T>(cc),  ptr<T>(wh),   ptr<T>(bi), ptr<T>(bh),
                          ptr<T>(gates), ptr<T>(out), ptr<T>(cell), T_,         B,          H};
    if (fused_side) p.x = ptr<T>(xc), p.w_ih = ptr<T>(wi), p.I = I;
    p.threads = intra_op_threads(), p.path = path.path;
    cpu::kernels<T>().lstm_seq_forward(p, torch_parallel_for());
  });
  return {to_dtype(out, x.scalar_type()), cell, gates};
}

// Returns (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b).
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
  const int64_t T_ = d.T_, B = d.B, I = d.I, H = d.H;
  const auto dt = compute_dtype(x);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto go = as_compute(grad_output, dt), gc = as_compute(grad_cell_states, dt), y = as_compute(output, dt);
  const auto cs = as_compute(cell_states, dt), g = as_compute(gates, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt), cc = as_compute(c0, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  auto dz = empty({T_, B, G * H}, dt, x), dh0 = empty({B, H}, dt, x), dc0 = empty({B, H}, dt, x);
  // dx = dz W_ih: in the kernel, behind the recurrence, where it fuses the
  // forward's projection; otherwise one ATen product below. The weight
  // gradients join it there on up to two threads (each of their column
  // blocks is summed by one thread at a time, which keeps more threads idle
  // than ATen's product would).
  const auto path = cpu_recurrence_choice(op, dt);
  const bool fused_side = path.fuse_side_products;
  const bool fused_weights = fused_side && intra_op_threads() <= 2;
  std::optional<Tensor> dx_fused, dwi_fused, dwh_fused, db_fused;
  if (fused_side) dx_fused = empty({T_, B, I}, dt, x);
  if (fused_weights)
    dwi_fused = empty({G * H, I}, dt, x), dwh_fused = empty({G * H, H}, dt, x), db_fused = empty({G * H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    LstmSeqBwdParams<T> p{ptr<T>(go), ptr<T>(gc),  ptr<T>(g),   ptr<T>(cs), ptr<T>(cc), ptr<T>(wh),
                          ptr<T>(dz), ptr<T>(dh0), ptr<T>(dc0), T_,         B,          H};
    if (fused_side) p.w_ih = ptr<T>(wi), p.grad_x = ptr<T>(*dx_fused), p.I = I;
    if (fused_weights) {
      p.x = ptr<T>(xc), p.h0 = ptr<T>(hc), p.out = ptr<T>(y);
      p.grad_w_ih = ptr<T>(*dwi_fused), p.grad_w_hh = ptr<T>(*dwh_fused), p.grad_b = ptr<T>(*db_fused);
    }
    p.threads = intra_op_threads(), p.path = path.path;
    cpu::kernels<T>().lstm_seq_backward(p, torch_parallel_for());
  });
  // What the kernel left is a large product over all T·B rows at once.
  const auto dz2 = view2d(dz, T_ * B, G * H);
  const auto dx = fused_side ? *dx_fused : strided_view(mm(dz2, wi), {T_, B, I}, {B * I, I, 1});
  const auto [dwi, dwh, db] =
      fused_weights ? std::tuple{*dwi_fused, *dwh_fused, *db_fused}
                    : gated::lstm_weight_grads(dz2, view2d(xc, T_ * B, I), previous_states(hc, y));
  const auto st = x.scalar_type();
  return {to_dtype(dx, st),  to_dtype(dh0, st), to_dtype(dc0, st),
          to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

}  // namespace

// The same functions serve CPU and CUDA tensors (CUDA raises after the checks
// until a CUDA kernel lands); sparse and mkldnn tensors dispatch to their own
// keys, where the layout check names the offending argument.
#define FUSEDSEQ_LSTM_IMPLS(KEY)                                                     \
  STABLE_TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                                      \
    register_generic(m, #KEY, "lstm_cell", TORCH_BOX(&lstm_cell));                   \
    register_generic(m, #KEY, "lstm_cell_backward", TORCH_BOX(&lstm_cell_backward)); \
    register_generic(m, #KEY, "lstm", TORCH_BOX(&lstm));                             \
    register_generic(m, #KEY, "lstm_backward", TORCH_BOX(&lstm_backward));           \
  }
FUSEDSEQ_LSTM_IMPLS(CPU)
FUSEDSEQ_LSTM_IMPLS(CUDA)
FUSEDSEQ_LSTM_IMPLS(SparseCPU)
FUSEDSEQ_LSTM_IMPLS(SparseCUDA)
FUSEDSEQ_LSTM_IMPLS(SparseCsrCPU)
FUSEDSEQ_LSTM_IMPLS(SparseCsrCUDA)
FUSEDSEQ_LSTM_IMPLS(MkldnnCPU)
#undef FUSEDSEQ_LSTM_IMPLS

}  // namespace fusedseq
