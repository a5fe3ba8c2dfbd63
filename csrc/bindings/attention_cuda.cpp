// The CUDA kernels' binding of attention_fwd / attention_bwd (dense): the
// CPU op's checks (attention_checks.h), then csrc/cuda/attention/ for CUDA
// tensors, or the same kernels on the host SIMT emulator for CPU tensors in
// the emulated library (torch.ops.fusedseq_emulated.*).
//
// What runs:
//   bf16, fp16   tensor cores (mma.sync), head dims 32/64/96/128/256; a
//                smaller D runs padded in the next one up. fp32 accumulation.
//   fp32, fp64   CUDA cores, exact in the input dtype (attention_simt.cu):
//                correct, not fast.
// lse_lo: the tensor-core kernels round the LSE once, in fp32, and return
// lse_lo = 0 (their backward reads lse alone: with bf16/fp16 inputs the
// logits' own rounding dominates); the fp32/fp64 kernels return what
// rounding lost in lse_lo, as the CPU op does, and their backward reads both.
// attn_mask (bool or additive, broadcast by strides) and windows run on every
// path. Not on CUDA yet (NotImplementedError naming the argument):
// dropout_p > 0, and the varlen ops (not registered here: the generic
// binding's "no CUDA kernel" error).
#include "bindings/attention_checks.h"
#include "bindings/cuda_binding.h"
#include "bindings/cuda_ops.h"
#include "cuda/attention/attention.h"

namespace fusedseq::cuda_bindings {
namespace {

using namespace attention_checks;

void refuse_unsupported(const char* op, double dropout_p, const Tensor& q) {
  if (dropout_p > 0)
    throw_not_implemented(op, ": argument 'dropout_p' > 0 is not supported by the CUDA kernel yet; run on the CPU "
                              "for dropout");
  FUSEDSEQ_CHECK_VALUE(q.size(q.dim() - 1) <= cuda::kAttnMaxHeadDim, op, ": argument 'q' has head dim ",
                       q.size(q.dim() - 1), "; the CUDA kernels take D <= ", cuda::kAttnMaxHeadDim,
                       " (tensor-core instantiations 32, 64, 96, 128, 256; a smaller D runs padded to the next)");
}

bool tensor_cores(const Tensor& q) {
  return q.scalar_type() == ScalarType::BFloat16 || q.scalar_type() == ScalarType::Half;
}

// (B, H, N, D) as the kernels read it: unit last stride, the other strides
// multiples of 16 bytes, a 16-byte-aligned start (whole-chunk cp.async). A
// view that already is comes back as it is; anything else is copied into
// rows padded to 16 bytes (the padding is never read).
Tensor chunk_rows(const Tensor& t) {
  const int64_t per16 = 16 / static_cast<int64_t>(t.element_size());
  bool ok = t.stride(3) == 1 && reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
  for (int64_t d = 0; d < 3; ++d) ok = ok && (t.size(d) == 1 || t.stride(d) % per16 == 0);
  if (ok) return t;
  const int64_t B = t.size(0), H = t.size(1), N = t.size(2), D = t.size(3);
  const int64_t Dp = (D + per16 - 1) / per16 * per16;
  const Tensor view =
      strided_view(empty({B, H, N, Dp}, t.scalar_type(), t), {B, H, N, D}, {H * N * Dp, N * Dp, Dp, 1});
  copy_into(view, t);
  return view;
}

// Strides of a (B, H, N, ·) tensor, 0 along a dim of size 1 (any stride is
// right there, and 0 is a multiple of everything the launchers check).
Strides3 strides_of(const Tensor& t) {
  return {t.size(0) == 1 ? 0 : t.stride(0), t.size(1) == 1 ? 0 : t.stride(1), t.size(2) == 1 ? 0 : t.stride(2)};
}

cuda::AttnDtype half_dtype(const Tensor& q) {
  return q.scalar_type() == ScalarType::BFloat16 ? cuda::AttnDtype::BF16 : cuda::AttnDtype::FP16;
}

// Fills the pointer and stride fields the forward and backward share.
template <class P>
void fill_qkv(P& p, const AttnShape& s, const AttnMask& mask, const Tensor& qc, const Tensor& kc, const Tensor& vc) {
  p.s = s;
  p.mask = mask;
  p.q = static_cast<const uint16_t*>(qc.const_data_ptr()), p.q_st = strides_of(qc);
  p.k = static_cast<const uint16_t*>(kc.const_data_ptr()), p.k_st = strides_of(kc);
  p.v = static_cast<const uint16_t*>(vc.const_data_ptr()), p.v_st = strides_of(vc);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> attention_fwd(
    const Tensor& q,                             // (B, Hq, Nq, D)
    const Tensor& k,                             // (B, Hkv, Nk, D)
    const Tensor& v,                             // (B, Hkv, Nk, D)
    const std::optional<Tensor>& attn_mask,      // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  const AttnShape s = check_qkv(kFwd, q, k, v, o);
  AttnMask mask;
  const Tensor mask_keep = prepare_mask(kFwd, attn_mask, q, s, compute_dtype(q), mask);  // (keeps it alive)
  DeviceContext ctx(kFwd, {{"q", &q}, {"k", &k}, {"v", &v}});
  refuse_unsupported(kFwd, dropout_p, q);

  const ScalarType acc = compute_dtype(q);  // float32, or float64 for float64 inputs
  Tensor out = empty(q.sizes(), q.scalar_type(), q);       // (B, Hq, Nq, D)
  Tensor lse = empty({s.B, s.Hq, s.Nq}, acc, q);           // (B, Hq, Nq)
  Tensor lse_lo = torch::stable::new_zeros(lse, {s.B, s.Hq, s.Nq});
  const Strides3 lse_st{s.Hq * s.Nq, s.Nq, 1};
  if (tensor_cores(q)) {
    const Tensor qc = chunk_rows(q), kc = chunk_rows(k), vc = chunk_rows(v);
    AttnFwdParams<uint16_t> p{};
    fill_qkv(p, s, mask, qc, kc, vc);
    p.out = static_cast<uint16_t*>(out.mutable_data_ptr()), p.o_st = strides_of(out);
    p.lse = static_cast<float*>(lse.mutable_data_ptr()), p.lse_st = lse_st;
    p.lse_lo = static_cast<float*>(lse_lo.mutable_data_ptr());  // (the kernel writes its zeros)
    p.num_splits = 1;
    cuda::attention_forward(p, half_dtype(q), ctx.stream());
  } else {
    dispatch_compute(acc, [&]<typename T>() {
      AttnFwdParams<T> p{};
      const Tensor qc = unit_last_stride(q, acc), kc = unit_last_stride(k, acc), vc = unit_last_stride(v, acc);
      p.s = s;
      p.mask = mask;
      p.q = ptr<T>(qc), p.q_st = strides_of(qc);
      p.k = ptr<T>(kc), p.k_st = strides_of(kc);
      p.v = ptr<T>(vc), p.v_st = strides_of(vc);
      p.out = ptr<T>(out), p.o_st = strides_of(out);
      p.lse = ptr<T>(lse), p.lse_lo = ptr<T>(lse_lo), p.lse_st = lse_st;
      p.num_splits = 1;
      cuda::attention_forward_simt(p, ctx.stream());
    });
  }
  return {out, lse, lse_lo};
}

std::tuple<Tensor, Tensor, Tensor> attention_bwd(
    const Tensor& grad_out,                      // (B, Hq, Nq, D)
    const Tensor& q,                             // (B, Hq, Nq, D)
    const Tensor& k,                             // (B, Hkv, Nk, D)
    const Tensor& v,                             // (B, Hkv, Nk, D)
    const Tensor& out,                           // (B, Hq, Nq, D)
    const Tensor& lse,                           // (B, Hq, Nq)
    const Tensor& lse_lo,                        // (B, Hq, Nq): read by the fp32/fp64 kernels
    const std::optional<Tensor>& attn_mask,      // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  AttnMask mask;
  Tensor mask_keep;
  const AttnShape s = check_backward(grad_out, q, k, v, out, lse, lse_lo, attn_mask, o, mask, mask_keep);
  const ScalarType acc = compute_dtype(q);
  DeviceContext ctx(kBwd, {{"grad_out", &grad_out}, {"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}});
  refuse_unsupported(kBwd, dropout_p, q);

  const Tensor lc = torch::stable::contiguous(lse), llc = torch::stable::contiguous(lse_lo);
  Tensor dq = empty(q.sizes(), q.scalar_type(), q);
  Tensor dk = empty(k.sizes(), q.scalar_type(), q);
  Tensor dv = empty(v.sizes(), q.scalar_type(), q);
  Tensor delta = empty({s.B, s.Hq, s.Nq}, acc, q);  // workspace: rowsum(dO ∘ O)
  const Strides3 lse_st{s.Hq * s.Nq, s.Nq, 1};
  if (tensor_cores(q)) {
    const Tensor qc = chunk_rows(q), kc = chunk_rows(k), vc = chunk_rows(v);
    const Tensor oc = chunk_rows(out), gc = chunk_rows(grad_out);
    AttnBwdParams<uint16_t> p{};
    fill_qkv(p, s, mask, qc, kc, vc);
    p.out = static_cast<const uint16_t*>(oc.const_data_ptr()), p.o_st = strides_of(oc);
    p.grad_out = static_cast<const uint16_t*>(gc.const_data_ptr()), p.do_st = strides_of(gc);
    p.lse = static_cast<const float*>(lc.const_data_ptr()), p.lse_st = lse_st;
    p.grad_q = static_cast<uint16_t*>(dq.mutable_data_ptr()), p.dq_st = strides_of(dq);
    p.grad_k = static_cast<uint16_t*>(dk.mutable_data_ptr()), p.dk_st = strides_of(dk);
    p.grad_v = static_cast<uint16_t*>(dv.mutable_data_ptr()), p.dv_st = strides_of(dv);
    p.delta = static_cast<float*>(delta.mutable_data_ptr());
    cuda::attention_backward(p, half_dtype(q), ctx.stream());
  } else {
    dispatch_compute(acc, [&]<typename T>() {
      AttnBwdParams<T> p{};
      const Tensor qc = unit_last_stride(q, acc), kc = unit_last_stride(k, acc), vc = unit_last_stride(v, acc);
      const Tensor oc = unit_last_stride(out, acc), gc = unit_last_stride(grad_out, acc);
      p.s = s;
      p.mask = mask;
      p.q = ptr<T>(qc), p.q_st = strides_of(qc);
      p.k = ptr<T>(kc), p.k_st = strides_of(kc);
      p.v = ptr<T>(vc), p.v_st = strides_of(vc);
      p.out = ptr<T>(oc), p.o_st = strides_of(oc);
      p.grad_out = ptr<T>(gc), p.do_st = strides_of(gc);
      p.lse = ptr<T>(lc), p.lse_lo = ptr<T>(llc), p.lse_st = lse_st;
      p.grad_q = ptr<T>(dq), p.dq_st = strides_of(dq);
      p.grad_k = ptr<T>(dk), p.dk_st = strides_of(dk);
      p.grad_v = ptr<T>(dv), p.dv_st = strides_of(dv);
      p.delta = ptr<T>(delta);
      cuda::attention_backward_simt(p, ctx.stream());
    });
  }
  return {dq, dk, dv};
}

}  // namespace fusedseq::cuda_bindings
