// torch-facing side of fused attention: checks, layouts, workspaces, calls
// into the kernels. Dense (B, H, N, D) and packed variable-length
// (total, H, D) tensors share one kernel; this file turns either into the
// params of csrc/common/params.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "bindings/attention_checks.h"
#include "bindings/checks.h"
#include "bindings/cuda_ops.h"
#include "bindings/stable.h"
#include "cpu/attention_plan.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;
using checks::dtype_str;
using checks::sizes_str;
using torch::headeronly::Layout;
using OptTensor = std::optional<Tensor>;
using namespace attention_checks;

constexpr const char* kVarFwd = "fusedseq.attention_varlen";
constexpr const char* kVarBwd = "fusedseq.attention_varlen_backward";

// ----------------------------------------------------------------- varlen --
// cu_seqlens: 1-D int32 on q's device, [0, ..., total], non-decreasing.
// Returns its host copy and checks max_seqlen against it. The kernel's
// shape uses the true longest sequence (workspaces are sized by it).
struct Varlen {
  Tensor cu_q, cu_k;
  int64_t B, max_q, max_k;
};

Tensor check_cu_seqlens(const char* op, const char* name, const Tensor& cu, const Tensor& q, int64_t total,
                        const char* total_name) {
  FUSEDSEQ_CHECK_TYPE(cu.defined(), op, ": argument '", name, "' must be a tensor, got None");
  FUSEDSEQ_CHECK_TYPE(cu.layout() == Layout::Strided, op, ": argument '", name, "' must be a dense (strided) tensor");
  FUSEDSEQ_CHECK_TYPE(cu.scalar_type() == ScalarType::Int, op, ": argument '", name,
                      "' must be int32 (cumulative sequence lengths, as FlashAttention takes them), got ",
                      dtype_str(cu.scalar_type()));
  FUSEDSEQ_CHECK_TYPE(cu.device() == q.device(), op, ": argument '", name, "' must be on the device of 'q' (",
                      checks::device_str(q.device()), "), got ", checks::device_str(cu.device()));
  FUSEDSEQ_CHECK_VALUE(cu.dim() == 1 && cu.size(0) >= 2, op, ": argument '", name,
                       "' must be 1-D of length B + 1 >= 2, got shape ", sizes_str(cu.sizes()));
  // Read on the host (for CUDA tensors a copy and a sync: the lengths size the work).
  Tensor h = torch::stable::contiguous(torch::stable::to(cu, torch::stable::Device(torch::stable::DeviceType::CPU)));
  const int32_t* c = static_cast<const int32_t*>(h.const_data_ptr());
  FUSEDSEQ_CHECK_VALUE(c[0] == 0, op, ": argument '", name, "' must start at 0, got ", c[0]);
  for (int64_t b = 0; b + 1 < h.size(0); ++b)
    FUSEDSEQ_CHECK_VALUE(c[b + 1] >= c[b], op, ": argument '", name, "' must be non-decreasing, but element ", b + 1,
                         " (", c[b + 1], ") < element ", b, " (", c[b], ")");
  FUSEDSEQ_CHECK_VALUE(c[h.size(0) - 1] == total, op, ": argument '", name, "' must end at ", total_name, " = ",
                       total, ", got ", c[h.size(0) - 1]);
  return h;
}

int64_t longest(const Tensor& cu) {
  const int32_t* c = static_cast<const int32_t*>(cu.const_data_ptr());
  int64_t m = 0;
  for (int64_t b = 0; b + 1 < cu.size(0); ++b) m = std::max<int64_t>(m, c[b + 1] - c[b]);
  return m;
}

std::pair<AttnShape, Varlen> check_varlen(const char* op, const Tensor& q, const Tensor& k,
                                          const Tensor& v, const Tensor& cu_seqlens_q,
                                          const Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                                          int64_t max_seqlen_k, const AttnOptions& o) {
  check_kinds(op, q, k, v, 3, "(total_q, Hq, D)", "(total_k, Hkv, D)");
  const int64_t Hq = q.size(1), D = q.size(2), Hkv = k.size(1), total_k = k.size(0);
  shape(op, "k", k, {total_k, Hkv, D}, "(total_k, Hkv, D) with D of 'q'");
  shape(op, "v", v, {total_k, Hkv, D}, "(total_k, Hkv, D) matching 'k'");
  check_heads(op, Hq, Hkv);
  check_options(op, o);
  Varlen vl;
  vl.cu_q = check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q, q.size(0), "total_q (dim 0 of 'q')");
  vl.cu_k = check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, q, total_k, "total_k (dim 0 of 'k')");
  FUSEDSEQ_CHECK_VALUE(vl.cu_q.size(0) == vl.cu_k.size(0), op,
                    ": argument 'cu_seqlens_k' must have the length of 'cu_seqlens_q' (B + 1 = ", vl.cu_q.size(0),
                    "), got ", vl.cu_k.size(0));
  vl.B = vl.cu_q.size(0) - 1;
  vl.max_q = longest(vl.cu_q);
  vl.max_k = longest(vl.cu_k);
  FUSEDSEQ_CHECK_VALUE(max_seqlen_q >= vl.max_q && max_seqlen_q >= 1, op, ": argument 'max_seqlen_q' (", max_seqlen_q,
                    ") must be at least the longest query sequence in 'cu_seqlens_q' (", vl.max_q, ") and >= 1");
  FUSEDSEQ_CHECK_VALUE(max_seqlen_k >= vl.max_k && max_seqlen_k >= 1, op, ": argument 'max_seqlen_k' (", max_seqlen_k,
                    ") must be at least the longest key sequence in 'cu_seqlens_k' (", vl.max_k, ") and >= 1");
  const AttnShape s = make_shape(vl.B, Hq, Hkv, std::max<int64_t>(vl.max_q, 1), std::max<int64_t>(vl.max_k, 1), D, o,
                                 /*bottom_right=*/true);
  return {s, vl};
}

AttnVarlen varlen_ptrs(const Varlen* vl) {
  if (vl == nullptr) return {};
  return {static_cast<const int32_t*>(vl->cu_q.const_data_ptr()),
          static_cast<const int32_t*>(vl->cu_k.const_data_ptr())};
}

// What the forward and backward params share: shape, options, q, k, v.
template <typename T, typename Params>
void fill_inputs(Params& p, const AttnShape& s, const Varlen* vl, const AttnMask& mask, const AttnOptions& o,
                 const Tensor& qc, const Tensor& kc, const Tensor& vc) {
  p.s = s;
  p.mask = mask;
  p.dropout = make_dropout(o);
  p.varlen = varlen_ptrs(vl);
  p.q = ptr<T>(qc), p.q_st = strides3(qc);
  p.k = ptr<T>(kc), p.k_st = strides3(kc);
  p.v = ptr<T>(vc), p.v_st = strides3(vc);
}

// ---------------------------------------------------------------- forward --
// out like q; lse, lse_lo (B, Hq, Nq) dense or (Hq, total_q) varlen, in the
// accumulation dtype (float32, float64 for float64 inputs).
std::tuple<Tensor, Tensor, Tensor> forward(const AttnShape& s, const Varlen* vl, const Tensor& q,
                                                       const Tensor& k, const Tensor& v,
                                                       const AttnMask& mask, const AttnOptions& o) {
  const auto dt = compute_dtype(q);
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const bool is_varlen = vl != nullptr;
  auto out = empty(q.sizes(), dt, q);
  auto lse = is_varlen ? empty({s.Hq, q.size(0)}, dt, q) : empty({s.B, s.Hq, s.Nq}, dt, q);
  auto lse_lo = torch::stable::empty_like(lse);
  const Strides3 lse_st = is_varlen ? Strides3{0, q.size(0), 1} : Strides3{s.Hq * s.Nq, s.Nq, 1};

  const cpu::AttnPlan plan = cpu::attention_plan(s, is_varlen, k.size(0), torch::stable::get_num_threads());
  OptTensor o_accum, ml_accum, k_packed;
  if (plan.num_splits > 1) {
    o_accum = empty({plan.num_splits, s.B, s.Hq, s.Nq, s.D}, dt, q);
    ml_accum = empty({plan.num_splits, s.B, s.Hq, s.Nq, 2}, dt, q);
  }
  if (plan.pack_k) k_packed = empty({plan.packed_elems}, dt, q);

  dispatch_compute(dt, [&]<typename T>() {
    AttnFwdParams<T> p{};
    fill_inputs<T>(p, s, vl, mask, o, qc, kc, vc);
    p.out = ptr<T>(out), p.o_st = strides3(out);
    p.lse = ptr<T>(lse), p.lse_lo = ptr<T>(lse_lo), p.lse_st = lse_st;
    p.num_splits = plan.num_splits;
    p.o_accum = ptr<T>(o_accum);
    p.ml_accum = ptr<T>(ml_accum);
    p.k_packed = ptr<T>(k_packed);
    cpu::kernels<T>().attention_forward(p, torch_parallel_for());
  });
  return {to_dtype(out, q.scalar_type()), lse, lse_lo};
}

// --------------------------------------------------------------- backward --
std::tuple<Tensor, Tensor, Tensor> backward(const AttnShape& s, const Varlen* vl,
                                                        const Tensor& grad_out, const Tensor& q,
                                                        const Tensor& k, const Tensor& v,
                                                        const Tensor& out, const Tensor& lse,
                                                        const Tensor& lse_lo, const AttnMask& mask,
                                                        const AttnOptions& o) {
  const auto dt = compute_dtype(q);
  const bool is_varlen = vl != nullptr;
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const auto oc = unit_last_stride(out, dt), gc = unit_last_stride(grad_out, dt);
  const auto lc = torch::stable::contiguous(lse), llc = torch::stable::contiguous(lse_lo);
  const Strides3 lse_st = is_varlen ? Strides3{0, q.size(0), 1} : Strides3{s.Hq * s.Nq, s.Nq, 1};
  auto dq = empty(q.sizes(), dt, q);
  auto dk = empty(k.sizes(), dt, q);
  auto dv = empty(v.sizes(), dt, q);

  const cpu::AttnPlan plan = cpu::attention_plan(s, is_varlen, k.size(0), torch::stable::get_num_threads());
  auto delta = empty({s.B, s.Hq, s.Nq}, dt, q);
  OptTensor dk_accum, dv_accum, k_packed, v_packed;
  if (s.Hq > s.Hkv) {
    const int64_t n = is_varlen ? s.Hq * k.size(0) * s.D : s.B * s.Hq * s.Nk * s.D;
    dk_accum = empty({n}, dt, q);
    dv_accum = empty({n}, dt, q);
  }
  if (plan.pack_k) {
    k_packed = empty({plan.packed_elems}, dt, q);
    v_packed = empty({plan.packed_elems}, dt, q);
  }

  dispatch_compute(dt, [&]<typename T>() {
    AttnBwdParams<T> p{};
    fill_inputs<T>(p, s, vl, mask, o, qc, kc, vc);
    p.out = ptr<T>(oc), p.o_st = strides3(oc);
    p.grad_out = ptr<T>(gc), p.do_st = strides3(gc);
    p.lse = ptr<T>(lc), p.lse_lo = ptr<T>(llc), p.lse_st = lse_st;
    p.grad_q = ptr<T>(dq), p.dq_st = strides3(dq);
    p.grad_k = ptr<T>(dk), p.dk_st = strides3(dk);
    p.grad_v = ptr<T>(dv), p.dv_st = strides3(dv);
    p.delta = ptr<T>(delta);
    p.dq_accum = nullptr;  // the CPU accumulates dQ in grad_q itself (T is the accumulation type)
    p.dk_accum = ptr<T>(dk_accum);
    p.dv_accum = ptr<T>(dv_accum);
    p.k_packed = ptr<T>(k_packed);
    p.v_packed = ptr<T>(v_packed);
    cpu::kernels<T>().attention_backward(p, torch_parallel_for());
  });
  const auto st = q.scalar_type();
  return {to_dtype(dq, st), to_dtype(dk, st), to_dtype(dv, st)};
}

// ------------------------------------------------------------- the ops --
std::tuple<Tensor, Tensor, Tensor> attention_fwd(
    const Tensor& q,                           // (B, Hq, Nq, D)
    const Tensor& k,                           // (B, Hkv, Nk, D)
    const Tensor& v,                           // (B, Hkv, Nk, D)
    const OptTensor& attn_mask,    // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  const AttnShape s = check_qkv(kFwd, q, k, v, o);
  AttnMask mask;
  const Tensor mask_keep = prepare_mask(kFwd, attn_mask, q, s, compute_dtype(q), mask);
  if (q.is_cuda()) no_cuda_kernel(kFwd);
  return forward(s, nullptr, q, k, v, mask, o);
}

std::tuple<Tensor, Tensor, Tensor> attention_bwd(
    const Tensor& grad_out,                    // (B, Hq, Nq, D)
    const Tensor& q,                           // (B, Hq, Nq, D)
    const Tensor& k,                           // (B, Hkv, Nk, D)
    const Tensor& v,                           // (B, Hkv, Nk, D)
    const Tensor& out,                         // (B, Hq, Nq, D)
    const Tensor& lse,                         // (B, Hq, Nq)
    const Tensor& lse_lo,                      // (B, Hq, Nq)
    const OptTensor& attn_mask,    // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  AttnMask mask;
  Tensor mask_keep;
  const AttnShape s = check_backward(grad_out, q, k, v, out, lse, lse_lo, attn_mask, o, mask, mask_keep);
  if (q.is_cuda()) no_cuda_kernel(kBwd);
  return backward(s, nullptr, grad_out, q, k, v, out, lse, lse_lo, mask, o);
}

std::tuple<Tensor, Tensor, Tensor> attention_varlen_fwd(
    const Tensor& q,             // (total_q, Hq, D)
    const Tensor& k,             // (total_k, Hkv, D)
    const Tensor& v,             // (total_k, Hkv, D)
    const Tensor& cu_seqlens_q,  // (B + 1) int32
    const Tensor& cu_seqlens_k,  // (B + 1) int32
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, bool is_causal, double scale, int64_t window_left,
    int64_t window_right, int64_t seed, int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  auto [s, vl] = check_varlen(kVarFwd, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, o);
  if (q.is_cuda()) no_cuda_kernel(kVarFwd);
  return forward(s, &vl, q, k, v, AttnMask{}, o);
}

std::tuple<Tensor, Tensor, Tensor> attention_varlen_bwd(
    const Tensor& grad_out,      // (total_q, Hq, D)
    const Tensor& q,             // (total_q, Hq, D)
    const Tensor& k,             // (total_k, Hkv, D)
    const Tensor& v,             // (total_k, Hkv, D)
    const Tensor& out,           // (total_q, Hq, D)
    const Tensor& lse,           // (Hq, total_q)
    const Tensor& lse_lo,        // (Hq, total_q)
    const Tensor& cu_seqlens_q,  // (B + 1) int32
    const Tensor& cu_seqlens_k,  // (B + 1) int32
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, bool is_causal, double scale, int64_t window_left,
    int64_t window_right, int64_t seed, int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  auto [s, vl] = check_varlen(kVarBwd, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, o);
  check_like_q(kVarBwd, "grad_out", grad_out, q, "(total_q, Hq, D)");
  check_like_q(kVarBwd, "out", out, q, "(total_q, Hq, D)");
  const int64_t lse_shape[2] = {s.Hq, q.size(0)};
  check_lse(kVarBwd, "lse", lse, q, compute_dtype(q), lse_shape, "(Hq, total_q)");
  check_lse(kVarBwd, "lse_lo", lse_lo, q, compute_dtype(q), lse_shape, "(Hq, total_q)");
  if (q.is_cuda()) no_cuda_kernel(kVarBwd);
  return backward(s, &vl, grad_out, q, k, v, out, lse, lse_lo, AttnMask{}, o);
}

// The dropout keep-mask the kernels draw for (B, Hq, Nq) = q's first dims and
// Nk keys: bool (B, Hq, Nq, Nk), True = kept. For tests.
Tensor attention_dropout_mask(const Tensor& q, int64_t Nk, double dropout_p, int64_t seed, int64_t offset) {
  const char* op = "fusedseq.attention_dropout_mask";
  checks::tensor(op, "q", q, 4, "(B, Hq, Nq, D)");
  FUSEDSEQ_CHECK_VALUE(Nk >= 1, op, ": argument 'Nk' must be >= 1, got ", Nk);
  const AttnOptions o{dropout_p, false, 1.0, -1, -1, seed, offset};
  check_options(op, o);
  if (q.is_cuda()) no_cuda_kernel(op);
  auto keep = empty({q.size(0), q.size(1), q.size(2), Nk}, ScalarType::Bool, q);
  AttnDropoutMaskParams<float> p{};
  p.s = make_shape(q.size(0), q.size(1), q.size(1), q.size(2), Nk, q.size(3), o, false);
  p.dropout = make_dropout(o);
  p.keep = static_cast<uint8_t*>(keep.mutable_data_ptr());
  cpu::kernels<float>().attention_dropout_mask(p, torch_parallel_for());
  return keep;
}

}  // namespace

// CPU and CUDA share the checks (CUDA raises until its kernel lands). Sparse
// and mkldnn tensors dispatch to their own keys; registering there too lets
// the layout check name the offending argument instead of the dispatcher's
// generic "could not run" error.
#define FUSEDSEQ_ATTENTION_IMPLS(KEY)                                                         \
  STABLE_TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                                               \
    register_generic(m, #KEY, "attention_fwd", TORCH_BOX(&attention_fwd));                   \
    register_generic(m, #KEY, "attention_bwd", TORCH_BOX(&attention_bwd));                   \
    register_generic(m, #KEY, "attention_varlen_fwd", TORCH_BOX(&attention_varlen_fwd));     \
    register_generic(m, #KEY, "attention_varlen_bwd", TORCH_BOX(&attention_varlen_bwd));     \
    register_generic(m, #KEY, "attention_dropout_mask", TORCH_BOX(&attention_dropout_mask)); \
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
