// Fused attention on the CPU: O = softmax(Q Kᵀ · scale) V, tile by tile.
//
// Forward. One task = (batch, query head, tile of BM query rows); tasks run
// in parallel. A task keeps its Q rows, a BM×BN block of scores and a BM×D
// fp32 output accumulator in cache, and walks the keys BN at a time:
//     S = Q Kᵀ_tile                    (gemm_nn against Kᵀ packed per head in 16-key panels)
//     m' = max(m, rowmax S); P = 2^(S·c − m'); l = l·2^(m−m') + rowsum P
//     O = O·2^(m−m') + P V_tile        (gemm_nn, V rows as stored)
// with c = scale·log2(e), so only exp2 is needed. At the end O /= l and the
// row log-sum-exp, lse = (m + log2 l)·ln 2, is stored for the backward. The
// Nq×Nk score matrix never exists; causal key tiles beyond the last query of
// the tile are never visited, and inside the diagonal tile each row simply
// stops at its own position.
//
// Backward, from the LSE (the recomputation scheme of FlashAttention-2):
//     P  = exp(Q Kᵀ·scale − lse)       recomputed per tile
//     dV += Pᵀ dO                     dP = dO Vᵀ
//     dS = P ∘ (dP − δ),  δ = rowsum(dO ∘ O)
//     dQ += dS K · scale              dK += dSᵀ Q · scale
// One task = (batch, query head); it owns dQ for its rows and accumulates dK,
// dV for one key tile at a time. With grouped-query attention several query
// heads feed one key head: each writes a private partial, summed at the end,
// so no two threads ever write the same element (deterministic, no atomics).
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/kernels_cpu.h"
#include "cpu/microkernels.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
namespace {

// BM is a multiple of the 6-row register tile, BN of the 16-column one.
constexpr int64_t BM = 48;
constexpr int64_t BN = 64;
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Kᵀ (or Vᵀ) of every head in 16-key panels (see pack_panels): head t's
// block starts at t · panels_size(D, N).
template <typename T>
std::vector<T> pack_heads_transposed(const T* src, Strides3 st, int64_t B, int64_t H, int64_t N, int64_t D,
                                     const ParallelFor& pf) {
  const int64_t per_head = panels_size(D, N);
  std::vector<T> dst(B * H * per_head);
  pf(0, B * H, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      pack_panels<T>(D, N, src + (t / H) * st.b + (t % H) * st.h, 1, st.n, dst.data() + t * per_head);
  });
  return dst;
}

// s[0:n) *= c; returns max over s[0:n).
template <typename T>
inline T scale_and_max(T* s, int64_t n, T c) {
  T mx = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 cv = _mm256_set1_ps(c);
    __m256 mv = _mm256_set1_ps(mx);
    for (; j + 8 <= n; j += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + j), cv);
      _mm256_storeu_ps(s + j, v);
      mv = _mm256_max_ps(mv, v);
    }
    mx = hmax(mv);
  }
#endif
  for (; j < n; ++j) {
    s[j] *= c;
    mx = std::max(mx, s[j]);
  }
  return mx;
}

// s[0:n) = 2^(s·a + b); returns the sum. NaN in s stays NaN.
template <typename T>
inline T exp2_affine_sum(T* s, int64_t n, T a, T b) {
  T sum = 0;
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
    __m256 sv = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
      const __m256 p = exp2_ps(_mm256_fmadd_ps(_mm256_loadu_ps(s + j), av, bv));
      _mm256_storeu_ps(s + j, p);
      sv = _mm256_add_ps(sv, p);
    }
    if (j < n) {
      const __m256i m = tail_mask(n - j);
      const __m256 p = _mm256_and_ps(exp2_ps(_mm256_fmadd_ps(_mm256_maskload_ps(s + j, m), av, bv)),
                                     _mm256_castsi256_ps(m));
      _mm256_maskstore_ps(s + j, m, p);
      sv = _mm256_add_ps(sv, p);
      j = n;
    }
    sum = hsum(sv);
  }
#endif
  for (; j < n; ++j) {
    s[j] = std::exp2(s[j] * a + b);
    sum += s[j];
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

// Keys of tile [j0, j0+kn) that query row i may see.
inline int64_t visible_keys(bool causal, int64_t i, int64_t j0, int64_t kn) {
  return causal ? std::clamp<int64_t>(i + 1 - j0, 0, kn) : kn;
}

}  // namespace

template <typename T>
void attention_forward(const AttnFwdParams<T>& p, const ParallelFor& pf) {
  const AttnShape& s = p.s;
  const int64_t D = s.D, group = s.Hq / s.Hkv;
  const std::vector<T> kt = pack_heads_transposed(p.k, p.k_st, s.B, s.Hkv, s.Nk, D, pf);
  const int64_t head_panels = panels_size(D, s.Nk);

  const T c = static_cast<T>(s.scale * kLog2e);
  const int64_t nqt = div_up(s.Nq, BM);
  pf(0, s.B * s.Hq * nqt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> S(BM * BN), O(BM * D), m(BM), l(BM);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (s.Hq * nqt), h = (t / nqt) % s.Hq, i0 = (t % nqt) * BM;
      const int64_t mq = std::min(BM, s.Nq - i0), hk = h / group;
      const T* q = p.q + b * p.q_st.b + h * p.q_st.h + i0 * p.q_st.n;
      const T* ktp = kt.data() + (b * s.Hkv + hk) * head_panels;
      const T* v = p.v + b * p.v_st.b + hk * p.v_st.h;
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(O.begin(), O.end(), T(0));
      const int64_t j_end = s.causal ? std::min(s.Nk, i0 + mq) : s.Nk;
      for (int64_t j0 = 0; j0 < j_end; j0 += BN) {
        const int64_t kn = std::min(BN, j_end - j0);
        gemm_nn_packed<T>(mq, kn, D, q, p.q_st.n, 1, ktp + j0 * D, S.data(), BN, false);
        for (int64_t r = 0; r < mq; ++r) {
          T* row = S.data() + r * BN;
          const int64_t lim = visible_keys(s.causal, i0 + r, j0, kn);
          std::fill(row + lim, row + kn, T(0));
          if (lim == 0) continue;
          const T m_new = std::max(m[r], scale_and_max(row, lim, c));
          const T alpha = std::exp2(m[r] - m_new);  // 0 on the first tile
          l[r] = l[r] * alpha + exp2_affine_sum<T>(row, lim, T(1), -m_new);
          m[r] = m_new;
          if (alpha != T(1)) scale_row(O.data() + r * D, D, alpha);
        }
        gemm_nn<T>(mq, D, kn, S.data(), BN, 1, v + j0 * p.v_st.n, p.v_st.n, O.data(), D, true);
      }
      T* out = p.out + ((b * s.Hq + h) * s.Nq + i0) * D;
      T* lse = p.lse + (b * s.Hq + h) * s.Nq + i0;
      for (int64_t r = 0; r < mq; ++r) {
        const T inv = T(1) / l[r];
        for (int64_t d = 0; d < D; ++d) out[r * D + d] = O[r * D + d] * inv;
        lse[r] = static_cast<T>((m[r] + std::log2(l[r])) * kLn2);
      }
    }
  });
}

template <typename T>
void attention_backward(const AttnBwdParams<T>& p, const ParallelFor& pf) {
  const AttnShape& s = p.s;
  const int64_t D = s.D, group = s.Hq / s.Hkv, Nq = s.Nq, Nk = s.Nk;
  const std::vector<T> kt = pack_heads_transposed(p.k, p.k_st, s.B, s.Hkv, Nk, D, pf);
  const std::vector<T> vt = pack_heads_transposed(p.v, p.v_st, s.B, s.Hkv, Nk, D, pf);
  const int64_t head_panels = panels_size(D, Nk);
  // With GQA each query head writes its own dK/dV partial; without, the
  // outputs themselves.
  std::vector<T> dk_part, dv_part;
  T* dk_dst = p.grad_k;
  T* dv_dst = p.grad_v;
  if (group > 1) {
    dk_part.resize(s.B * s.Hq * Nk * D);
    dv_part.resize(s.B * s.Hq * Nk * D);
    dk_dst = dk_part.data();
    dv_dst = dv_part.data();
  }
  const T c = static_cast<T>(s.scale * kLog2e);
  const T scale = static_cast<T>(s.scale);

  pf(0, s.B * s.Hq, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> P(BM * BN), dS(BM * BN), dK(BN * D), dV(BN * D), delta(Nq);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / s.Hq, h = t % s.Hq, hk = h / group;
      const T* q = p.q + b * p.q_st.b + h * p.q_st.h;
      const T* o = p.out + b * p.o_st.b + h * p.o_st.h;
      const T* dO = p.grad_out + b * p.do_st.b + h * p.do_st.h;
      const T* k = p.k + b * p.k_st.b + hk * p.k_st.h;
      const T* ktp = kt.data() + (b * s.Hkv + hk) * head_panels;
      const T* vtp = vt.data() + (b * s.Hkv + hk) * head_panels;
      const T* lse = p.lse + t * Nq;
      T* dq = p.grad_q + t * Nq * D;
      T* dk_out = dk_dst + t * Nk * D;  // t indexes (b, h) = (b, hk) when group == 1
      T* dv_out = dv_dst + t * Nk * D;
      for (int64_t i = 0; i < Nq; ++i) delta[i] = dot(dO + i * p.do_st.n, o + i * p.o_st.n, D);
      std::fill(dq, dq + Nq * D, T(0));

      for (int64_t j0 = 0; j0 < Nk; j0 += BN) {
        const int64_t kn = std::min(BN, Nk - j0);
        std::fill(dK.begin(), dK.end(), T(0));
        std::fill(dV.begin(), dV.end(), T(0));
        // Causal: query rows before j0 see none of these keys.
        for (int64_t i0 = s.causal ? (j0 / BM) * BM : 0; i0 < Nq; i0 += BM) {
          const int64_t mq = std::min(BM, Nq - i0);
          const T* qi = q + i0 * p.q_st.n;
          const T* dOi = dO + i0 * p.do_st.n;
          gemm_nn_packed<T>(mq, kn, D, qi, p.q_st.n, 1, ktp + j0 * D, P.data(), BN, false);
          for (int64_t r = 0; r < mq; ++r) {
            T* row = P.data() + r * BN;
            const int64_t lim = visible_keys(s.causal, i0 + r, j0, kn);
            exp2_affine_sum<T>(row, lim, c, static_cast<T>(-lse[i0 + r] * kLog2e));
            std::fill(row + lim, row + kn, T(0));
          }
          gemm_nn<T>(kn, D, mq, P.data(), 1, BN, dOi, p.do_st.n, dV.data(), D, true);
          gemm_nn_packed<T>(mq, kn, D, dOi, p.do_st.n, 1, vtp + j0 * D, dS.data(), BN, false);
          for (int64_t r = 0; r < mq; ++r)
            softmax_grad_row(P.data() + r * BN, dS.data() + r * BN, kn, delta[i0 + r]);
          gemm_nn<T>(mq, D, kn, dS.data(), BN, 1, k + j0 * p.k_st.n, p.k_st.n, dq + i0 * D, D, true);
          gemm_nn<T>(kn, D, mq, dS.data(), 1, BN, qi, p.q_st.n, dK.data(), D, true);
        }
        for (int64_t r = 0; r < kn; ++r)
          for (int64_t d = 0; d < D; ++d) {
            dk_out[(j0 + r) * D + d] = dK[r * D + d] * scale;
            dv_out[(j0 + r) * D + d] = dV[r * D + d];
          }
      }
      scale_row(dq, Nq * D, scale);
    }
  });

  if (group > 1) {
    // grad[b, hk] = Σ_g partial[b, hk·group + g]
    pf(0, s.B * s.Hkv, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = Nk * D;
        T* dk = p.grad_k + t * n;
        T* dv = p.grad_v + t * n;
        std::fill(dk, dk + n, T(0));
        std::fill(dv, dv + n, T(0));
        const int64_t b = t / s.Hkv, hk = t % s.Hkv;
        for (int64_t g = 0; g < group; ++g) {
          const int64_t src = ((b * s.Hq) + hk * group + g) * n;
          for (int64_t e = 0; e < n; ++e) {
            dk[e] += dk_part[src + e];
            dv[e] += dv_part[src + e];
          }
        }
      }
    });
  }
}

template void attention_forward<float>(const AttnFwdParams<float>&, const ParallelFor&);
template void attention_forward<double>(const AttnFwdParams<double>&, const ParallelFor&);
template void attention_backward<float>(const AttnBwdParams<float>&, const ParallelFor&);
template void attention_backward<double>(const AttnBwdParams<double>&, const ParallelFor&);

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
