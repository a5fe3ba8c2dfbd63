// torch-facing side of the GRU ops: checks, output allocation, the large
// matrix products that belong to ATen, and the calls into the fused kernels.
//
// The forward ops return what the backward needs as their last output,
// `gates` (·, 4H) in the compute dtype: r, z, n and h W_hnᵀ + b_hn. The
// backward kernels leave dL/d(pre-activations) as (dz_r, dz_z, dz_n, dz_n r):
// the first three feed the input side (x W_ihᵀ + b_ih), (dz_r, dz_z, dz_n r)
// the hidden side (h W_hhᵀ + b_hh).
#include "bindings/checks.h"
#include "bindings/cuda_ops.h"
#include "bindings/gated_common.h"
#include "bindings/recurrent.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using OptTensor = std::optional<Tensor>;
constexpr int64_t G = gated::kGruGates;  // gates: r, z, n
constexpr int64_t S = gated::kSlots;     // slots of a gate row: r, z, n, h W_hnᵀ + b_hn
using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// ---------------------------------------------------------------- gru_cell --
// Returns (h' (B, H), gates (B, 4H)).
std::tuple<Tensor, Tensor> gru_cell(const Tensor& x,        // (B, I)
                                    const Tensor& h,        // (B, H)
                                    const Tensor& w_ih,     // (3H, I)
                                    const Tensor& w_hh,     // (3H, H)
                                    const OptTensor& b_ih,  // (3H,)
                                    const OptTensor& b_hh)  // (3H,)
{
  const char* op = "fusedseq.gru_cell";
  const auto d = gated::gru_cell(op, x, h, w_ih, w_hh, b_ih, b_hh);
  const int64_t B = d.B, I = d.I, H = d.H;
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  auto h_next = empty({B, H}, dt, x), gates = empty({B, S * H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    GruCellFwdParams<T> p{ptr<T>(xc), ptr<T>(hc), ptr<T>(wi), ptr<T>(wh), ptr<T>(bi), ptr<T>(bh),
                          ptr<T>(h_next), ptr<T>(gates), B, I, H};
    cpu::kernels<T>().gru_cell_forward(p, torch_parallel_for());
  });
  return {to_dtype(h_next, x.scalar_type()), gates};
}

// Returns (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh).
Grads gru_cell_backward(const Tensor& grad_h_next,  // (B, H)
                        const Tensor& gates,        // (B, 4H) compute dtype
                        const Tensor& x,            // (B, I)
                        const Tensor& h,            // (B, H)
                        const Tensor& w_ih,         // (3H, I)
                        const Tensor& w_hh)         // (3H, H)
{
  const char* op = "fusedseq.gru_cell_backward";
  const auto d = gated::gru_cell_backward(op, grad_h_next, gates, x, h, w_ih, w_hh);
  const int64_t B = d.B, I = d.I, H = d.H;
  const auto dt = compute_dtype(x);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto gh = as_compute(grad_h_next, dt), g = as_compute(gates, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h, dt);
  const auto wi = as_compute(w_ih, dt), wh = as_compute(w_hh, dt);
  auto dz = empty({B, S * H}, dt, x), dx = empty({B, I}, dt, x), dh = empty({B, H}, dt, x);
  auto dwi = empty({G * H, I}, dt, x), dwh = empty({G * H, H}, dt, x);
  auto dbi = empty({G * H}, dt, x), dbh = empty({G * H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    GruCellBwdParams<T> p{ptr<T>(gh),  ptr<T>(g),   ptr<T>(xc),  ptr<T>(hc),  ptr<T>(wi), ptr<T>(wh), ptr<T>(dz),
                          ptr<T>(dx),  ptr<T>(dh),  ptr<T>(dwi), ptr<T>(dwh), ptr<T>(dbi), ptr<T>(dbh),
                          B,           I,           H};
    cpu::kernels<T>().gru_cell_backward(p, torch_parallel_for());
  });
  const auto st = x.scalar_type();
  return {to_dtype(dx, st), to_dtype(dh, st), to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(dbi, st), to_dtype(dbh, st)};
}

// --------------------------------------------------------------------- gru --
// Returns (output (T, B, H), gates (T, B, 4H)). Time-major; batch_first is
// the Python wrapper's business.
std::tuple<Tensor, Tensor> gru(const Tensor& x,        // (T, B, I)
                               const Tensor& h0,       // (B, H)
                               const Tensor& w_ih,     // (3H, I)
                               const Tensor& w_hh,     // (3H, H)
                               const OptTensor& b_ih,  // (3H,)
                               const OptTensor& b_hh)  // (3H,)
{
  const char* op = "fusedseq.gru";
  const auto d = gated::gru(op, x, h0, w_ih, w_hh, b_ih, b_hh);
  const int64_t T_ = d.T_, B = d.B, I = d.I, H = d.H;
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(x);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt), wh = as_compute(w_hh, dt);
  const auto bi = as_compute(b_ih, dt), bh = as_compute(b_hh, dt);
  // The input projection of every step is one large product, written straight
  // into the first three slots of `gates`; the recurrence does the rest in place.
  auto gates = empty({T_, B, S * H}, dt, x);
  mm_out(columns(view2d(gates, T_ * B, S * H), 0, G * H), view2d(xc, T_ * B, I), t(to_dtype(w_ih, dt)));
  auto out = empty({T_, B, H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    GruSeqFwdParams<T> p{ptr<T>(hc), ptr<T>(wh), ptr<T>(bi), ptr<T>(bh), ptr<T>(gates), ptr<T>(out), T_, B, H};
    cpu::kernels<T>().gru_seq_forward(p, torch_parallel_for());
  });
  return {to_dtype(out, x.scalar_type()), gates};
}

// Returns (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh).
Grads gru_backward(const Tensor& grad_output,  // (T, B, H)
                   const Tensor& output,       // (T, B, H)
                   const Tensor& gates,        // (T, B, 4H) compute dtype
                   const Tensor& x,            // (T, B, I)
                   const Tensor& h0,           // (B, H)
                   const Tensor& w_ih,         // (3H, I)
                   const Tensor& w_hh)         // (3H, H)
{
  const char* op = "fusedseq.gru_backward";
  const auto d = gated::gru_backward(op, grad_output, output, gates, x, h0, w_ih, w_hh);
  const int64_t T_ = d.T_, B = d.B, I = d.I, H = d.H;
  const auto dt = compute_dtype(x);
  if (x.is_cuda()) no_cuda_kernel(op);

  const auto go = as_compute(grad_output, dt), y = as_compute(output, dt), g = as_compute(gates, dt);
  const auto xc = as_compute(x, dt), hc = as_compute(h0, dt);
  const auto wi = to_dtype(w_ih, dt), wh = as_compute(w_hh, dt);
  auto dz = empty({T_, B, S * H}, dt, x), dh0 = empty({B, H}, dt, x);
  dispatch_compute(dt, [&]<typename T>() {
    GruSeqBwdParams<T> p{ptr<T>(go), ptr<T>(y), ptr<T>(g), ptr<T>(hc), ptr<T>(wh), ptr<T>(dz), ptr<T>(dh0), T_, B, H};
    cpu::kernels<T>().gru_seq_backward(p, torch_parallel_for());
  });
  // Everything left is a large product over all T·B rows at once.
  const auto dz2 = view2d(dz, T_ * B, S * H);
  const auto [dx2, dwi, dwh, dbi, dbh] =
      gated::gru_input_and_weight_grads(dz2, view2d(xc, T_ * B, I), previous_states(hc, y), wi);
  const auto dx = strided_view(dx2, {T_, B, I}, {B * I, I, 1});
  const auto st = x.scalar_type();
  return {to_dtype(dx, st), to_dtype(dh0, st), to_dtype(dwi, st), to_dtype(dwh, st), to_dtype(dbi, st), to_dtype(dbh, st)};
}

}  // namespace

// The same functions serve CPU and CUDA tensors (CUDA raises after the checks
// until a CUDA kernel lands); sparse and mkldnn tensors dispatch to their own
// keys, where the layout check names the offending argument.
#define FUSEDSEQ_GRU_IMPLS(KEY)                                                    \
  STABLE_TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                                    \
    register_generic(m, #KEY, "gru_cell", TORCH_BOX(&gru_cell));                   \
    register_generic(m, #KEY, "gru_cell_backward", TORCH_BOX(&gru_cell_backward)); \
    register_generic(m, #KEY, "gru", TORCH_BOX(&gru));                             \
    register_generic(m, #KEY, "gru_backward", TORCH_BOX(&gru_backward));           \
  }
FUSEDSEQ_GRU_IMPLS(CPU)
FUSEDSEQ_GRU_IMPLS(CUDA)
FUSEDSEQ_GRU_IMPLS(SparseCPU)
FUSEDSEQ_GRU_IMPLS(SparseCUDA)
FUSEDSEQ_GRU_IMPLS(SparseCsrCPU)
FUSEDSEQ_GRU_IMPLS(SparseCsrCUDA)
FUSEDSEQ_GRU_IMPLS(MkldnnCPU)
#undef FUSEDSEQ_GRU_IMPLS

}  // namespace fusedseq
