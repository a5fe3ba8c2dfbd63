// torch-facing side of fused attention: checks, layouts, calls into kernels.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;

// The kernels take any strides over (B, H, N) but need unit stride along D.
at::Tensor unit_last_stride(const at::Tensor& t, at::ScalarType dt) {
  at::Tensor r = t.to(dt);
  return r.stride(-1) == 1 ? r : r.contiguous();
}

Strides3 strides3(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// Checks q, k, v and returns their shape.
AttnShape check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                    double scale) {
  checks::tensor(op, "q", q, 4, "(B, Hq, Nq, D)");
  checks::supported_device(op, q);
  checks::tensor(op, "k", k, 4, "(B, Hkv, Nk, D)");
  checks::tensor(op, "v", v, 4, "(B, Hkv, Nk, D)");
  like(op, "k", k, "q", q);
  like(op, "v", v, "q", q);
  const int64_t B = q.size(0), Hq = q.size(1), Nq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Nk = k.size(2);
  shape(op, "k", k, {B, Hkv, Nk, D}, "(B, Hkv, Nk, D) with B and D of 'q'");
  shape(op, "v", v, {B, Hkv, Nk, D}, "(B, Hkv, Nk, D) matching 'k'");
  TORCH_CHECK_VALUE(Hq % Hkv == 0, op, ": the number of query heads (", Hq,
                    ", dim 1 of 'q') must be a multiple of the number of key/value heads (", Hkv, ", dim 1 of 'k')");
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": argument 'scale' must be finite, got ", scale);
  return AttnShape{B, Hq, Hkv, Nq, Nk, D, scale, causal};
}

// -------------------------------------------------------------- forward --
// Returns (out (B, Hq, Nq, D), lse (B, Hq, Nq)); lse is float32, or float64
// for float64 inputs.
std::tuple<at::Tensor, at::Tensor> attention_fwd(const at::Tensor& q,  // (B, Hq, Nq, D)
                                                 const at::Tensor& k,  // (B, Hkv, Nk, D)
                                                 const at::Tensor& v,  // (B, Hkv, Nk, D)
                                                 bool causal, double scale) {
  const char* op = "fusedseq.attention";
  const AttnShape s = check_qkv(op, q, k, v, causal, scale);
  if (q.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(q);
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  auto out = at::empty({s.B, s.Hq, s.Nq, s.D}, qc.options());
  auto lse = at::empty({s.B, s.Hq, s.Nq}, qc.options());
  dispatch_compute(dt, [&]<typename T>() {
    AttnFwdParams<T> p{s, qc.data_ptr<T>(), strides3(qc), kc.data_ptr<T>(), strides3(kc),
                       vc.data_ptr<T>(), strides3(vc), out.data_ptr<T>(), lse.data_ptr<T>()};
    cpu::attention_forward<T>(p, torch_parallel_for());
  });
  return {out.to(q.scalar_type()), lse};
}

// ------------------------------------------------------------- backward --
// Returns (grad_q, grad_k, grad_v) from the forward's out and lse.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd(const at::Tensor& grad_out,  // (B, Hq, Nq, D)
                                                             const at::Tensor& q,         // (B, Hq, Nq, D)
                                                             const at::Tensor& k,         // (B, Hkv, Nk, D)
                                                             const at::Tensor& v,         // (B, Hkv, Nk, D)
                                                             const at::Tensor& out,       // (B, Hq, Nq, D)
                                                             const at::Tensor& lse,       // (B, Hq, Nq)
                                                             bool causal, double scale) {
  const char* op = "fusedseq.attention_backward";
  const AttnShape s = check_qkv(op, q, k, v, causal, scale);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_out", &grad_out}, {"out", &out}}) {
    checks::tensor(op, name, *t, 4, "(B, Hq, Nq, D)");
    like(op, name, *t, "q", q);
    shape(op, name, *t, {s.B, s.Hq, s.Nq, s.D}, "(B, Hq, Nq, D) of 'q'");
  }
  const auto dt = compute_dtype(q);
  checks::tensor(op, "lse", lse, 3, "(B, Hq, Nq)");
  TORCH_CHECK_TYPE(lse.scalar_type() == dt, op, ": argument 'lse' must be ", dt, " (as the forward returns it), got ",
                   lse.scalar_type());
  TORCH_CHECK_TYPE(lse.device() == q.device(), op, ": argument 'lse' must be on ", q.device(), ", got ", lse.device());
  shape(op, "lse", lse, {s.B, s.Hq, s.Nq}, "(B, Hq, Nq)");
  if (q.is_cuda()) no_cuda_kernel(op);

  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const auto oc = unit_last_stride(out, dt), gc = unit_last_stride(grad_out, dt);
  const auto lc = lse.contiguous();
  auto dq = at::empty({s.B, s.Hq, s.Nq, s.D}, qc.options());
  auto dk = at::empty({s.B, s.Hkv, s.Nk, s.D}, qc.options());
  auto dv = at::empty({s.B, s.Hkv, s.Nk, s.D}, qc.options());
  dispatch_compute(dt, [&]<typename T>() {
    AttnBwdParams<T> p{s,
                       qc.data_ptr<T>(), strides3(qc),
                       kc.data_ptr<T>(), strides3(kc),
                       vc.data_ptr<T>(), strides3(vc),
                       oc.data_ptr<T>(), strides3(oc),
                       gc.data_ptr<T>(), strides3(gc),
                       lc.data_ptr<T>(),
                       dq.data_ptr<T>(), dk.data_ptr<T>(), dv.data_ptr<T>()};
    cpu::attention_backward<T>(p, torch_parallel_for());
  });
  const auto st = q.scalar_type();
  return {dq.to(st), dk.to(st), dv.to(st)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedseq, CPU, m) {
  m.impl("attention_fwd", &attention_fwd);
  m.impl("attention_bwd", &attention_bwd);
}

TORCH_LIBRARY_IMPL(fusedseq, CUDA, m) {
  m.impl("attention_fwd", &attention_fwd);
  m.impl("attention_bwd", &attention_bwd);
}

// Sparse and mkldnn tensors dispatch to their own keys; registering the same
// functions there lets the layout check name the offending argument instead
// of the dispatcher's generic "could not run" error.
#define FUSEDSEQ_ATTENTION_REJECT_LAYOUT(KEY)        \
  TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {             \
    m.impl("attention_fwd", &attention_fwd);         \
    m.impl("attention_bwd", &attention_bwd);         \
  }
FUSEDSEQ_ATTENTION_REJECT_LAYOUT(SparseCPU)
FUSEDSEQ_ATTENTION_REJECT_LAYOUT(SparseCUDA)
FUSEDSEQ_ATTENTION_REJECT_LAYOUT(SparseCsrCPU)
FUSEDSEQ_ATTENTION_REJECT_LAYOUT(SparseCsrCUDA)
FUSEDSEQ_ATTENTION_REJECT_LAYOUT(MkldnnCPU)
#undef FUSEDSEQ_ATTENTION_REJECT_LAYOUT

}  // namespace fusedseq
