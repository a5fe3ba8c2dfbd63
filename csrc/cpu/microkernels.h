// CPU building blocks: two small matrix-product tiles and vector exp2/tanh.
//
// Every CPU kernel in fusedseq is written in terms of these, so this is where
// the speed lives. Two shapes of product cover all the kernels:
//
//   gemm_nn:  C(M×N) (+)= A(M×K) · B(K×N)
//     A is read one scalar at a time through arbitrary strides (rs_a, cs_a),
//     so a transposed operand (Pᵀ, dSᵀ, dzᵀ) costs nothing; B is read as rows
//     that are contiguous along N. The AVX2 tile keeps a 6×16 block of C in
//     12 ymm registers and per k does 2 loads of B, 6 broadcasts of A and 12
//     FMAs: the classic register-blocked shape that reaches ~90% of FMA peak.
//
//   gemm_nt:  C(M×N) = Σ_seg A_seg(M×K) · B_seg(N×K)ᵀ
//     Both operands are rows contiguous along K (x·W_ihᵀ with W_ih as
//     stored). Vectorised along K with a horizontal sum at the end, which
//     avoids repacking Wᵀ on every call of the RNN cell. Several (A, B, K)
//     segments accumulate into the same registers: that is how the cell does
//     x W_ihᵀ + h W_hhᵀ in one pass.
//
// The generic (scalar, templated) versions are the reference and serve double
// and non-AVX2 builds; the float specialisations use AVX2+FMA when compiled
// with them.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FUSEDSEQ_AVX2 1
#else
#define FUSEDSEQ_AVX2 0
#endif

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

// ------------------------------------------------------------ generic path --
template <typename T>
inline void gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a,
                    const T* B, int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (!accumulate) std::fill(c, c + N, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T a = A[i * rs_a + k * cs_a];
      const T* b = B + k * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

template <typename T>
struct NtSegment {
  const T* A; int64_t lda;  // (M, K) rows
  const T* B; int64_t ldb;  // (N, K) rows
  int64_t K;
};

template <typename T>
inline void gemm_nt(int64_t M, int64_t N, const NtSegment<T>* seg, int nseg, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int s = 0; s < nseg; ++s) {
        const T* a = seg[s].A + i * seg[s].lda;
        const T* b = seg[s].B + j * seg[s].ldb;
        for (int64_t k = 0; k < seg[s].K; ++k) acc += a[k] * b[k];
      }
      C[i * ldc + j] = acc;
    }
}

template <typename T>
inline T exp2_scalar(T x) { return std::exp2(x); }

#if FUSEDSEQ_AVX2
// --------------------------------------------------------------- AVX2 path --
inline __m256i tail_mask(int64_t n) {  // lanes [0, n) set, n in [0, 8]
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 2^x, |rel err| < 2e-7 on the normal range. NaN in, NaN out (min/max take
// the NaN operand when it is the second one); x <= -127 gives exactly 0 and
// x >= 128 gives +inf, so -inf scores vanish and overflow is visible.
inline __m256 exp2_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(128.0f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-127.0f), x);
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);  // in [-0.5, 0.5]
  // Taylor series of e^(f ln 2) to degree 7: truncation error < 6e-9.
  __m256 p = _mm256_set1_ps(1.5252733804059840e-05f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381608e-04f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// tanh as x·P(x²)/Q(x²) (a 13/6 minimax rational on [-7.9, 7.9], where
// float tanh is ±1 beyond), accurate to a few ulp; small |x| returns x.
inline __m256 tanh_ps(__m256 x) {
  const __m256 lim = _mm256_set1_ps(7.90531110763549805f);
  const __m256 xc = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), _mm256_min_ps(lim, x));
  const __m256 x2 = _mm256_mul_ps(xc, xc);
  __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
  p = _mm256_mul_ps(p, xc);
  __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));
  const __m256 r = _mm256_div_ps(p, q);
  const __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(4e-4f), _CMP_LT_OQ);
  const __m256 res = _mm256_blendv_ps(r, x, tiny);
  // NaN stays NaN: the clamps above would have turned it into ±7.9.
  return _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One MR×16 block of C; `n` valid columns (16 = a full block, no masking).
//
// The accumulators are named variables, not arrays: with `__m256 c[MR]` GCC
// 12 kept the registers but also stored all 12 of them to the stack on every
// k step, which made the loop store-bound at a third of FMA peak. Rows past
// MR are dead code removed by `if constexpr`.
template <int MR, bool FULL>
inline void nn_tile(int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B, int64_t ldb,
                    float* C, int64_t ldc, bool accumulate, int64_t n) {
  static_assert(MR >= 1 && MR <= 6, "nn_tile handles 1..6 rows");
  const __m256i m0 = FULL ? __m256i{} : tail_mask(std::min<int64_t>(n, 8));
  const __m256i m1 = FULL ? __m256i{} : tail_mask(std::max<int64_t>(n - 8, 0));
  const __m256 z = _mm256_setzero_ps();
  __m256 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m256 b0 = FULL ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
    const __m256 b1 = FULL ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
    const float* a = A + k * cs_a;
#define FUSEDSEQ_ROW_FMA(i)                                    \
  if constexpr (MR > i) {                                      \
    const __m256 ai = _mm256_broadcast_ss(a + i * rs_a);       \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                \
    c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                \
  }
    FUSEDSEQ_ROW_FMA(0) FUSEDSEQ_ROW_FMA(1) FUSEDSEQ_ROW_FMA(2)
    FUSEDSEQ_ROW_FMA(3) FUSEDSEQ_ROW_FMA(4) FUSEDSEQ_ROW_FMA(5)
#undef FUSEDSEQ_ROW_FMA
  }
#define FUSEDSEQ_ROW_STORE(i)                                                          \
  if constexpr (MR > i) {                                                              \
    float* ci = C + i * ldc;                                                           \
    if (accumulate) {                                                                  \
      c##i##0 = _mm256_add_ps(c##i##0, FULL ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0));          \
      c##i##1 = _mm256_add_ps(c##i##1, FULL ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1));  \
    }                                                                                  \
    if (FULL) {                                                                        \
      _mm256_storeu_ps(ci, c##i##0);                                                   \
      _mm256_storeu_ps(ci + 8, c##i##1);                                               \
    } else {                                                                           \
      _mm256_maskstore_ps(ci, m0, c##i##0);                                            \
      _mm256_maskstore_ps(ci + 8, m1, c##i##1);                                        \
    }                                                                                  \
  }
  FUSEDSEQ_ROW_STORE(0) FUSEDSEQ_ROW_STORE(1) FUSEDSEQ_ROW_STORE(2)
  FUSEDSEQ_ROW_STORE(3) FUSEDSEQ_ROW_STORE(4) FUSEDSEQ_ROW_STORE(5)
#undef FUSEDSEQ_ROW_STORE
}

template <bool FULL>
inline void nn_rows(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
                    int64_t ldb, float* C, int64_t ldc, bool accumulate, int64_t n) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6)
    nn_tile<6, FULL>(K, A + i * rs_a, rs_a, cs_a, B, ldb, C + i * ldc, ldc, accumulate, n);
  const float* a = A + i * rs_a;
  float* c = C + i * ldc;
  switch (M - i) {
    case 5: nn_tile<5, FULL>(K, a, rs_a, cs_a, B, ldb, c, ldc, accumulate, n); break;
    case 4: nn_tile<4, FULL>(K, a, rs_a, cs_a, B, ldb, c, ldc, accumulate, n); break;
    case 3: nn_tile<3, FULL>(K, a, rs_a, cs_a, B, ldb, c, ldc, accumulate, n); break;
    case 2: nn_tile<2, FULL>(K, a, rs_a, cs_a, B, ldb, c, ldc, accumulate, n); break;
    case 1: nn_tile<1, FULL>(K, a, rs_a, cs_a, B, ldb, c, ldc, accumulate, n); break;
    default: break;
  }
}

template <>
inline void gemm_nn<float>(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a,
                           const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  // Column blocks outermost: a K×16 panel of B stays in L1 while every row
  // block of A streams past it.
  for (int64_t j = 0; j < N; j += 16) {
    const int64_t n = std::min<int64_t>(16, N - j);
    if (n == 16)
      nn_rows<true>(M, K, A, rs_a, cs_a, B + j, ldb, C + j, ldc, accumulate, n);
    else
      nn_rows<false>(M, K, A, rs_a, cs_a, B + j, ldb, C + j, ldc, accumulate, n);
  }
}

// MR rows of A against NR rows of B over one segment, vectorised along K.
// Named accumulators for the same reason as nn_tile (arrays were spilled on
// every k step). C = (accumulate ? C : 0) + A·Bᵀ.
template <int MR, int NR>
inline void nt_tile(const NtSegment<float>& g, int64_t i0, int64_t j0, float* C, int64_t ldc, bool accumulate) {
  static_assert(MR >= 1 && MR <= 3 && NR >= 1 && NR <= 4, "nt_tile handles up to 3x4");
  const __m256 z = _mm256_setzero_ps();
  __m256 s00 = z, s01 = z, s02 = z, s03 = z, s10 = z, s11 = z, s12 = z, s13 = z, s20 = z, s21 = z, s22 = z, s23 = z;
  const float* a = g.A + i0 * g.lda;
  const float* b = g.B + j0 * g.ldb;
  // One k-step of 8: rows of A in a0..a2, then each row of B against them.
  auto step = [&](int64_t k, __m256i mask, bool masked) {
    auto ld = [&](const float* p) { return masked ? _mm256_maskload_ps(p + k, mask) : _mm256_loadu_ps(p + k); };
    const __m256 a0 = ld(a);
    const __m256 a1 = MR > 1 ? ld(a + g.lda) : z;
    const __m256 a2 = MR > 2 ? ld(a + 2 * g.lda) : z;
#define FUSEDSEQ_NT_COL(j)                                          \
  if constexpr (NR > j) {                                           \
    const __m256 bj = ld(b + j * g.ldb);                            \
    s0##j = _mm256_fmadd_ps(a0, bj, s0##j);                         \
    if constexpr (MR > 1) s1##j = _mm256_fmadd_ps(a1, bj, s1##j);   \
    if constexpr (MR > 2) s2##j = _mm256_fmadd_ps(a2, bj, s2##j);   \
  }
    FUSEDSEQ_NT_COL(0) FUSEDSEQ_NT_COL(1) FUSEDSEQ_NT_COL(2) FUSEDSEQ_NT_COL(3)
#undef FUSEDSEQ_NT_COL
  };
  int64_t k = 0;
  for (; k + 8 <= g.K; k += 8) step(k, __m256i{}, false);
  if (k < g.K) step(k, tail_mask(g.K - k), true);
  float* c = C + i0 * ldc + j0;
#define FUSEDSEQ_NT_STORE(i, j) \
  if constexpr (MR > i && NR > j) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + hsum(s##i##j);
  FUSEDSEQ_NT_STORE(0, 0) FUSEDSEQ_NT_STORE(0, 1) FUSEDSEQ_NT_STORE(0, 2) FUSEDSEQ_NT_STORE(0, 3)
  FUSEDSEQ_NT_STORE(1, 0) FUSEDSEQ_NT_STORE(1, 1) FUSEDSEQ_NT_STORE(1, 2) FUSEDSEQ_NT_STORE(1, 3)
  FUSEDSEQ_NT_STORE(2, 0) FUSEDSEQ_NT_STORE(2, 1) FUSEDSEQ_NT_STORE(2, 2) FUSEDSEQ_NT_STORE(2, 3)
#undef FUSEDSEQ_NT_STORE
}

template <int NR>
inline void nt_col_block(int64_t M, const NtSegment<float>& g, int64_t j0, float* C, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + 3 <= M; i += 3) nt_tile<3, NR>(g, i, j0, C, ldc, accumulate);
  if (M - i == 2) nt_tile<2, NR>(g, i, j0, C, ldc, accumulate);
  if (M - i == 1) nt_tile<1, NR>(g, i, j0, C, ldc, accumulate);
}

template <>
inline void gemm_nt<float>(int64_t M, int64_t N, const NtSegment<float>* seg, int nseg, float* C, int64_t ldc) {
  // 3×4 tiles: 12 accumulators + 3 A vectors + 1 B vector = all 16 ymm.
  // B's rows (the weights, the big operand) are the outer loop, so each
  // block of 4 rows is read from memory once and reused from L1 for every
  // row of A; the other order re-streams all of B per 3 rows of A.
  // Segments run one after the other, each adding onto C: with the segment
  // loop inside the tile, GCC 12 ran out of general registers and reloaded
  // the row pointers from the stack on every k step, which made a two-
  // segment call 1.5x slower than two one-segment calls.
  for (int s = 0; s < nseg; ++s) {
    const bool acc = s > 0;
    int64_t j = 0;
    for (; j + 4 <= N; j += 4) nt_col_block<4>(M, seg[s], j, C, ldc, acc);
    switch (N - j) {
      case 3: nt_col_block<3>(M, seg[s], j, C, ldc, acc); break;
      case 2: nt_col_block<2>(M, seg[s], j, C, ldc, acc); break;
      case 1: nt_col_block<1>(M, seg[s], j, C, ldc, acc); break;
      default: break;
    }
  }
}
#endif  // FUSEDSEQ_AVX2

// ------------------------------------------------------------ B panels --
// gemm_nn reads B as K rows of a 16-column panel. When B's row stride is a
// large power of two (Kᵀ with Nk = 1024 keys: 4 KiB; W_hhᵀ with H = 256:
// 1 KiB) those K rows all map to the same few L1 sets and evict each other,
// which cost 4-5x in speed. Packing B once into contiguous 16-wide panels
// (row stride 16 floats) removes the conflict and makes the loads sequential.
constexpr int64_t kPanel = 16;

inline int64_t panels_size(int64_t K, int64_t N) { return (N + kPanel - 1) / kPanel * kPanel * K; }

// dst panel p, row k, lane c = B(k, 16p + c), zero past N, where
// B(k, n) = src[k * rs + n * cs]. (rs, cs) = (ldb, 1) packs B as stored;
// (1, ld) packs the transpose of a row-major (N, K) matrix such as K or W_hh.
template <typename T>
inline void pack_panels(int64_t K, int64_t N, const T* src, int64_t rs, int64_t cs, T* dst) {
  for (int64_t j0 = 0; j0 < N; j0 += kPanel) {
    const int64_t n = std::min(kPanel, N - j0);
    T* d = dst + j0 * K;  // (j0 / 16) * K * 16
    if (cs == 1) {
      for (int64_t k = 0; k < K; ++k) {
        const T* s = src + k * rs + j0;
        for (int64_t c = 0; c < n; ++c) d[k * kPanel + c] = s[c];
        for (int64_t c = n; c < kPanel; ++c) d[k * kPanel + c] = T(0);
      }
    } else {
      // Transposed source: walk it along its contiguous k.
      for (int64_t c = 0; c < kPanel; ++c) {
        if (c < n) {
          const T* s = src + (j0 + c) * cs;
          for (int64_t k = 0; k < K; ++k) d[k * kPanel + c] = s[k * rs];
        } else {
          for (int64_t k = 0; k < K; ++k) d[k * kPanel + c] = T(0);
        }
      }
    }
  }
}

// C(M×N) (+)= A · B with B packed by pack_panels (bp points at the panel of
// column 0; column offsets must be multiples of 16).
template <typename T>
inline void gemm_nn_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* bp,
                           T* C, int64_t ldc, bool accumulate) {
  for (int64_t j = 0; j < N; j += kPanel)
    gemm_nn<T>(M, std::min(kPanel, N - j), K, A, rs_a, cs_a, bp + j * K, kPanel, C + j, ldc, accumulate);
}

// ------------------------------------------------ element-wise row helpers --
// These are the epilogues the RNN kernels fuse after their products.

// y[j] = act(y[j] + bias[j]) over one row; bias may be null.
template <typename T>
inline void bias_act_row(T* y, const T* bias, int64_t n, bool relu) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_loadu_ps(y + j);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
      v = relu ? _mm256_max_ps(_mm256_setzero_ps(), v) : tanh_ps(v);
      _mm256_storeu_ps(y + j, v);
    }
  }
#endif
  for (; j < n; ++j) {
    T v = y[j] + (bias ? bias[j] : T(0));
    // relu keeps NaN, like torch.relu.
    y[j] = relu ? (v < T(0) ? T(0) : v) : static_cast<T>(std::tanh(v));
  }
}

// g[j] *= act'(y[j]) where y = act(z): tanh' = 1 - y², relu' = [y > 0].
template <typename T>
inline void mul_act_grad_row(T* g, const T* y, int64_t n, bool relu) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
      const __m256 yv = _mm256_loadu_ps(y + j);
      __m256 gv = _mm256_loadu_ps(g + j);
      gv = relu ? _mm256_and_ps(gv, _mm256_cmp_ps(yv, zero, _CMP_GT_OQ))
                : _mm256_mul_ps(gv, _mm256_fnmadd_ps(yv, yv, one));
      _mm256_storeu_ps(g + j, gv);
    }
  }
#endif
  for (; j < n; ++j) g[j] = relu ? (y[j] > T(0) ? g[j] : T(0)) : g[j] * (T(1) - y[j] * y[j]);
}

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
