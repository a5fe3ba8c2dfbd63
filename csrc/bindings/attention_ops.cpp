// torch-facing side of fused attention: checks, layouts, calls into kernels.
#include <cmath>

#include "bindings/checks.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;

Strides3 strides3(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// Checks q, k, v and returns their shape.
AttnShape check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
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
  FUSEDSEQ_CHECK_VALUE(Hq % Hkv == 0, op, ": the number of query heads (", Hq,
                       ", dim 1 of 'q') must be a multiple of the number of key/value heads (", Hkv,
                       ", dim 1 of 'k')");
  FUSEDSEQ_CHECK_VALUE(std::isfinite(scale), op, ": argument 'scale' must be finite, got ", scale);
  return AttnShape{B, Hq, Hkv, Nq, Nk, D, scale, causal};
}

// -------------------------------------------------------------- forward --
// Returns (out (B, Hq, Nq, D), lse (B, Hq, Nq)); lse is float32, or float64
// for float64 inputs.
std::tuple<Tensor, Tensor> attention_fwd(const Tensor& q,  // (B, Hq, Nq, D)
                                         const Tensor& k,  // (B, Hkv, Nk, D)
                                         const Tensor& v,  // (B, Hkv, Nk, D)
                                         bool causal, double scale) {
  const char* op = "fusedseq.attention";
  const AttnShape s = check_qkv(op, q, k, v, causal, scale);
  if (q.is_cuda()) no_cuda_kernel(op);

  const auto dt = compute_dtype(q);
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  auto out = empty({s.B, s.Hq, s.Nq, s.D}, dt, q);
  auto lse = empty({s.B, s.Hq, s.Nq}, dt, q);
  dispatch_compute(dt, [&]<typename T>() {
    AttnFwdParams<T> p{s,         ptr<T>(qc), strides3(qc), ptr<T>(kc),  strides3(kc),
                       ptr<T>(vc), strides3(vc), ptr<T>(out), ptr<T>(lse)};
    cpu::kernels<T>().attention_forward(p, torch_parallel_for());
  });
  return {to_dtype(out, q.scalar_type()), lse};
}

// ------------------------------------------------------------- backward --
// Returns (grad_q, grad_k, grad_v) from the forward's out and lse.
std::tuple<Tensor, Tensor, Tensor> attention_bwd(const Tensor& grad_out,  // (B, Hq, Nq, D)
                                                 const Tensor& q,         // (B, Hq, Nq, D)
                                                 const Tensor& k,         // (B, Hkv, Nk, D)
                                                 const Tensor& v,         // (B, Hkv, Nk, D)
                                                 const Tensor& out,       // (B, Hq, Nq, D)
                                                 const Tensor& lse,       // (B, Hq, Nq)
                                                 bool causal, double scale) {
  const char* op = "fusedseq.attention_backward";
  const AttnShape s = check_qkv(op, q, k, v, causal, scale);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"grad_out", &grad_out}, {"out", &out}}) {
    checks::tensor(op, name, *t, 4, "(B, Hq, Nq, D)");
    like(op, name, *t, "q", q);
    shape(op, name, *t, {s.B, s.Hq, s.Nq, s.D}, "(B, Hq, Nq, D) of 'q'");
  }
  const auto dt = compute_dtype(q);
  checks::tensor(op, "lse", lse, 3, "(B, Hq, Nq)");
  FUSEDSEQ_CHECK_TYPE(lse.scalar_type() == dt, op, ": argument 'lse' must be ", checks::dtype_str(dt),
                      " (as the forward returns it), got ", checks::dtype_str(lse.scalar_type()));
  FUSEDSEQ_CHECK_TYPE(lse.device() == q.device(), op, ": argument 'lse' must be on ", checks::device_str(q.device()),
                      ", got ", checks::device_str(lse.device()));
  shape(op, "lse", lse, {s.B, s.Hq, s.Nq}, "(B, Hq, Nq)");
  if (q.is_cuda()) no_cuda_kernel(op);

  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const auto oc = unit_last_stride(out, dt), gc = unit_last_stride(grad_out, dt);
  const auto lc = torch::stable::contiguous(lse);
  auto dq = empty({s.B, s.Hq, s.Nq, s.D}, dt, q);
  auto dk = empty({s.B, s.Hkv, s.Nk, s.D}, dt, q);
  auto dv = empty({s.B, s.Hkv, s.Nk, s.D}, dt, q);
  dispatch_compute(dt, [&]<typename T>() {
    AttnBwdParams<T> p{s,
                       ptr<T>(qc), strides3(qc),
                       ptr<T>(kc), strides3(kc),
                       ptr<T>(vc), strides3(vc),
                       ptr<T>(oc), strides3(oc),
                       ptr<T>(gc), strides3(gc),
                       ptr<T>(lc),
                       ptr<T>(dq), ptr<T>(dk), ptr<T>(dv)};
    cpu::kernels<T>().attention_backward(p, torch_parallel_for());
  });
  const auto st = q.scalar_type();
  return {to_dtype(dq, st), to_dtype(dk, st), to_dtype(dv, st)};
}

}  // namespace

// CPU and CUDA share the checks (CUDA raises until its kernel lands). Sparse
// and mkldnn tensors dispatch to their own keys; registering there too lets
// the layout check name the offending argument instead of the dispatcher's
// generic "could not run" error.
#define FUSEDSEQ_ATTENTION_IMPLS(KEY)                       \
  STABLE_TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {             \
    m.impl("attention_fwd", TORCH_BOX(&attention_fwd));     \
    m.impl("attention_bwd", TORCH_BOX(&attention_bwd));     \
  }
FUSEDSEQ_ATTENTION_IMPLS(CPU)
FUSEDSEQ_ATTENTION_IMPLS(CUDA)
FUSEDSEQ_ATTENTION_IMPLS(SparseCPU)
FUSEDSEQ_ATTENTION_IMPLS(SparseCUDA)
FUSEDSEQ_ATTENTION_IMPLS(SparseCsrCPU)
FUSEDSEQ_ATTENTION_IMPLS(SparseCsrCUDA)
FUSEDSEQ_ATTENTION_IMPLS(MkldnnCPU)
#undef FUSEDSEQ_ATTENTION_IMPLS

}  // namespace fusedseq
