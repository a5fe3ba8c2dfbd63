// Checks and parameter building shared by the attention bindings: the CPU
// op (attention_ops.cpp) and the CUDA kernels' binding (attention_cuda.cpp,
// also built into the emulated library), so that every device rejects bad
// input with the same message before any kernel runs.
#pragma once
#include <algorithm>
#include <cmath>
#include <optional>

#include "bindings/checks.h"
#include "bindings/errors.h"
#include "bindings/stable.h"
#include "common/params.h"

namespace fusedseq::attention_checks {

using checks::like;
using checks::shape;
using checks::dtype_str;
using checks::sizes_str;
using torch::headeronly::Layout;
using OptTensor = std::optional<Tensor>;

// The names errors give the dense ops (their Python entry points).
inline constexpr const char* kFwd = "fusedseq.attention";
inline constexpr const char* kBwd = "fusedseq.attention_backward";

// (B, H, N, ·) dense, or (N, H, ·) packed varlen (no batch stride).
inline Strides3 strides3(const Tensor& t) {
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

inline void check_options(const char* op, const AttnOptions& o) {
  FUSEDSEQ_CHECK_VALUE(std::isfinite(o.scale), op, ": argument 'scale' must be finite, got ", o.scale);
  FUSEDSEQ_CHECK_VALUE(o.dropout_p >= 0.0 && o.dropout_p < 1.0, op, ": argument 'dropout_p' must be in [0, 1), got ",
                    o.dropout_p);
  FUSEDSEQ_CHECK_VALUE(o.window_left >= -1 && o.window_right >= -1, op,
                    ": argument 'window' must be (left, right) with each >= 0, or -1 for unbounded, got (",
                    o.window_left, ", ", o.window_right, ")");
}

// Maps a window side that cannot exclude anything to -1 (unbounded), which
// also keeps diag ± window far from int64 overflow.
inline int64_t useful_window(int64_t w, int64_t Nq, int64_t Nk) { return w >= Nq + Nk ? -1 : w; }

inline AttnShape make_shape(int64_t B, int64_t Hq, int64_t Hkv, int64_t Nq, int64_t Nk, int64_t D, const AttnOptions& o,
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

inline AttnDropout make_dropout(const AttnOptions& o) {
  AttnDropout d;
  if (o.dropout_p <= 0) return d;
  d.p = o.dropout_p;
  const double t = std::round(o.dropout_p * 4294967296.0);
  d.threshold = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  d.seed = static_cast<uint64_t>(o.seed);
  d.offset = static_cast<uint64_t>(o.offset);
  return d;
}

inline void check_heads(const char* op, int64_t Hq, int64_t Hkv) {
  FUSEDSEQ_CHECK_VALUE(Hq % Hkv == 0, op, ": the number of query heads (", Hq,
                    ", dim 1 of 'q') must be a multiple of the number of key/value heads (", Hkv, ", dim 1 of 'k')");
}

// q, k, v: floating tensors of `dims` dims on a supported device; k and v like q.
inline void check_kinds(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, int64_t dims,
                 const char* q_layout, const char* kv_layout) {
  checks::tensor(op, "q", q, dims, q_layout);
  checks::supported_device(op, q);
  checks::tensor(op, "k", k, dims, kv_layout);
  checks::tensor(op, "v", v, dims, kv_layout);
  like(op, "k", k, "q", q);
  like(op, "v", v, "q", q);
}

// Checks dense q, k, v and returns their shape.
inline AttnShape check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                    const AttnOptions& o) {
  check_kinds(op, q, k, v, 4, "(B, Hq, Nq, D)", "(B, Hkv, Nk, D)");
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
inline Tensor prepare_mask(const char* op, const OptTensor& attn_mask, const Tensor& q, const AttnShape& s, ScalarType dt,
                    AttnMask& m) {
  m = AttnMask{};
  if (!attn_mask.has_value() || !attn_mask->defined()) return {};
  const Tensor& a = *attn_mask;
  FUSEDSEQ_CHECK_TYPE(a.layout() == Layout::Strided, op, ": argument 'attn_mask' must be a dense (strided) tensor");
  const auto st = a.scalar_type();
  FUSEDSEQ_CHECK_TYPE(st == ScalarType::Bool || st == ScalarType::Float || st == q.scalar_type(), op,
                      ": argument 'attn_mask' must be bool (True = attend), or float32 or the dtype of 'q' (",
                      dtype_str(q.scalar_type()), ") (additive), got ", dtype_str(st));
  FUSEDSEQ_CHECK_TYPE(a.device() == q.device(), op, ": argument 'attn_mask' must be on the device of 'q' (",
                      checks::device_str(q.device()), "), got ", checks::device_str(a.device()));
  const int64_t target[4] = {s.B, s.Hq, s.Nq, s.Nk};
  bool ok = a.dim() <= 4;
  for (int64_t d = 0; ok && d < a.dim(); ++d) {
    const int64_t size = a.size(a.dim() - 1 - d), want = target[3 - d];
    ok = size == want || size == 1;
  }
  FUSEDSEQ_CHECK_VALUE(ok, op, ": argument 'attn_mask' must broadcast to (B, Hq, Nq, Nk) = ",
                       sizes_str(IntList(target, 4)), ", e.g. (Nq, Nk) or (B, 1, 1, Nk), got shape ",
                       sizes_str(a.sizes()));
  Tensor c = st == ScalarType::Bool ? a : to_dtype(a, dt);
  // Broadcast by strides alone: 0 along every dim the mask lacks or has size 1 in.
  int64_t st4[4] = {0, 0, 0, 0};
  for (int64_t d = 0; d < c.dim(); ++d) {
    const int64_t src = c.dim() - 1 - d;
    st4[3 - d] = c.size(src) == 1 ? 0 : c.stride(src);
  }
  m.kind = st == ScalarType::Bool ? MaskKind::Bool : MaskKind::Additive;
  m.ptr = c.const_data_ptr();
  m.b = st4[0];
  m.h = st4[1];
  m.q = st4[2];
  m.k = st4[3];
  return c;
}


inline bool same_sizes(IntList a, IntList b) { return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin()); }

inline void check_like_q(const char* op, const char* name, const Tensor& t, const Tensor& q, const char* layout) {
  checks::tensor(op, name, t, q.dim(), layout);
  like(op, name, t, "q", q);
  FUSEDSEQ_CHECK_VALUE(same_sizes(t.sizes(), q.sizes()), op, ": argument '", name, "' must have the shape of 'q' ",
                       sizes_str(q.sizes()), ", got ", sizes_str(t.sizes()));
}

inline void check_lse(const char* op, const char* name, const Tensor& t, const Tensor& q, ScalarType dt,
               IntList expected, const char* layout) {
  checks::tensor(op, name, t, static_cast<int64_t>(expected.size()), layout);
  FUSEDSEQ_CHECK_TYPE(t.scalar_type() == dt, op, ": argument '", name, "' must be ", dtype_str(dt),
                      " (as the forward returns it), got ", dtype_str(t.scalar_type()));
  FUSEDSEQ_CHECK_TYPE(t.device() == q.device(), op, ": argument '", name, "' must be on ",
                      checks::device_str(q.device()), ", got ", checks::device_str(t.device()));
  FUSEDSEQ_CHECK_VALUE(same_sizes(t.sizes(), expected), op, ": argument '", name, "' must have shape ", layout, " = ",
                       sizes_str(expected), ", got ", sizes_str(t.sizes()));
}


// The dense backward's checks (attention_bwd on every device): q, k, v, the
// forward's out and LSE pair, grad_out and the mask. Returns the shape; fills
// `mask`, whose tensor `mask_keep` must outlive the kernel.
inline AttnShape check_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse, const Tensor& lse_lo,
                                const OptTensor& attn_mask, const AttnOptions& o, AttnMask& mask,
                                Tensor& mask_keep) {
  const AttnShape s = check_qkv(kBwd, q, k, v, o);
  check_like_q(kBwd, "grad_out", grad_out, q, "(B, Hq, Nq, D)");
  check_like_q(kBwd, "out", out, q, "(B, Hq, Nq, D)");
  const auto dt = compute_dtype(q);
  const int64_t lse_shape[3] = {s.B, s.Hq, s.Nq};
  check_lse(kBwd, "lse", lse, q, dt, lse_shape, "(B, Hq, Nq)");
  check_lse(kBwd, "lse_lo", lse_lo, q, dt, lse_shape, "(B, Hq, Nq)");
  mask_keep = prepare_mask(kBwd, attn_mask, q, s, dt, mask);
  return s;
}

}  // namespace fusedseq::attention_checks
