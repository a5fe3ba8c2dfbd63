// torch-facing side of fused attention: checks, layouts, workspaces, calls
// into the kernels. Dense (B, H, N, D) and packed variable-length
// (total, H, D) tensors share one kernel; this file turns either into the
// params of csrc/common/params.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/attention_plan.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {
namespace {

using checks::like;
using checks::shape;

constexpr const char* kFwd = "fusedseq.attention";
constexpr const char* kBwd = "fusedseq.attention_backward";
constexpr const char* kVarFwd = "fusedseq.attention_varlen";
constexpr const char* kVarBwd = "fusedseq.attention_varlen_backward";

// The kernels take any strides but need unit stride along D.
at::Tensor unit_last_stride(const at::Tensor& t, at::ScalarType dt) {
  at::Tensor r = t.to(dt);
  return r.stride(-1) == 1 ? r : r.contiguous();
}

// (B, H, N, ·) dense, or (N, H, ·) packed varlen (no batch stride).
Strides3 strides3(const at::Tensor& t) {
  if (t.dim() == 3) return {0, t.stride(1), t.stride(0)};
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// Everything but the tensors: validated once, shared by forward and backward.
struct AttnOptions {
  double dropout_p;
  bool is_causal;
  double scale;
  int64_t window_left, window_right;
  int64_t seed, offset;
};

void check_options(const char* op, const AttnOptions& o) {
  TORCH_CHECK_VALUE(std::isfinite(o.scale), op, ": argument 'scale' must be finite, got ", o.scale);
  TORCH_CHECK_VALUE(o.dropout_p >= 0.0 && o.dropout_p < 1.0, op, ": argument 'dropout_p' must be in [0, 1), got ",
                    o.dropout_p);
  TORCH_CHECK_VALUE(o.window_left >= -1 && o.window_right >= -1, op,
                    ": argument 'window' must be (left, right) with each >= 0, or -1 for unbounded, got (",
                    o.window_left, ", ", o.window_right, ")");
}

// Maps a window side that cannot exclude anything to -1 (unbounded), which
// also keeps diag ± window far from int64 overflow.
int64_t useful_window(int64_t w, int64_t Nq, int64_t Nk) { return w >= Nq + Nk ? -1 : w; }

AttnShape make_shape(int64_t B, int64_t Hq, int64_t Hkv, int64_t Nq, int64_t Nk, int64_t D, const AttnOptions& o,
                     bool bottom_right) {
  return AttnShape{B,
                   Hq,
                   Hkv,
                   Nq,
                   Nk,
                   D,
                   o.scale,
                   o.is_causal,
                   useful_window(o.window_left, Nq, Nk),
                   useful_window(o.window_right, Nq, Nk),
                   bottom_right};
}

AttnDropout make_dropout(const AttnOptions& o) {
  AttnDropout d;
  if (o.dropout_p <= 0) return d;
  d.p = o.dropout_p;
  const double t = std::round(o.dropout_p * 4294967296.0);
  d.threshold = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  d.seed = static_cast<uint64_t>(o.seed);
  d.offset = static_cast<uint64_t>(o.offset);
  return d;
}

void check_heads(const char* op, int64_t Hq, int64_t Hkv) {
  TORCH_CHECK_VALUE(Hq % Hkv == 0, op, ": the number of query heads (", Hq,
                    ", dim 1 of 'q') must be a multiple of the number of key/value heads (", Hkv, ", dim 1 of 'k')");
}

// Checks dense q, k, v and returns their shape.
AttnShape check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const AttnOptions& o) {
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
  check_heads(op, Hq, Hkv);
  check_options(op, o);
  return make_shape(B, Hq, Hkv, Nq, Nk, D, o, /*bottom_right=*/false);
}

// ------------------------------------------------------------------ mask --
// attn_mask, bool or additive (float32 or q's dtype, as SDPA takes it), any
// shape that broadcasts to (B, Hq, Nq, Nk). Returns the mask ready for the
// kernel (bool, or additive in the compute dtype: a copy at the mask's own
// size at most) and fills m with its pointer-to-be and broadcast strides.
at::Tensor prepare_mask(const char* op, const std::optional<at::Tensor>& attn_mask, const at::Tensor& q,
                        const AttnShape& s, at::ScalarType dt, AttnMask& m) {
  m = AttnMask{};
  if (!attn_mask.has_value() || !attn_mask->defined()) return {};
  const at::Tensor& a = *attn_mask;
  TORCH_CHECK_TYPE(a.layout() == at::kStrided, op, ": argument 'attn_mask' must be a dense (strided) tensor, got ",
                   a.layout());
  const auto st = a.scalar_type();
  TORCH_CHECK_TYPE(st == at::kBool || st == at::kFloat || st == q.scalar_type(), op,
                   ": argument 'attn_mask' must be bool (True = attend), float32 or the dtype of 'q' (",
                   q.scalar_type(), ") (additive), got ", st);
  TORCH_CHECK_TYPE(a.device() == q.device(), op, ": argument 'attn_mask' must be on the device of 'q' (", q.device(),
                   "), got ", a.device());
  const int64_t target[4] = {s.B, s.Hq, s.Nq, s.Nk};
  bool ok = a.dim() <= 4;
  for (int64_t d = 0; ok && d < a.dim(); ++d) {
    const int64_t size = a.size(a.dim() - 1 - d), want = target[3 - d];
    ok = size == want || size == 1;
  }
  TORCH_CHECK_VALUE(ok, op, ": argument 'attn_mask' must broadcast to (B, Hq, Nq, Nk) = ",
                    checks::sizes_str(at::IntArrayRef(target, 4)), ", e.g. (Nq, Nk) or (B, 1, 1, Nk), got shape ",
                    checks::sizes_str(a.sizes()));
  at::Tensor c = st == at::kBool ? a : a.to(dt);
  while (c.dim() < 4) c = c.unsqueeze(0);
  c = c.expand({s.B, s.Hq, s.Nq, s.Nk});  // a view: stride 0 along every broadcast dim
  m.kind = st == at::kBool ? MaskKind::Bool : MaskKind::Additive;
  m.ptr = c.data_ptr();
  m.b = c.stride(0);
  m.h = c.stride(1);
  m.q = c.stride(2);
  m.k = c.stride(3);
  return c;
}

// ----------------------------------------------------------------- varlen --
// cu_seqlens: 1-D int32 on q's device, [0, ..., total], non-decreasing.
// Returns its host copy and checks max_seqlen against it. The kernel's
// shape uses the true longest sequence (workspaces are sized by it).
struct Varlen {
  at::Tensor cu_q, cu_k;
  int64_t B, max_q, max_k;
};

at::Tensor check_cu_seqlens(const char* op, const char* name, const at::Tensor& cu, const at::Tensor& q,
                            int64_t total, const char* total_name) {
  TORCH_CHECK_TYPE(cu.defined(), op, ": argument '", name, "' must be a tensor, got None");
  TORCH_CHECK_TYPE(cu.scalar_type() == at::kInt, op, ": argument '", name,
                   "' must be int32 (cumulative sequence lengths, as FlashAttention takes them), got ",
                   cu.scalar_type());
  TORCH_CHECK_TYPE(cu.device() == q.device(), op, ": argument '", name, "' must be on the device of 'q' (",
                   q.device(), "), got ", cu.device());
  TORCH_CHECK_VALUE(cu.dim() == 1 && cu.size(0) >= 2, op, ": argument '", name,
                    "' must be 1-D of length B + 1 >= 2, got shape ", checks::sizes_str(cu.sizes()));
  at::Tensor h = cu.to(at::kCPU).contiguous();
  const int32_t* c = h.data_ptr<int32_t>();
  TORCH_CHECK_VALUE(c[0] == 0, op, ": argument '", name, "' must start at 0, got ", c[0]);
  for (int64_t b = 0; b + 1 < h.size(0); ++b)
    TORCH_CHECK_VALUE(c[b + 1] >= c[b], op, ": argument '", name, "' must be non-decreasing, but element ", b + 1,
                      " (", c[b + 1], ") < element ", b, " (", c[b], ")");
  TORCH_CHECK_VALUE(c[h.size(0) - 1] == total, op, ": argument '", name, "' must end at ", total_name, " = ", total,
                    ", got ", c[h.size(0) - 1]);
  return h;
}

int64_t longest(const at::Tensor& cu) {
  const int32_t* c = cu.data_ptr<int32_t>();
  int64_t m = 0;
  for (int64_t b = 0; b + 1 < cu.size(0); ++b) m = std::max<int64_t>(m, c[b + 1] - c[b]);
  return m;
}

std::pair<AttnShape, Varlen> check_varlen(const char* op, const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& cu_seqlens_q,
                                          const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                                          int64_t max_seqlen_k, const AttnOptions& o) {
  checks::tensor(op, "q", q, 3, "(total_q, Hq, D)");
  checks::supported_device(op, q);
  checks::tensor(op, "k", k, 3, "(total_k, Hkv, D)");
  checks::tensor(op, "v", v, 3, "(total_k, Hkv, D)");
  like(op, "k", k, "q", q);
  like(op, "v", v, "q", q);
  const int64_t Hq = q.size(1), D = q.size(2), Hkv = k.size(1), total_k = k.size(0);
  shape(op, "k", k, {total_k, Hkv, D}, "(total_k, Hkv, D) with D of 'q'");
  shape(op, "v", v, {total_k, Hkv, D}, "(total_k, Hkv, D) matching 'k'");
  check_heads(op, Hq, Hkv);
  check_options(op, o);
  Varlen vl;
  vl.cu_q = check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q, q.size(0), "total_q (dim 0 of 'q')");
  vl.cu_k = check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, q, total_k, "total_k (dim 0 of 'k')");
  TORCH_CHECK_VALUE(vl.cu_q.size(0) == vl.cu_k.size(0), op,
                    ": argument 'cu_seqlens_k' must have the length of 'cu_seqlens_q' (B + 1 = ", vl.cu_q.size(0),
                    "), got ", vl.cu_k.size(0));
  vl.B = vl.cu_q.size(0) - 1;
  vl.max_q = longest(vl.cu_q);
  vl.max_k = longest(vl.cu_k);
  TORCH_CHECK_VALUE(max_seqlen_q >= vl.max_q && max_seqlen_q >= 1, op, ": argument 'max_seqlen_q' (", max_seqlen_q,
                    ") must be at least the longest query sequence in 'cu_seqlens_q' (", vl.max_q, ") and >= 1");
  TORCH_CHECK_VALUE(max_seqlen_k >= vl.max_k && max_seqlen_k >= 1, op, ": argument 'max_seqlen_k' (", max_seqlen_k,
                    ") must be at least the longest key sequence in 'cu_seqlens_k' (", vl.max_k, ") and >= 1");
  const AttnShape s = make_shape(vl.B, Hq, Hkv, std::max<int64_t>(vl.max_q, 1), std::max<int64_t>(vl.max_k, 1), D, o,
                                 /*bottom_right=*/true);
  return {s, vl};
}

AttnVarlen varlen_ptrs(const Varlen* vl) {
  if (vl == nullptr) return {};
  return {vl->cu_q.data_ptr<int32_t>(), vl->cu_k.data_ptr<int32_t>()};
}

// ---------------------------------------------------------------- forward --
// out like q; lse, lse_lo (B, Hq, Nq) dense or (Hq, total_q) varlen, in the
// accumulation dtype (float32, float64 for float64 inputs).
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const AttnShape& s, const Varlen* vl, const at::Tensor& q,
                                                       const at::Tensor& k, const at::Tensor& v,
                                                       const AttnMask& mask, const AttnOptions& o) {
  const auto dt = compute_dtype(q);
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const bool is_varlen = vl != nullptr;
  auto out = at::empty(q.sizes(), qc.options());
  auto lse = is_varlen ? at::empty({s.Hq, q.size(0)}, qc.options()) : at::empty({s.B, s.Hq, s.Nq}, qc.options());
  auto lse_lo = at::empty_like(lse);
  const Strides3 lse_st = is_varlen ? Strides3{0, q.size(0), 1} : Strides3{s.Hq * s.Nq, s.Nq, 1};

  const cpu::AttnPlan plan = cpu::attention_plan(s, is_varlen, k.size(0), at::get_num_threads());
  at::Tensor o_accum, ml_accum, k_packed;
  if (plan.num_splits > 1) {
    o_accum = at::empty({plan.num_splits, s.B, s.Hq, s.Nq, s.D}, qc.options());
    ml_accum = at::empty({plan.num_splits, s.B, s.Hq, s.Nq, 2}, qc.options());
  }
  if (plan.pack_k) k_packed = at::empty({plan.packed_elems}, qc.options());

  dispatch_compute(dt, [&]<typename T>() {
    AttnFwdParams<T> p{};
    p.s = s;
    p.mask = mask;
    p.dropout = make_dropout(o);
    p.varlen = varlen_ptrs(vl);
    p.q = qc.data_ptr<T>(), p.q_st = strides3(qc);
    p.k = kc.data_ptr<T>(), p.k_st = strides3(kc);
    p.v = vc.data_ptr<T>(), p.v_st = strides3(vc);
    p.out = out.data_ptr<T>(), p.o_st = strides3(out);
    p.lse = lse.data_ptr<T>(), p.lse_lo = lse_lo.data_ptr<T>(), p.lse_st = lse_st;
    p.num_splits = plan.num_splits;
    p.o_accum = o_accum.defined() ? o_accum.data_ptr<T>() : nullptr;
    p.ml_accum = ml_accum.defined() ? ml_accum.data_ptr<T>() : nullptr;
    p.k_packed = k_packed.defined() ? k_packed.data_ptr<T>() : nullptr;
    cpu::attention_forward<T>(p, torch_parallel_for());
  });
  return {out.to(q.scalar_type()), lse, lse_lo};
}

// --------------------------------------------------------------- backward --
void check_like_q(const char* op, const char* name, const at::Tensor& t, const at::Tensor& q, const char* layout) {
  checks::tensor(op, name, t, q.dim(), layout);
  like(op, name, t, "q", q);
  TORCH_CHECK_VALUE(t.sizes() == q.sizes(), op, ": argument '", name, "' must have the shape of 'q' ",
                    checks::sizes_str(q.sizes()), ", got ", checks::sizes_str(t.sizes()));
}

void check_lse(const char* op, const char* name, const at::Tensor& t, const at::Tensor& q, at::ScalarType dt,
               at::IntArrayRef expected, const char* layout) {
  checks::tensor(op, name, t, static_cast<int64_t>(expected.size()), layout);
  TORCH_CHECK_TYPE(t.scalar_type() == dt, op, ": argument '", name, "' must be ", dt,
                   " (as the forward returns it), got ", t.scalar_type());
  TORCH_CHECK_TYPE(t.device() == q.device(), op, ": argument '", name, "' must be on ", q.device(), ", got ",
                   t.device());
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": argument '", name, "' must have shape ", layout, " = ",
                    checks::sizes_str(expected), ", got ", checks::sizes_str(t.sizes()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const AttnShape& s, const Varlen* vl,
                                                        const at::Tensor& grad_out, const at::Tensor& q,
                                                        const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& out, const at::Tensor& lse,
                                                        const at::Tensor& lse_lo, const AttnMask& mask,
                                                        const AttnOptions& o) {
  const auto dt = compute_dtype(q);
  const bool is_varlen = vl != nullptr;
  const auto qc = unit_last_stride(q, dt), kc = unit_last_stride(k, dt), vc = unit_last_stride(v, dt);
  const auto oc = unit_last_stride(out, dt), gc = unit_last_stride(grad_out, dt);
  const auto lc = lse.contiguous(), llc = lse_lo.contiguous();
  const Strides3 lse_st = is_varlen ? Strides3{0, q.size(0), 1} : Strides3{s.Hq * s.Nq, s.Nq, 1};
  auto dq = at::empty(q.sizes(), qc.options());
  auto dk = at::empty(k.sizes(), qc.options());
  auto dv = at::empty(v.sizes(), qc.options());

  const cpu::AttnPlan plan = cpu::attention_plan(s, is_varlen, k.size(0), at::get_num_threads());
  auto delta = at::empty({s.B, s.Hq, s.Nq}, qc.options());
  at::Tensor dk_accum, dv_accum, k_packed, v_packed;
  if (s.Hq > s.Hkv) {
    const int64_t n = is_varlen ? s.Hq * k.size(0) * s.D : s.B * s.Hq * s.Nk * s.D;
    dk_accum = at::empty({n}, qc.options());
    dv_accum = at::empty({n}, qc.options());
  }
  if (plan.pack_k) {
    k_packed = at::empty({plan.packed_elems}, qc.options());
    v_packed = at::empty({plan.packed_elems}, qc.options());
  }
  auto opt_ptr = []<typename T>(const at::Tensor& t) -> T* { return t.defined() ? t.data_ptr<T>() : nullptr; };

  dispatch_compute(dt, [&]<typename T>() {
    AttnBwdParams<T> p{};
    p.s = s;
    p.mask = mask;
    p.dropout = make_dropout(o);
    p.varlen = varlen_ptrs(vl);
    p.q = qc.data_ptr<T>(), p.q_st = strides3(qc);
    p.k = kc.data_ptr<T>(), p.k_st = strides3(kc);
    p.v = vc.data_ptr<T>(), p.v_st = strides3(vc);
    p.out = oc.data_ptr<T>(), p.o_st = strides3(oc);
    p.grad_out = gc.data_ptr<T>(), p.do_st = strides3(gc);
    p.lse = lc.data_ptr<T>(), p.lse_lo = llc.data_ptr<T>(), p.lse_st = lse_st;
    p.grad_q = dq.data_ptr<T>(), p.dq_st = strides3(dq);
    p.grad_k = dk.data_ptr<T>(), p.dk_st = strides3(dk);
    p.grad_v = dv.data_ptr<T>(), p.dv_st = strides3(dv);
    p.delta = delta.data_ptr<T>();
    p.dq_accum = nullptr;  // the CPU accumulates dQ in grad_q itself (T is the accumulation type)
    p.dk_accum = opt_ptr.template operator()<T>(dk_accum);
    p.dv_accum = opt_ptr.template operator()<T>(dv_accum);
    p.k_packed = opt_ptr.template operator()<T>(k_packed);
    p.v_packed = opt_ptr.template operator()<T>(v_packed);
    cpu::attention_backward<T>(p, torch_parallel_for());
  });
  const auto st = q.scalar_type();
  return {dq.to(st), dk.to(st), dv.to(st)};
}

// ------------------------------------------------------------- the ops --
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_fwd(
    const at::Tensor& q,                           // (B, Hq, Nq, D)
    const at::Tensor& k,                           // (B, Hkv, Nk, D)
    const at::Tensor& v,                           // (B, Hkv, Nk, D)
    const std::optional<at::Tensor>& attn_mask,    // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  const AttnShape s = check_qkv(kFwd, q, k, v, o);
  AttnMask mask;
  const at::Tensor mask_keep = prepare_mask(kFwd, attn_mask, q, s, compute_dtype(q), mask);
  if (q.is_cuda()) no_cuda_kernel(kFwd);
  return forward(s, nullptr, q, k, v, mask, o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_bwd(
    const at::Tensor& grad_out,                    // (B, Hq, Nq, D)
    const at::Tensor& q,                           // (B, Hq, Nq, D)
    const at::Tensor& k,                           // (B, Hkv, Nk, D)
    const at::Tensor& v,                           // (B, Hkv, Nk, D)
    const at::Tensor& out,                         // (B, Hq, Nq, D)
    const at::Tensor& lse,                         // (B, Hq, Nq)
    const at::Tensor& lse_lo,                      // (B, Hq, Nq)
    const std::optional<at::Tensor>& attn_mask,    // broadcastable to (B, Hq, Nq, Nk)
    double dropout_p, bool is_causal, double scale, int64_t window_left, int64_t window_right, int64_t seed,
    int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  const AttnShape s = check_qkv(kBwd, q, k, v, o);
  check_like_q(kBwd, "grad_out", grad_out, q, "(B, Hq, Nq, D)");
  check_like_q(kBwd, "out", out, q, "(B, Hq, Nq, D)");
  const auto dt = compute_dtype(q);
  const int64_t lse_shape[3] = {s.B, s.Hq, s.Nq};
  check_lse(kBwd, "lse", lse, q, dt, lse_shape, "(B, Hq, Nq)");
  check_lse(kBwd, "lse_lo", lse_lo, q, dt, lse_shape, "(B, Hq, Nq)");
  AttnMask mask;
  const at::Tensor mask_keep = prepare_mask(kBwd, attn_mask, q, s, dt, mask);
  if (q.is_cuda()) no_cuda_kernel(kBwd);
  return backward(s, nullptr, grad_out, q, k, v, out, lse, lse_lo, mask, o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_fwd(
    const at::Tensor& q,             // (total_q, Hq, D)
    const at::Tensor& k,             // (total_k, Hkv, D)
    const at::Tensor& v,             // (total_k, Hkv, D)
    const at::Tensor& cu_seqlens_q,  // (B + 1) int32
    const at::Tensor& cu_seqlens_k,  // (B + 1) int32
    int64_t max_seqlen_q, int64_t max_seqlen_k, double dropout_p, bool is_causal, double scale, int64_t window_left,
    int64_t window_right, int64_t seed, int64_t offset) {
  const AttnOptions o{dropout_p, is_causal, scale, window_left, window_right, seed, offset};
  auto [s, vl] = check_varlen(kVarFwd, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, o);
  if (q.is_cuda()) no_cuda_kernel(kVarFwd);
  return forward(s, &vl, q, k, v, AttnMask{}, o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_bwd(
    const at::Tensor& grad_out,      // (total_q, Hq, D)
    const at::Tensor& q,             // (total_q, Hq, D)
    const at::Tensor& k,             // (total_k, Hkv, D)
    const at::Tensor& v,             // (total_k, Hkv, D)
    const at::Tensor& out,           // (total_q, Hq, D)
    const at::Tensor& lse,           // (Hq, total_q)
    const at::Tensor& lse_lo,        // (Hq, total_q)
    const at::Tensor& cu_seqlens_q,  // (B + 1) int32
    const at::Tensor& cu_seqlens_k,  // (B + 1) int32
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
at::Tensor attention_dropout_mask(const at::Tensor& q, int64_t Nk, double dropout_p, int64_t seed, int64_t offset) {
  const char* op = "fusedseq.attention_dropout_mask";
  checks::tensor(op, "q", q, 4, "(B, Hq, Nq, D)");
  TORCH_CHECK_VALUE(Nk >= 1, op, ": argument 'Nk' must be >= 1, got ", Nk);
  const AttnOptions o{dropout_p, false, 1.0, -1, -1, seed, offset};
  check_options(op, o);
  if (q.is_cuda()) no_cuda_kernel(op);
  auto keep = at::empty({q.size(0), q.size(1), q.size(2), Nk}, q.options().dtype(at::kBool));
  AttnDropoutMaskParams<float> p{};
  p.s = make_shape(q.size(0), q.size(1), q.size(1), q.size(2), Nk, q.size(3), o, false);
  p.dropout = make_dropout(o);
  p.keep = reinterpret_cast<uint8_t*>(keep.data_ptr<bool>());
  cpu::attention_dropout_mask<float>(p, torch_parallel_for());
  return keep;
}

}  // namespace

// CPU and CUDA share the checks (CUDA raises until its kernel lands). Sparse
// and mkldnn tensors dispatch to their own keys; registering there too lets
// the layout check name the offending argument instead of the dispatcher's
// generic "could not run" error.
#define FUSEDSEQ_ATTENTION_IMPLS(KEY)                                \
  TORCH_LIBRARY_IMPL(fusedseq, KEY, m) {                             \
    m.impl("attention_fwd", &attention_fwd);                         \
    m.impl("attention_bwd", &attention_bwd);                         \
    m.impl("attention_varlen_fwd", &attention_varlen_fwd);           \
    m.impl("attention_varlen_bwd", &attention_varlen_bwd);           \
    m.impl("attention_dropout_mask", &attention_dropout_mask);       \
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
