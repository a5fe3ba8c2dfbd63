// torch-facing side of the RNN ops: checks, output allocation, the large
// matrix products that belong to ATen, and the calls into the fused kernels.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;

// Checks shared by the cell and the sequence: the weights and biases against
// the input width I and the hidden width H.
void check_weights(const char* op, const at::Tensor& x, int64_t I, int64_t H, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                   const std::optional<at::Tensor>& b_hh) {
  checks::tensor(op, "w_ih", w_ih, 2, "(H, I)");
  checks::tensor(op, "w_hh", w_hh, 2, "(H, H)");
  like(op, "w_ih", w_ih, "x", x);
  like(op, "w_hh", w_hh, "x", x);
  shape(op, "w_ih", w_ih, {H, I}, "(H, I)");
  shape(op, "w_hh", w_hh, {H, H}, "(H, H)");
  if (b_ih.has_value() && b_ih->defined()) {
    checks::tensor(op, "b_ih", *b_ih, 1, "(H,)");
    like(op, "b_ih", *b_ih, "x", x);
    shape(op, "b_ih", *b_ih, {H}, "(H,)");
  }
  if (b_hh.has_value() && b_hh->defined()) {
    checks::tensor(op, "b_hh", *b_hh, 1, "(H,)");
    like(op, "b_hh", *b_hh, "x", x);
    shape(op, "b_hh", *b_hh, {H}, "(H,)");
  }
}

// ---------------------------------------------------------------- rnn_cell --
at::Tensor rnn_cell(const at::Tensor& x,     // (B, I)
                    const at::Tensor& h,     // (B, H)
                    const at::Tensor& w_ih,  // (H, I)
                    const at::Tensor& w_hh,  // (H, H)
                    const std::optional<at::Tensor>& b_ih,  // (H,)
                    const std::optional<at::Tensor>& b_hh,  // (H,)
                    c10::string_view nonlinearity) {
  const char* op = "fusedseq.rnn_cell";
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h", h, 2, "(B, H)");
  like(op, "h", h, "x", x);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  TORCH_CHECK_VALUE(h.size(0) == B, op, ": argument 'h' must have shape (B, H) with B = ", B,
                    " (the batch of 'x'), got ", checks::sizes_str(h.sizes()));
  check_weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  auto out = at::empty({B, H}, xc.options());
  dispatch_compute(dt, [&]<typename T>() {
    RnnCellFwdParams<T> p{xc.data_ptr<T>(), hc.data_ptr<T>(), wi.data_ptr<T>(), wh.data_ptr<T>(),
                          bi ? bi->data_ptr<T>() : nullptr, bh ? bh->data_ptr<T>() : nullptr,
                          out.data_ptr<T>(), B, I, H, act};
    cpu::rnn_cell_forward<T>(p, torch_parallel_for());
  });
  return out.to(x.scalar_type());
}

// Returns (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b); grad_b serves both
// biases (they enter the sum the same way).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cell_backward(
    const at::Tensor& grad_h_next,  // (B, H)
    const at::Tensor& h_next,       // (B, H)
    const at::Tensor& x,            // (B, I)
    const at::Tensor& h,            // (B, H)
    const at::Tensor& w_ih,         // (H, I)
    const at::Tensor& w_hh,         // (H, H)
    c10::string_view nonlinearity) {
  const char* op = "fusedseq.rnn_cell_backward";
  checks::tensor(op, "x", x, 2, "(B, I)");
  checks::supported_device(op, x);
  const int64_t B = x.size(0), I = x.size(1);
  checks::tensor(op, "h", h, 2, "(B, H)");
  const int64_t H = h.size(1);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_h_next", &grad_h_next},
                         {"h_next", &h_next}, {"h", &h}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {B, H}, "(B, H)");
  }
  check_weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto g = as_compute(grad_h_next, dt), y = as_compute(h_next, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  auto opts = xc.options();
  auto dz = at::empty({B, H}, opts), dx = at::empty({B, I}, opts), dh = at::empty({B, H}, opts);
  auto dwi = at::empty({H, I}, opts), dwh = at::empty({H, H}, opts), db = at::empty({H}, opts);
  dispatch_compute(dt, [&]<typename T>() {
    RnnCellBwdParams<T> p{g.data_ptr<T>(),   y.data_ptr<T>(),   xc.data_ptr<T>(),  hc.data_ptr<T>(),
                          wi.data_ptr<T>(),  wh.data_ptr<T>(),  dz.data_ptr<T>(),  dx.data_ptr<T>(),
                          dh.data_ptr<T>(),  dwi.data_ptr<T>(), dwh.data_ptr<T>(), db.data_ptr<T>(),
                          B,                 I,                 H,                 act};
    cpu::rnn_cell_backward<T>(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {dx.to(st), dh.to(st), dwi.to(st), dwh.to(st), db.to(st)};
}

// --------------------------------------------------------------------- rnn --
// Returns (output (T, B, H), h_n (B, H)). Time-major; batch_first is the
// Python wrapper's business.
std::tuple<at::Tensor, at::Tensor> rnn(const at::Tensor& x,     // (T, B, I)
                                       const at::Tensor& h0,    // (B, H)
                                       const at::Tensor& w_ih,  // (H, I)
                                       const at::Tensor& w_hh,  // (H, H)
                                       const std::optional<at::Tensor>& b_ih,  // (H,)
                                       const std::optional<at::Tensor>& b_hh,  // (H,)
                                       c10::string_view nonlinearity) {
  const char* op = "fusedseq.rnn";
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  like(op, "h0", h0, "x", x);
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  TORCH_CHECK_VALUE(h0.size(0) == B, op, ": argument 'h0' must have shape (B, H) with B = ", B,
                    " (dim 1 of 'x'), got ", checks::sizes_str(h0.sizes()));
  check_weights(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt), wh = as_compute(w_hh, dt);
  const auto wi = w_ih.to(dt);
  auto out = at::empty({T_, B, H}, xc.options());
  // The input projection of every step is one large product, written straight
  // into `out`, which the recurrence then updates in place.
  auto out2d = out.view({T_ * B, H});
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  if (bi || bh) {
    const auto bias = bi && bh ? *bi + *bh : (bi ? *bi : *bh);
    at::addmm_out(out2d, bias.unsqueeze(0), xc.view({T_ * B, I}), wi.t());
  } else {
    at::mm_out(out2d, xc.view({T_ * B, I}), wi.t());
  }
  dispatch_compute(dt, [&]<typename T>() {
    RnnSeqFwdParams<T> p{hc.data_ptr<T>(), wh.data_ptr<T>(), out.data_ptr<T>(), T_, B, H, act};
    cpu::rnn_seq_forward<T>(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {out.to(st), out[T_ - 1].to(st, /*non_blocking=*/false, /*copy=*/true)};
}

// Returns (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward(
    const at::Tensor& grad_output,  // (T, B, H)
    const at::Tensor& grad_h_n,     // (B, H)
    const at::Tensor& output,       // (T, B, H)
    const at::Tensor& x,            // (T, B, I)
    const at::Tensor& h0,           // (B, H)
    const at::Tensor& w_ih,         // (H, I)
    const at::Tensor& w_hh,         // (H, H)
    c10::string_view nonlinearity) {
  const char* op = "fusedseq.rnn_backward";
  checks::tensor(op, "x", x, 3, "(T, B, I)");
  checks::supported_device(op, x);
  checks::tensor(op, "h0", h0, 2, "(B, H)");
  const int64_t T_ = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_output", &grad_output}, {"output", &output}}) {
    checks::tensor(op, name, *t, 3, "(T, B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {T_, B, H}, "(T, B, H)");
  }
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_h_n", &grad_h_n}, {"h0", &h0}}) {
    checks::tensor(op, name, *t, 2, "(B, H)");
    like(op, name, *t, "x", x);
    shape(op, name, *t, {B, H}, "(B, H)");
  }
  check_weights(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const Activation act = checks::activation(op, nonlinearity);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto go = as_compute(grad_output, dt), gh = as_compute(grad_h_n, dt), y = as_compute(output, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  auto dz = at::empty({T_, B, H}, xc.options());
  auto dh0 = at::empty({B, H}, xc.options());
  dispatch_compute(dt, [&]<typename T>() {
    RnnSeqBwdParams<T> p{go.data_ptr<T>(), gh.data_ptr<T>(), y.data_ptr<T>(), wh.data_ptr<T>(),
                         dz.data_ptr<T>(), dh0.data_ptr<T>(), T_, B, H, act};
    cpu::rnn_seq_backward<T>(p, torch_parallel_for());
  });
  // Everything left is a large product over all T·B rows at once.
  const auto dz2 = dz.view({T_ * B, H});
  const auto dx = at::mm(dz2, wi).view({T_, B, I});
  const auto dwi = at::mm(dz2.t(), xc.view({T_ * B, I}));
  auto dwh = at::mm(dz[0].t(), hc);  // step 0 saw h0
  if (T_ > 1) dwh.addmm_(dz.slice(0, 1).reshape({(T_ - 1) * B, H}).t(), y.slice(0, 0, T_ - 1).reshape({(T_ - 1) * B, H}));
  const auto db = dz2.sum(0);
  const auto st = x.scalar_type();
  return {dx.to(st), dh0.to(st), dwi.to(st), dwh.to(st), db.to(st)};
}

}  // namespace

// The same functions serve CPU and CUDA tensors: checks first, then each
// picks its kernel by device (CUDA raises until the CUDA kernels land).
// Sparse and mkldnn tensors dispatch to their own keys; registering there too
// lets the layout check name the offending argument.
#define FUSEDSEQ_RNN_IMPLS(KEY)                          \
  TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                 \
    m.impl("rnn_cell", &rnn_cell);                       \
    m.impl("rnn_cell_backward", &rnn_cell_backward);     \
    m.impl("rnn", &rnn);                                 \
    m.impl("rnn_backward", &rnn_backward);               \
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
