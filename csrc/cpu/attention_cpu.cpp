// Fused attention on the CPU: O = softmax(Q Kᵀ · scale + mask) V, tile by tile.
//
// Forward. One task = (sequence, key/value head, tile of query rows, key
// split); tasks run in parallel. A task copies its query rows into a
// contiguous tile (when Nq is short, the rows of every query head of a GQA
// group, so K and V are read once per group: the decoding case), then walks
// the keys it may see BN at a time:
//     x = Q Kᵀ_tile · scale (+ mask)        gemm against K (packed in 16-key panels, or as stored)
//     m' = max(m, rowmax x); P = e^(x − m'); l = l·e^(m−m') + rowsum P
//     O = O·e^(m−m') + (P ∘ Z) V_tile       Z: dropout keep-mask, regenerated from Philox
// x − m' is taken before the conversion to base 2 (e^y = 2^(y·log2 e)):
// both are the same rounded logits, so the difference is exact and the
// softmax keeps every bit SDPA's does, however large the logits.
//
// Long rows. The running sums l and O are fp32 for fp32 inputs; added over
// millions of keys they would stall (l + 64 == l once l reaches 2^30) and
// drift. So a task accumulates at most kChunk keys in fp32, then merges that
// chunk into a float64 total by its log-sum-exp: a blocked summation whose
// error no longer grows with the row. Every count and index is 64-bit.
//
// Split-KV (flash-decoding). When the query tiles alone cannot occupy every
// thread (one token against a long cache), the plan splits each row's keys
// into num_splits ranges; each task writes its range's (O/l, m, l) to the
// caller's workspace and a second pass merges them by log-sum-exp.
//
// The LSE is stored as lse + lse_lo (params.h explains why), computed in
// float64 from the merged (m, l).
//
// Backward, from the LSE (the recomputation scheme of FlashAttention-2):
//     P  = e^((x − lse) − lse_lo)       recomputed per tile, bit-identical x
//     dV += (P∘Z)ᵀ dO                  dP = (dO Vᵀ) ∘ Z
//     dS = P ∘ (dP − δ),  δ = rowsum(dO ∘ O)
//     dQ += dS K · scale              dK += dSᵀ Q · scale
// One task = (sequence, query head); it owns dQ for its rows and
// accumulates dK, dV for one key tile at a time. With grouped-query
// attention several query heads feed one key head: each writes a private
// partial (the caller's workspace), summed at the end in a fixed order, so
// no two threads ever write the same element (deterministic, no atomics).
//
// Masks, windows and causality only ever shrink the work: key tiles that no
// row of a query tile may see, or that the mask hides entirely, are skipped
// before any product is computed.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "common/philox.h"
#include "cpu/attention_plan.h"
#include "cpu/grain.h"
#include "cpu/kernels_cpu.h"
#include "cpu/microkernels.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
namespace {

constexpr int64_t BM = kAttnBM;
constexpr int64_t BN = kAttnBN;
constexpr int64_t kChunk = 16 * BN;  // keys summed in the accumulation type before a float64 merge
constexpr double kLog2e = 1.4426950408889634;

template <typename T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

// A task loop's scratch (a thread's tiles): uninitialised, written before
// read. Defined here rather than taken from std::vector so that every
// function this file compiles lives in this ISA's namespace (std::vector's
// zero-filling constructor got an AVX clone the baseline build could share).
template <typename T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(int64_t n) : p_(new T[static_cast<size_t>(n)]), n_(n) {}
  void reserve(int64_t n) {
    if (n > n_) *this = Scratch(n);
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  T& operator[](int64_t i) { return p_[i]; }
  const T& operator[](int64_t i) const { return p_[i]; }
  T* begin() { return p_.get(); }
  T* end() { return p_.get() + n_; }

 private:
  std::unique_ptr<T[]> p_;
  int64_t n_ = 0;
};

// ------------------------------------------------------------- sequences --
// Lengths of sequence b and the token its rows start at, in the tensors
// (0 for dense tensors: their batch stride does the work) and in the batch
// as a whole (for the dropout stream, which must not depend on the layout).
struct Seq {
  int64_t nq, nk;
  int64_t q_tok, k_tok;  // first token in the tensors
  int64_t drop_tok;      // first query token of the batch
};

inline Seq sequence(const AttnShape& s, const AttnVarlen& vl, int64_t b) {
  if (vl.cu_seqlens_q == nullptr) return {s.Nq, s.Nk, 0, 0, b * s.Nq};
  const int64_t q0 = vl.cu_seqlens_q[b], k0 = vl.cu_seqlens_k[b];
  return {vl.cu_seqlens_q[b + 1] - q0, vl.cu_seqlens_k[b + 1] - k0, q0, k0, q0};
}

inline int64_t offset(const Strides3& st, int64_t b, int64_t h, int64_t tok) { return b * st.b + h * st.h + tok * st.n; }

// Keys [lo, hi) that query i of sequence q may see before the mask.
struct KeyRange {
  int64_t lo, hi;
};

inline KeyRange visible_keys(const AttnShape& s, const Seq& q, int64_t i) {
  const int64_t diag = i + (s.bottom_right ? q.nk - q.nq : 0);
  int64_t lo = 0, hi = q.nk;
  if (s.causal) hi = std::min(hi, diag + 1);
  if (s.window_right >= 0) hi = std::min(hi, diag + s.window_right + 1);
  if (s.window_left >= 0) lo = std::max(lo, diag - s.window_left);
  return {lo, std::max(lo, hi)};
}

// ----------------------------------------------------------------- masks --
// Query row (b, h, i) of the mask, at key 0; nullptr without a mask.
template <typename T>
inline const void* mask_row(const AttnMask& m, int64_t b, int64_t h, int64_t i) {
  const int64_t e = b * m.b + h * m.h + i * m.q;
  switch (m.kind) {
    case MaskKind::Bool: return static_cast<const uint8_t*>(m.ptr) + e;
    case MaskKind::Additive: return static_cast<const T*>(m.ptr) + e;
    default: return nullptr;
  }
}

// Does the mask let row keys [j0 + a, j0 + e) see anything?
template <typename T>
inline bool mask_allows_any(const AttnMask& m, const void* row, int64_t j0, int64_t a, int64_t e) {
  if (m.kind == MaskKind::Bool) {
    const uint8_t* r = static_cast<const uint8_t*>(row);
    for (int64_t j = j0 + a; j < j0 + e; ++j)
      if (r[j * m.k]) return true;
    return false;
  }
  const T* r = static_cast<const T*>(row);
  for (int64_t j = j0 + a; j < j0 + e; ++j)
    if (!(r[j * m.k] == kNegInf<T>)) return true;  // NaN counts as visible: it must propagate
  return false;
}

// x[a, e) += mask (additive) or x = -inf where masked (bool), keys j0 + j.
template <typename T>
inline void apply_mask(const AttnMask& m, const void* row, int64_t j0, T* x, int64_t a, int64_t e) {
  if (m.kind == MaskKind::Bool) {
    const uint8_t* r = static_cast<const uint8_t*>(row) + j0 * m.k;
    if (m.k == 1) {
      for (int64_t j = a; j < e; ++j) x[j] = r[j] ? x[j] : kNegInf<T>;
    } else {
      for (int64_t j = a; j < e; ++j) x[j] = r[j * m.k] ? x[j] : kNegInf<T>;
    }
  } else if (m.kind == MaskKind::Additive) {
    const T* r = static_cast<const T*>(row) + j0 * m.k;
    if (m.k == 1) {
      for (int64_t j = a; j < e; ++j) x[j] += r[j];
    } else {
      for (int64_t j = a; j < e; ++j) x[j] += r[j * m.k];
    }
  }
}

// --------------------------------------------------------------- dropout --
inline bool dropout_on(const AttnDropout& d) { return d.p > 0; }

// keep[j] = 1 if element (row, j_begin + j) survives, j in [0, n).
inline void dropout_keep(const AttnDropout& d, uint64_t row, int64_t j_begin, int64_t n, uint8_t* keep) {
  const int64_t j_end = j_begin + n;
  for (int64_t g = j_begin / 4; 4 * g < j_end; ++g) {
    const Philox4 w = dropout_words(d.seed, d.offset, row, static_cast<uint64_t>(g));
    for (int t = 0; t < 4; ++t) {
      const int64_t j = 4 * g + t;
      if (j >= j_begin && j < j_end) keep[j - j_begin] = w.w[t] >= d.threshold;
    }
  }
}

// x[j] = keep[j] ? x[j] · s : 0
template <typename T>
inline void apply_dropout(T* x, const uint8_t* keep, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j) x[j] = keep[j] ? x[j] * s : T(0);
}

// ------------------------------------------------------------ row helpers --
// max that propagates NaN (std::max(a, NaN) is a; a NaN logit must not be
// mistaken for a masked one, or a NaN query row would come out as zeros).
template <typename T>
inline T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// x[0:n) = x·c, then masked in the same pass: bool rows (unit key stride)
// set -inf where the mask is 0, additive rows add it, MaskKind::None leaves
// it at x·c. Returns the max (NaN if any is NaN). One pass instead of
// scale, mask and max apart.
template <typename T>
inline T scale_mask_max(T* x, int64_t n, T c, MaskKind kind, const void* row) {
  T mx = kNegInf<T>;
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 cv = _mm256_set1_ps(c), ninf = _mm256_set1_ps(kNegInf<float>);
    __m256 mv = ninf, nan = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), cv);
      if (kind == MaskKind::Bool) {
        int64_t bytes;
        std::memcpy(&bytes, static_cast<const uint8_t*>(row) + j, 8);
        const __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
        v = _mm256_blendv_ps(v, ninf, _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, _mm256_setzero_si256())));
      } else if (kind == MaskKind::Additive) {
        v = _mm256_add_ps(v, _mm256_loadu_ps(static_cast<const float*>(row) + j));
      }
      _mm256_storeu_ps(x + j, v);
      mv = _mm256_max_ps(mv, v);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    mx = _mm256_movemask_ps(nan) ? std::numeric_limits<T>::quiet_NaN() : hmax(mv);
  }
#endif
  for (; j < n; ++j) {
    T v = x[j] * c;
    if (kind == MaskKind::Bool)
      v = static_cast<const uint8_t*>(row)[j] ? v : kNegInf<T>;
    else if (kind == MaskKind::Additive)
      v += static_cast<const T*>(row)[j];
    x[j] = v;
    mx = nan_max(mx, v);
  }
  return mx;
}

// x[0:n) *= c; returns max over x[0:n), NaN if any is NaN.
template <typename T>
inline T scale_and_max(T* x, int64_t n, T c) {
  return scale_mask_max<T>(x, n, c, MaskKind::None, nullptr);
}

template <typename T>
inline T row_max(const T* x, int64_t n) {
  T mx = kNegInf<T>;
  for (int64_t j = 0; j < n; ++j) mx = nan_max(mx, x[j]);
  return mx;
}

// Scores of keys [j0 + a, j0 + e) of one row turned into logits in place:
// x = S · scale, then the mask. Returns their max. The forward and the
// backward both call this, so that the backward recomputes the forward's
// logits bit for bit (its P is taken against the forward's LSE).
// Are the n bytes at r all 1 (a bool mask that hides nothing here)?
inline bool all_true(const uint8_t* r, int64_t n) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    uint64_t w;
    std::memcpy(&w, r + j, 8);
    if (w != kOnes) return false;
  }
  for (; j < n; ++j)
    if (r[j] != 1) return false;
  return true;
}

template <typename T>
inline T logits_row(T* x, int64_t a, int64_t e, T scale, const AttnMask& m, const void* mrow, int64_t j0) {
  if (mrow == nullptr) return scale_and_max(x + a, e - a, scale);
  // Where a bool mask hides nothing (most tiles of a padding mask) it costs one check.
  if (m.kind == MaskKind::Bool && m.k == 1 && all_true(static_cast<const uint8_t*>(mrow) + j0 + a, e - a))
    return scale_and_max(x + a, e - a, scale);
  if (m.k == 1) {  // the usual layout: the mask row contiguous along the keys
    const int64_t esz = m.kind == MaskKind::Bool ? 1 : static_cast<int64_t>(sizeof(T));
    return scale_mask_max<T>(x + a, e - a, scale, m.kind, static_cast<const char*>(mrow) + (j0 + a) * esz);
  }
  scale_and_max(x + a, e - a, scale);
  apply_mask<T>(m, mrow, j0, x, a, e);
  return row_max(x + a, e - a);
}

// x[0:n) = e^((x − m1) − m2), computed as 2^(((x − m1) − m2)·log2 e); returns
// the sum. The subtractions come first: x and m1 are rounded logits of the
// same size, so x − m1 is exact even where x itself is huge. NaN stays NaN.
template <typename T>
inline T exp_shifted_sum(T* x, int64_t n, T m1, T m2) {
  const T c = static_cast<T>(kLog2e);
  T sum = 0;
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 cv = _mm256_set1_ps(c), m1v = _mm256_set1_ps(m1), m2v = _mm256_set1_ps(m2);
    __m256 sv = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
      const __m256 y = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), m1v), m2v);
      const __m256 p = exp2_ps(_mm256_mul_ps(y, cv));
      _mm256_storeu_ps(x + j, p);
      sv = _mm256_add_ps(sv, p);
    }
    if (j < n) {
      const __m256i mk = tail_mask(n - j);
      const __m256 y = _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(x + j, mk), m1v), m2v);
      const __m256 p = _mm256_and_ps(exp2_ps(_mm256_mul_ps(y, cv)), _mm256_castsi256_ps(mk));
      _mm256_maskstore_ps(x + j, mk, p);
      sv = _mm256_add_ps(sv, p);
      j = n;
    }
    sum = hsum(sv);
  }
#endif
  for (; j < n; ++j) {
    x[j] = std::exp2(((x[j] - m1) - m2) * c);
    sum += x[j];
  }
  return sum;
}

template <typename T>
inline void scale_row(T* x, int64_t n, T a) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 av = _mm256_set1_ps(a);
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), av));
  }
#endif
  for (; j < n; ++j) x[j] *= a;
}

// ds[0:n) = p ∘ (ds − delta)
template <typename T>
inline void softmax_grad_row(const T* p, T* ds, int64_t n, T delta) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 dv = _mm256_set1_ps(delta);
    for (; j + 8 <= n; j += 8)
      _mm256_storeu_ps(ds + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(ds + j), dv)));
  }
#endif
  for (; j < n; ++j) ds[j] = p[j] * (ds[j] - delta);
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    __m256 sv = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) sv = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), sv);
    s = hsum(sv);
  }
#endif
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// ------------------------------------------------------------ products --
// Where a sequence's K (or V) lies packed in 16-key panels.
inline int64_t packed_offset(const AttnShape& s, const AttnVarlen& vl, const Seq& q, int64_t b, int64_t hk) {
  if (vl.cu_seqlens_k == nullptr) return (b * s.Hkv + hk) * attn_div_up(s.Nk, 16) * 16 * s.D;
  const int64_t total_k = vl.cu_seqlens_k[s.B];
  return (hk * (total_k + 15 * s.B) + q.k_tok + 15 * b) * s.D;
}

// Every (sequence, key/value head) of src packed transposed into panels.
template <typename T>
void pack_keys(const AttnShape& s, const AttnVarlen& vl, const T* src, Strides3 st, T* dst, const ParallelFor& pf) {
  pf(0, s.B * s.Hkv, /*grain*/ grain_for(s.Nk * s.D), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / s.Hkv, hk = t % s.Hkv;
      const Seq q = sequence(s, vl, b);
      if (q.nk == 0) continue;
      pack_panels<T>(s.D, q.nk, src + offset(st, b, hk, q.k_tok), 1, st.n, dst + packed_offset(s, vl, q, b, hk));
    }
  });
}

// S(mq × kn) = A · Bᵀ for A's rows (lda) and keys [j0, j0 + kn): from the
// panels when packed (j0 a multiple of 16), else from B's rows as stored.
// The forward and the backward call this with the same plan, so every
// score is computed in the same order in both passes (bit-identical).
template <typename T>
inline void scores(int64_t mq, int64_t kn, int64_t D, const T* A, int64_t lda, const T* packed, const T* rows,
                   int64_t ldr, int64_t j0, T* S) {
  if (packed) {
    gemm_nn_packed<T>(mq, kn, D, A, lda, 1, packed + j0 * D, S, BN, false);
  } else if (D < 8) {
    // Head dims shorter than a vector: plain dot products beat a vector tile
    // that would be all tail.
    const T* b = rows + j0 * ldr;
    for (int64_t r = 0; r < mq; ++r)
      for (int64_t j = 0; j < kn; ++j) {
        T acc = 0;
        for (int64_t d = 0; d < D; ++d) acc += A[r * lda + d] * b[j * ldr + d];
        S[r * BN + j] = acc;
      }
  } else {
    const NtSegment<T> seg{A, lda, rows + j0 * ldr, ldr, D};
    gemm_nt<T>(mq, kn, &seg, 1, S, BN);
  }
}

// ---------------------------------------------------------- forward task --
// Per-row state of a forward task. (m, l, O) accumulate the current chunk
// of keys in T; (M, L, Ot) the merged total in float64.
template <typename T>
struct FwdRows {
  int64_t mq = 0;
  Scratch<int64_t> h, i;  // query head and position of each row
  Scratch<KeyRange> keys;
  Scratch<const void*> mask;
  Scratch<T> Q, S, O, m, l;
  Scratch<double> Ot, M, L;
  Scratch<uint8_t> keep;

  explicit FwdRows(int64_t D)
      : h(BM), i(BM), keys(BM), mask(BM), Q(BM * D), S(BM * BN), O(BM * D), m(BM), l(BM), Ot(BM * D), M(BM),
        L(BM), keep(BN) {}

  void reset(int64_t D) {
    std::fill(m.begin(), m.end(), kNegInf<T>);
    std::fill(l.begin(), l.end(), T(0));
    std::fill(O.begin(), O.begin() + mq * D, T(0));
    std::fill(M.begin(), M.end(), -std::numeric_limits<double>::infinity());
    std::fill(L.begin(), L.end(), 0.0);
    std::fill(Ot.begin(), Ot.begin() + mq * D, 0.0);
  }

  // (M, L, Ot) ⊕= (m, l, O), then the chunk restarts.
  void merge_chunk(int64_t D) {
    for (int64_t r = 0; r < mq; ++r) {
      if (l[r] == T(0)) continue;  // nothing seen in this chunk (NaN sums do merge, and propagate)
      const double mc = m[r], Mn = std::max(M[r], mc);
      const double a = std::exp(M[r] - Mn), c = std::exp(mc - Mn);  // a = 0 on the first chunk
      L[r] = L[r] * a + double(l[r]) * c;
      double* ot = Ot.data() + r * D;
      T* o = O.data() + r * D;
      for (int64_t d = 0; d < D; ++d) {
        ot[d] = ot[d] * a + double(o[d]) * c;
        o[d] = T(0);
      }
      M[r] = Mn;
      m[r] = kNegInf<T>;
      l[r] = T(0);
    }
  }
};

template <typename T>
void forward_task(const AttnFwdParams<T>& p, const AttnQueryTiling& tiling, int64_t task, FwdRows<T>& w) {
  using Acc = AttnAcc<T>;
  const AttnShape& s = p.s;
  const int64_t D = s.D, group = s.Hq / s.Hkv;
  const int64_t split = task % p.num_splits;
  const int64_t tile = (task / p.num_splits) % tiling.tiles;
  const int64_t hk = (task / (p.num_splits * tiling.tiles)) % s.Hkv;
  const int64_t b = task / (p.num_splits * tiling.tiles * s.Hkv);
  const Seq sq = sequence(s, p.varlen, b);

  // The tile's rows: (query head, position) pairs.
  int64_t mq = 0;
  if (tiling.heads_per_tile == 1) {
    const int64_t g = tile / tiling.row_tiles, i0 = (tile % tiling.row_tiles) * BM;
    for (int64_t i = i0; i < std::min(i0 + BM, sq.nq); ++i, ++mq) {
      w.h[mq] = hk * group + g;
      w.i[mq] = i;
    }
  } else {
    const int64_t g0 = tile * tiling.heads_per_tile, g1 = std::min(group, g0 + tiling.heads_per_tile);
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t i = 0; i < sq.nq; ++i, ++mq) {
        w.h[mq] = hk * group + g;
        w.i[mq] = i;
      }
  }
  if (mq == 0) return;
  w.mq = mq;

  // This split's keys: whole panels of BN, so packed panels stay aligned.
  const int64_t key_tiles = attn_div_up(sq.nk, BN);
  const int64_t per_split = attn_div_up(key_tiles, p.num_splits);
  const int64_t k_begin = std::min(sq.nk, split * per_split * BN);
  const int64_t k_end = std::min(sq.nk, (split + 1) * per_split * BN);

  int64_t lo = k_end, hi = k_begin;  // union of the rows' visible keys within the split
  for (int64_t r = 0; r < mq; ++r) {
    KeyRange kr = visible_keys(s, sq, w.i[r]);
    kr.lo = std::max(kr.lo, k_begin);
    kr.hi = std::max(kr.lo, std::min(kr.hi, k_end));
    w.keys[r] = kr;
    if (kr.lo < kr.hi) {
      lo = std::min(lo, kr.lo);
      hi = std::max(hi, kr.hi);
    }
    w.mask[r] = mask_row<T>(p.mask, b, w.h[r], w.i[r]);
    const T* src = p.q + offset(p.q_st, b, w.h[r], sq.q_tok + w.i[r]);
    std::copy(src, src + D, w.Q.data() + r * D);
  }
  w.reset(D);

  const T* kpacked = p.k_packed ? p.k_packed + packed_offset(s, p.varlen, sq, b, hk) : nullptr;
  const T* krows = p.k + offset(p.k_st, b, hk, sq.k_tok);
  const T* vrows = p.v + offset(p.v_st, b, hk, sq.k_tok);
  const T scale = static_cast<T>(s.scale);
  const bool drop = dropout_on(p.dropout);

  int64_t chunk_start = lo / BN * BN;
  for (int64_t j0 = chunk_start; j0 < hi; j0 += BN) {
    const int64_t kn = std::min(BN, sq.nk - j0);
    // Rows' visible keys within this tile, [a, e) relative to j0; their union [ka, kb).
    int64_t ka = kn, kb = 0;
    bool any = false;
    for (int64_t r = 0; r < mq; ++r) {
      const int64_t a = std::clamp<int64_t>(w.keys[r].lo - j0, 0, kn), e = std::clamp<int64_t>(w.keys[r].hi - j0, 0, kn);
      if (a >= e) continue;
      if (w.mask[r] && !mask_allows_any<T>(p.mask, w.mask[r], j0, a, e)) continue;
      any = true;
      ka = std::min(ka, a);
      kb = std::max(kb, e);
    }
    if (!any) continue;  // the whole tile is masked, out of window, or in the causal future

    T* S = w.S.data();
    scores<T>(mq, kn, D, w.Q.data(), D, kpacked, krows, p.k_st.n, j0, S);
    for (int64_t r = 0; r < mq; ++r) {
      T* x = S + r * BN;
      const int64_t a = std::clamp<int64_t>(w.keys[r].lo - j0, ka, kb), e = std::clamp<int64_t>(w.keys[r].hi - j0, a, kb);
      std::fill(x + ka, x + a, T(0));
      std::fill(x + e, x + kb, T(0));
      if (a >= e) continue;
      const T mt = logits_row<T>(x, a, e, scale, p.mask, w.mask[r], j0);
      if (mt == kNegInf<T>) {  // every key of this tile masked for this row
        std::fill(x + a, x + e, T(0));
        continue;
      }
      const T m_new = nan_max(w.m[r], mt);
      const T alpha = std::exp2((w.m[r] - m_new) * static_cast<T>(kLog2e));  // 0 on the first tile of a chunk
      w.l[r] = w.l[r] * alpha + exp_shifted_sum<T>(x + a, e - a, m_new, T(0));
      w.m[r] = m_new;
      if (alpha != T(1)) scale_row(w.O.data() + r * D, D, alpha);
      if (drop) {
        dropout_keep(p.dropout, static_cast<uint64_t>((sq.drop_tok + w.i[r]) * s.Hq + w.h[r]), j0 + a, e - a,
                     w.keep.data());
        apply_dropout(x + a, w.keep.data(), e - a, T(1));  // 1/(1 − p) is applied once, at the end
      }
    }
    gemm_nn<T>(mq, D, kb - ka, S + ka, BN, 1, vrows + (j0 + ka) * p.v_st.n, p.v_st.n, w.O.data(), D, true);
    if (j0 + BN - chunk_start >= kChunk) {
      w.merge_chunk(D);
      chunk_start = j0 + BN;
    }
  }
  w.merge_chunk(D);

  const double keep_scale = drop ? 1.0 / (1.0 - p.dropout.p) : 1.0;
  for (int64_t r = 0; r < mq; ++r) {
    const int64_t h = w.h[r], tok = sq.q_tok + w.i[r];
    const double* ot = w.Ot.data() + r * D;
    if (p.num_splits > 1) {  // this split's share, merged by merge_splits
      const int64_t row = (b * s.Hq + h) * s.Nq + w.i[r];
      const int64_t slot = split * s.B * s.Hq * s.Nq + row;
      Acc* o = p.o_accum + slot * D;
      const double inv = w.L[r] > 0 ? 1.0 / w.L[r] : 0.0;
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<Acc>(ot[d] * inv);
      p.ml_accum[2 * slot] = static_cast<Acc>(w.M[r]);
      p.ml_accum[2 * slot + 1] = static_cast<Acc>(w.L[r]);
      continue;
    }
    T* out = p.out + offset(p.o_st, b, h, tok);
    const int64_t li = offset(p.lse_st, b, h, tok);
    if (w.L[r] == 0.0) {  // no key visible: zeros, never NaN
      std::fill(out, out + D, T(0));
      p.lse[li] = kNegInf<Acc>;
      p.lse_lo[li] = Acc(0);
      continue;
    }
    const double inv = keep_scale / w.L[r];
    for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(ot[d] * inv);
    const double lse = w.M[r] + std::log(w.L[r]);
    p.lse[li] = static_cast<Acc>(lse);
    p.lse_lo[li] = static_cast<Acc>(lse - static_cast<double>(p.lse[li]));
  }
}

// Merges the num_splits partial results of every row by log-sum-exp.
template <typename T>
void merge_splits(const AttnFwdParams<T>& p, const ParallelFor& pf) {
  using Acc = AttnAcc<T>;
  const AttnShape& s = p.s;
  const int64_t D = s.D, rows = s.B * s.Hq * s.Nq;
  const double keep_scale = dropout_on(p.dropout) ? 1.0 / (1.0 - p.dropout.p) : 1.0;
  pf(0, rows, /*grain*/ grain_for(p.num_splits * D), [&](int64_t r0, int64_t r1) {
    Scratch<double> o(D);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / (s.Hq * s.Nq), h = (row / s.Nq) % s.Hq, i = row % s.Nq;
      const Seq sq = sequence(s, p.varlen, b);
      if (i >= sq.nq) continue;
      double M = -std::numeric_limits<double>::infinity();
      bool nan = false;
      for (int64_t sp = 0; sp < p.num_splits; ++sp) {
        const int64_t slot = sp * rows + row;
        const double m = p.ml_accum[2 * slot], l = p.ml_accum[2 * slot + 1];
        if (std::isnan(l) || std::isnan(m)) nan = true;
        if (l > 0) M = std::max(M, m);
      }
      double L = nan ? std::numeric_limits<double>::quiet_NaN() : 0.0;
      std::fill(o.begin(), o.end(), nan ? L : 0.0);
      for (int64_t sp = 0; sp < p.num_splits && !nan; ++sp) {
        const int64_t slot = sp * rows + row;
        const double l = p.ml_accum[2 * slot + 1];
        if (!(l > 0)) continue;
        const double wgt = l * std::exp(double(p.ml_accum[2 * slot]) - M);
        L += wgt;
        const Acc* oa = p.o_accum + slot * D;
        for (int64_t d = 0; d < D; ++d) o[d] += wgt * oa[d];
      }
      const int64_t tok = sq.q_tok + i;
      T* out = p.out + offset(p.o_st, b, h, tok);
      const int64_t li = offset(p.lse_st, b, h, tok);
      if (L == 0.0) {
        std::fill(out, out + D, T(0));
        p.lse[li] = kNegInf<Acc>;
        p.lse_lo[li] = Acc(0);
        continue;
      }
      const double inv = keep_scale / L;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(o[d] * inv);
      const double lse = M + std::log(L);
      p.lse[li] = static_cast<Acc>(lse);
      p.lse_lo[li] = static_cast<Acc>(lse - static_cast<double>(p.lse[li]));
    }
  });
}

}  // namespace

template <typename T>
void attention_forward(const AttnFwdParams<T>& p, const ParallelFor& pf) {
  const AttnShape& s = p.s;
  if (p.k_packed) pack_keys(s, p.varlen, p.k, p.k_st, p.k_packed, pf);
  const AttnQueryTiling tiling = attention_query_tiling(s);
  // grain: a task's two products, its rows × the keys of its split (half of them on average when causal).
  const int64_t task_rows = tiling.heads_per_tile * std::min(s.Nq, kAttnBM);
  const int64_t task_keys = attn_div_up(s.Nk, p.num_splits) / (s.causal ? 2 : 1);
  pf(0, s.B * s.Hkv * tiling.tiles * p.num_splits, /*grain*/ grain_for(2 * task_rows * task_keys * s.D),
     [&](int64_t t0, int64_t t1) {
    FwdRows<T> w(s.D);
    for (int64_t t = t0; t < t1; ++t) forward_task(p, tiling, t, w);
  });
  if (p.num_splits > 1) merge_splits(p, pf);
}

// ------------------------------------------------------------- backward --
template <typename T>
void attention_backward(const AttnBwdParams<T>& p, const ParallelFor& pf) {
  using Acc = AttnAcc<T>;
  static_assert(std::is_same_v<Acc, T>, "the CPU kernels compute in float or double");
  const AttnShape& s = p.s;
  const int64_t D = s.D, group = s.Hq / s.Hkv;
  const bool varlen = p.varlen.cu_seqlens_q != nullptr;
  if (p.k_packed) {
    pack_keys(s, p.varlen, p.k, p.k_st, p.k_packed, pf);
    pack_keys(s, p.varlen, p.v, p.v_st, p.v_packed, pf);
  }
  // Where each query head's dK/dV goes: the outputs, or (GQA) a private
  // partial, contiguous (B, Hq, Nk, D) dense or (Hq, total_k, D) varlen.
  const int64_t total_k = varlen ? p.varlen.cu_seqlens_k[s.B] : 0;
  const Strides3 acc_st = varlen ? Strides3{0, total_k * D, D} : Strides3{s.Hq * s.Nk * D, s.Nk * D, D};
  const T scale = static_cast<T>(s.scale);
  const bool drop = dropout_on(p.dropout);
  const T keep_scale = drop ? static_cast<T>(1.0 / (1.0 - p.dropout.p)) : T(1);

  // grain: a task's five products over Nq × Nk × D (half of it when causal).
  pf(0, s.B * s.Hq, /*grain*/ grain_for(5 * s.Nq * s.Nk * D / (s.causal ? 2 : 1)), [&](int64_t t0, int64_t t1) {
    Scratch<T> P(BM * BN), dS(BM * BN), dK(BN * D), dV(BN * D), Qz(BM * D);
    Scratch<uint8_t> keep(BN);
    Scratch<KeyRange> keys;
    Scratch<const void*> mrows;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / s.Hq, h = t % s.Hq, hk = h / group;
      const Seq sq = sequence(s, p.varlen, b);
      const T* q = p.q + offset(p.q_st, b, h, sq.q_tok);
      const T* o = p.out + offset(p.o_st, b, h, sq.q_tok);
      const T* dO = p.grad_out + offset(p.do_st, b, h, sq.q_tok);
      const T* k = p.k + offset(p.k_st, b, hk, sq.k_tok);
      const T* v = p.v + offset(p.v_st, b, hk, sq.k_tok);
      const T* ktp = p.k_packed ? p.k_packed + packed_offset(s, p.varlen, sq, b, hk) : nullptr;
      const T* vtp = p.v_packed ? p.v_packed + packed_offset(s, p.varlen, sq, b, hk) : nullptr;
      const Acc* lse = p.lse + offset(p.lse_st, b, h, sq.q_tok);
      const Acc* lse_lo = p.lse_lo + offset(p.lse_st, b, h, sq.q_tok);
      Acc* delta = p.delta + (b * s.Hq + h) * s.Nq;
      T* dq = p.grad_q + offset(p.dq_st, b, h, sq.q_tok);
      T* dk_out = group > 1 ? p.dk_accum + offset(acc_st, b, h, sq.k_tok) : p.grad_k + offset(p.dk_st, b, hk, sq.k_tok);
      T* dv_out = group > 1 ? p.dv_accum + offset(acc_st, b, h, sq.k_tok) : p.grad_v + offset(p.dv_st, b, hk, sq.k_tok);
      const int64_t dk_n = group > 1 ? acc_st.n : p.dk_st.n, dv_n = group > 1 ? acc_st.n : p.dv_st.n;

      // Rows: visible keys (empty for rows that saw nothing: lse = -inf), δ.
      keys.reserve(sq.nq);
      mrows.reserve(sq.nq);
      int64_t lo = sq.nk, hi = 0;
      for (int64_t i = 0; i < sq.nq; ++i) {
        keys[i] = lse[i * p.lse_st.n] == kNegInf<Acc> ? KeyRange{0, 0} : visible_keys(s, sq, i);
        if (keys[i].lo < keys[i].hi) {
          lo = std::min(lo, keys[i].lo);
          hi = std::max(hi, keys[i].hi);
        }
        mrows[i] = mask_row<T>(p.mask, b, h, i);
        delta[i] = dot(dO + i * p.do_st.n, o + i * p.o_st.n, D);
        std::fill(dq + i * p.dq_st.n, dq + i * p.dq_st.n + D, T(0));
      }
      // Keys no row sees get exact zeros.
      const int64_t first = lo < hi ? lo / BN * BN : sq.nk, last = lo < hi ? hi : sq.nk;
      for (int64_t j = 0; j < sq.nk; ++j)
        if (j < first || j >= last) {
          std::fill(dk_out + j * dk_n, dk_out + j * dk_n + D, T(0));
          std::fill(dv_out + j * dv_n, dv_out + j * dv_n + D, T(0));
        }

      for (int64_t j0 = first; j0 < last; j0 += BN) {
        const int64_t kn = std::min(BN, sq.nk - j0);
        std::fill(dK.begin(), dK.end(), T(0));
        std::fill(dV.begin(), dV.end(), T(0));
        for (int64_t i0 = 0; i0 < sq.nq; i0 += BM) {
          const int64_t mq = std::min(BM, sq.nq - i0);
          int64_t ka = kn, kb = 0;
          bool empty_row = false;
          for (int64_t r = 0; r < mq; ++r) {
            const KeyRange kr = keys[i0 + r];
            empty_row |= kr.lo >= kr.hi;
            const int64_t a = std::clamp<int64_t>(kr.lo - j0, 0, kn), e = std::clamp<int64_t>(kr.hi - j0, 0, kn);
            if (a >= e) continue;
            if (mrows[i0 + r] && !mask_allows_any<T>(p.mask, mrows[i0 + r], j0, a, e)) continue;
            ka = std::min(ka, a);
            kb = std::max(kb, e);
          }
          if (ka >= kb) continue;  // nothing of this key tile is visible to these rows
          // Rows that saw no key take no part; their Q is zeroed so that an
          // infinite query (which made them empty) cannot turn 0 · inf into
          // NaN in dK.
          const T* qi = q + i0 * p.q_st.n;
          int64_t ldq = p.q_st.n;
          if (empty_row) {
            for (int64_t r = 0; r < mq; ++r) {
              const KeyRange kr = keys[i0 + r];
              if (kr.lo < kr.hi)
                std::copy(qi + r * ldq, qi + r * ldq + D, Qz.data() + r * D);
              else
                std::fill(Qz.data() + r * D, Qz.data() + (r + 1) * D, T(0));
            }
            qi = Qz.data();
            ldq = D;
          }
          const T* dOi = dO + i0 * p.do_st.n;
          scores<T>(mq, kn, D, q + i0 * p.q_st.n, p.q_st.n, ktp, k, p.k_st.n, j0, P.data());
          scores<T>(mq, kn, D, dOi, p.do_st.n, vtp, v, p.v_st.n, j0, dS.data());
          for (int64_t r = 0; r < mq; ++r) {
            T* x = P.data() + r * BN;
            T* ds = dS.data() + r * BN;
            const KeyRange kr = keys[i0 + r];
            const int64_t a = std::clamp<int64_t>(kr.lo - j0, ka, kb), e = std::clamp<int64_t>(kr.hi - j0, a, kb);
            std::fill(x + ka, x + a, T(0));
            std::fill(x + e, x + kb, T(0));
            std::fill(ds + ka, ds + a, T(0));
            std::fill(ds + e, ds + kb, T(0));
            if (a >= e) continue;
            logits_row<T>(x, a, e, scale, p.mask, mrows[i0 + r], j0);  // the forward's very operations
            const int64_t li = (i0 + r) * p.lse_st.n;
            exp_shifted_sum<T>(x + a, e - a, lse[li], lse_lo[li]);
            if (drop) {
              dropout_keep(p.dropout, static_cast<uint64_t>((sq.drop_tok + i0 + r) * s.Hq + h), j0 + a, e - a,
                           keep.data());
              apply_dropout(ds + a, keep.data(), e - a, keep_scale);  // dP ∘ Z
            }
            softmax_grad_row(x + a, ds + a, e - a, static_cast<T>(delta[i0 + r]));
            if (drop) apply_dropout(x + a, keep.data(), e - a, keep_scale);  // P ∘ Z, for dV
          }
          gemm_nn<T>(kb - ka, D, mq, P.data() + ka, 1, BN, dOi, p.do_st.n, dV.data() + ka * D, D, true);
          gemm_nn<T>(mq, D, kb - ka, dS.data() + ka, BN, 1, k + (j0 + ka) * p.k_st.n, p.k_st.n,
                     dq + i0 * p.dq_st.n, p.dq_st.n, true);
          gemm_nn<T>(kb - ka, D, mq, dS.data() + ka, 1, BN, qi, ldq, dK.data() + ka * D, D, true);
        }
        for (int64_t r = 0; r < kn; ++r)
          for (int64_t d = 0; d < D; ++d) {
            dk_out[(j0 + r) * dk_n + d] = dK[r * D + d] * scale;
            dv_out[(j0 + r) * dv_n + d] = dV[r * D + d];
          }
      }
      for (int64_t i = 0; i < sq.nq; ++i) scale_row(dq + i * p.dq_st.n, D, scale);
    }
  });

  if (group > 1) {
    // grad[b, hk] = Σ_g partial[b, hk·group + g], in a fixed order.
    pf(0, s.B * s.Hkv, /*grain*/ grain_for(2 * group * s.Nk * D), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / s.Hkv, hk = t % s.Hkv;
        const Seq sq = sequence(s, p.varlen, b);
        for (int64_t j = 0; j < sq.nk; ++j) {
          T* dk = p.grad_k + offset(p.dk_st, b, hk, sq.k_tok + j);
          T* dv = p.grad_v + offset(p.dv_st, b, hk, sq.k_tok + j);
          std::fill(dk, dk + D, T(0));
          std::fill(dv, dv + D, T(0));
          for (int64_t g = 0; g < group; ++g) {
            const int64_t src = offset(acc_st, b, hk * group + g, sq.k_tok + j);
            for (int64_t d = 0; d < D; ++d) {
              dk[d] += p.dk_accum[src + d];
              dv[d] += p.dv_accum[src + d];
            }
          }
        }
      }
    });
  }
}

// ------------------------------------------------------------ dropout mask --
template <typename T>
void attention_dropout_mask(const AttnDropoutMaskParams<T>& p, const ParallelFor& pf) {
  const AttnShape& s = p.s;
  pf(0, s.B * s.Hq * s.Nq, /*grain*/ grain_for(s.Nk), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / (s.Hq * s.Nq), h = (r / s.Nq) % s.Hq, i = r % s.Nq;
      uint8_t* keep = p.keep + r * s.Nk;
      if (!dropout_on(p.dropout)) {
        std::fill(keep, keep + s.Nk, uint8_t(1));
        continue;
      }
      dropout_keep(p.dropout, static_cast<uint64_t>((b * s.Nq + i) * s.Hq + h), 0, s.Nk, keep);
    }
  });
}

template void attention_forward<float>(const AttnFwdParams<float>&, const ParallelFor&);
template void attention_forward<double>(const AttnFwdParams<double>&, const ParallelFor&);
template void attention_backward<float>(const AttnBwdParams<float>&, const ParallelFor&);
template void attention_backward<double>(const AttnBwdParams<double>&, const ParallelFor&);
template void attention_dropout_mask<float>(const AttnDropoutMaskParams<float>&, const ParallelFor&);
template void attention_dropout_mask<double>(const AttnDropoutMaskParams<double>&, const ParallelFor&);

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
