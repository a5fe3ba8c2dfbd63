// torch-facing side of the RNN ops: checks, output allocation, the large
// matrix products that belong to ATen, and the calls into the fused kernels.
#include "bindings/checks.h"
#include "bindings/cuda_ops.h"
#include "bindings/recurrent.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;
using OptTensor = std::optional<Tensor>;

SeqStrides seq_strides(const Tensor& t) { return {t.stride(0), t.stride(1)}; }

// The weights and biases against the input width I and the hidden width H.
void check_weights(const char* op, const Tensor& x, int64_t I, int64_t H, const Tensor& w_ih, const Tensor& w_hh,
                   const OptTensor& b_ih, const OptTensor& b_hh) {
  checks::recurrent_weights(op, x, I, H, /*gates=*/1, w_ih, w_hh, b_ih, b_hh);
}

// ---------------------------------------------------------------- rnn_cell --
Tensor rnn_cell(const Tensor& x,       // (B, I)
                const Tensor& h,       // (B, H)
                const Tensor& w_ih,    // (H, I)
                const Tensor& w_hh,    // (H, H)
                const OptTensor& b_ih, // (H,)
                const OptTensor& b_hh, // (H,)
                std::string nonlinearity) {
  const char* op = "fusedseq.rnn_cell";
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h", h, 2, "(B, H)");
  like(op, "h", h, "x", x);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  FUSEDSEQ_CHECK_VALUE(h.size(0) == B, op, ": argument 'h' must have shape (B, H) with B = ", B,
                       " (the batch of 'x'), got ", checks::sizes_str(h.sizes()));
  check_weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  // The kernel takes any row strides: only a non-unit column stride is copied.
  const auto xc = unit_last_stride(x, dt), hc = unit_last_stride(h, dt);
  const auto wi = unit_last_stride(w_ih, dt), wh = unit_last_stride(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  auto out = empty({B, H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    const RnnCellFwdParams<T> p{.x = ptr<T>(xc), .ld_x = xc.stride(0), .h = ptr<T>(hc), .ld_h = hc.stride(0),
                                .w_ih = ptr<T>(wi), .ld_w_ih = wi.stride(0), .w_hh = ptr<T>(wh),
                                .ld_w_hh = wh.stride(0), .b_ih = ptr<T>(bi), .b_hh = ptr<T>(bh),
                                .h_next = ptr<T>(out), .ld_h_next = out.stride(0), .B = B, .I = I, .H = H,
                                .act = act};
    cpu::kernels<T>().rnn_cell_forward(p, torch_parallel_for());
  });
  return to_dtype(out, x.scalar_type());
}

// Returns (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b); grad_b serves both
// biases (they enter the sum the same way).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(const Tensor& grad_h_next,  // (B, H)
                                                                     const Tensor& h_next,       // (B, H)
                                                                     const Tensor& x,            // (B, I)
                                                                     const Tensor& h,            // (B, H)
                                                                     const Tensor& w_ih,         // (H, I)
                                                                     const Tensor& w_hh,         // (H, H)
                                                                     std::string nonlinearity) {
  const char* op = "fusedseq.rnn_cell_backward";
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1);
  checks::tensor(op, "h", h, 2, "(B, H)");
  const int64_t H = h.size(1);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_h_next", &grad_h_next},
                         {"h_next", &h_next},
                         {"h", &h}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {B, H}, "(B, H)");
  }
  check_weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto g = unit_last_stride(grad_h_next, dt), y = unit_last_stride(h_next, dt);
  const auto xc = unit_last_stride(x, dt), hc = unit_last_stride(h, dt);
  const auto wi = unit_last_stride(w_ih, dt), wh = unit_last_stride(w_hh, dt);
  auto dz = empty({B, H}, dt, x), dx = empty({B, I}, dt, x), dh = empty({B, H}, dt, x);
  auto dwi = empty({H, I}, dt, x), dwh = empty({H, H}, dt, x), db = empty({H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    const RnnCellBwdParams<T> p{.grad_h_next = ptr<T>(g), .ld_grad_h_next = g.stride(0), .h_next = ptr<T>(y),
                                .ld_h_next = y.stride(0), .x = ptr<T>(xc), .ld_x = xc.stride(0), .h = ptr<T>(hc),
                                .ld_h = hc.stride(0), .w_ih = ptr<T>(wi), .ld_w_ih = wi.stride(0),
                                .w_hh = ptr<T>(wh), .ld_w_hh = wh.stride(0), .grad_z = ptr<T>(dz),
                                .grad_x = ptr<T>(dx), .ld_grad_x = dx.stride(0), .grad_h = ptr<T>(dh),
                                .ld_grad_h = dh.stride(0), .grad_w_ih = ptr<T>(dwi), .ld_grad_w_ih = dwi.stride(0),
                                .grad_w_hh = ptr<T>(dwh), .ld_grad_w_hh = dwh.stride(0), .grad_b = ptr<T>(db),
                                .B = B, .I = I, .H = H, .act = act};
    cpu::kernels<T>().rnn_cell_backward(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {to_dtype(dx, st), to_dtype(dh, st), to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

// --------------------------------------------------------------------- rnn --
// Returns (output (T, B, H), h_n (B, H)). Time-major; batch_first is the
// Python wrapper's business.
std::tuple<Tensor, Tensor> rnn(const Tensor& x,        // (T, B, I)
                               const Tensor& h0,       // (B, H)
                               const Tensor& w_ih,     // (H, I)
                               const Tensor& w_hh,     // (H, H)
                               const OptTensor& b_ih,  // (H,)
                               const OptTensor& b_hh,  // (H,)
                               std::string nonlinearity) {
  const char* op = "fusedseq.rnn";
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  like(op, "h0", h0, "x", x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  FUSEDSEQ_CHECK_VALUE(h0.size(0) == B, op, ": argument 'h0' must have shape (B, H) with B = ", B,
                       " (dim 1 of 'x'), got ", checks::sizes_str(h0.sizes()));
  check_weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = unit_last_stride(h0, dt), wh = unit_last_stride(w_hh, dt);
  const auto wi = to_dtype(w_ih, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  // The input projection of every step is one large product, written straight
  // into `out`; the recurrence then adds h W_hhᵀ and the biases in place.
  auto out = empty({T_, B, H}, dt, x);
  mm_out(view2d(out, T_ * B, H), view2d(xc, T_ * B, I), t(wi));
  dispatch_compute(dt, [&]<typename T>() {
    const RnnSeqFwdParams<T> p{.h0 = ptr<T>(hc), .ld_h0 = hc.stride(0), .w_hh = ptr<T>(wh),
                               .ld_w_hh = wh.stride(0), .b_ih = ptr<T>(bi), .b_hh = ptr<T>(bh),
                               .out = ptr<T>(out), .out_st = seq_strides(out), .T_ = T_, .B = B, .H = H,
                               .act = act, .grid_barrier = nullptr};
    cpu::kernels<T>().rnn_seq_forward(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  auto h_n = empty({B, H}, st, x);
  copy_into(h_n, strided_view(out, {B, H}, {H, 1}, (T_ - 1) * B * H));
  return {to_dtype(out, st), h_n};
}

// Returns (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_output,  // (T, B, H)
                                                                const Tensor& grad_h_n,     // (B, H)
                                                                const Tensor& output,       // (T, B, H)
                                                                const Tensor& x,            // (T, B, I)
                                                                const Tensor& h0,           // (B, H)
                                                                const Tensor& w_ih,         // (H, I)
                                                                const Tensor& w_hh,         // (H, H)
                                                                std::string nonlinearity) {
  const char* op = "fusedseq.rnn_backward";
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_output", &grad_output}, {"output", &output}}) {
    checks::tensor(op, name, *t, 3, "(T, B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {T_, B, H}, "(T, B, H)");
  }
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_h_n", &grad_h_n}, {"h0", &h0}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {B, H}, "(B, H)");
  }
  check_weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto go = unit_last_stride(grad_output, dt), gh = unit_last_stride(grad_h_n, dt);
  const auto y = as_compute(output, dt), xc = as_compute(x, dt), hc = as_compute(h0, dt);
  const auto wi = as_compute(w_ih, dt), wh = unit_last_stride(w_hh, dt);
  auto dz = empty({T_, B, H}, dt, x);
  auto dh0 = empty({B, H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    const RnnSeqBwdParams<T> p{.grad_out = ptr<T>(go), .grad_out_st = seq_strides(go), .grad_h_n = ptr<T>(gh),
                               .ld_grad_h_n = gh.stride(0), .out = ptr<T>(y), .out_st = seq_strides(y),
                               .w_hh = ptr<T>(wh), .ld_w_hh = wh.stride(0), .grad_z = ptr<T>(dz),
                               .grad_z_st = seq_strides(dz), .grad_h0 = ptr<T>(dh0), .ld_grad_h0 = dh0.stride(0),
                               .T_ = T_, .B = B, .H = H, .act = act, .grid_barrier = nullptr};
    cpu::kernels<T>().rnn_seq_backward(p, torch_parallel_for());
  });
  // Everything left is a large product over all T·B rows at once. Step t saw
  // h_{t-1}: h0, then the outputs shifted by one step.
  const auto dz2 = view2d(dz, T_ * B, H);
  const auto dx = strided_view(mm(dz2, wi), {T_, B, I}, {B * I, I, 1});
  const auto dwi = mm(t(dz2), view2d(xc, T_ * B, I));
  const auto dwh = mm(t(dz2), previous_states(hc, y));
  const auto db = sum_dim(dz2, 0);
  const auto st = x.scalar_type();
  return {to_dtype(dx, st), to_dtype(dh0, st), to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(db, st)};
}

}  // namespace

// The same functions serve CPU and CUDA tensors: checks first, then each
// picks its kernel by device (CUDA raises until the CUDA kernels land).
// Sparse and mkldnn tensors dispatch to their own keys; registering there too
// lets the layout check name the offending argument.
#define FUSEDSEQ_RNN_IMPLS(KEY)                                     \
  STABLE_TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                     \
    register_generic(m, #KEY, "rnn_cell", TORCH_BOX(&rnn_cell));    \
    register_generic(m, #KEY, "rnn_cell_backward", TORCH_BOX(&rnn_cell_backward)); \
    register_generic(m, #KEY, "rnn", TORCH_BOX(&rnn));              \
    register_generic(m, #KEY, "rnn_backward", TORCH_BOX(&rnn_backward)); \
  }
FUSEDSEQ_RNN_IMPLS(CPU)
FUSEDSEQ_RNN_IMPLS(CUDA)
FUSEDSEQ_RNN_IMPLS(SparseCPU)
FUSEDSEQ_RNN_IMPLS(SparseCUDA)
FUSEDSEQ_RNN_IMPLS(SparseCsrCPU)
FUSEDSEQ_RNN_IMPLS(SparseCsrCUDA)
FUSEDSEQ_RNN_IMPLS(MkldnnCPU)
#undef FUSEDSEQ_RNN_IMPLS

}  // namespace fusedseq
