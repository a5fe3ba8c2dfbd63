// Fused attention on tensor cores (mma.sync.m16n8k16, bf16/fp16 in, fp32
// accumulate): FlashAttention-2's structure, written on csrc/cuda/compat.cuh
// so that the same source runs on a GPU (sm_80 and up) and on the host SIMT
// emulator. Included by one .cu per (pass, head dim) instantiation group
// (attention_{fwd,bwd}_d<D>.cu), so that their compiles run in parallel.
//
// Every kernel: 4 warps; each warp owns 16 rows of the block's tile (query
// rows in the forward and the dQ pass, key rows in the dK/dV pass), so a
// row's softmax statistics live in the 4 lanes of one quad and reduce with
// two shuffles. Tiles stream through shared memory, double-buffered with
// cp.async; rows and head-dim columns past the tensor's end are zero-filled
// by the copies (nothing is read out of bounds) and masked or never stored.
//
// Tile shapes (elements), rows padded by 8 elements (16 bytes) so that the
// 8 rows an ldmatrix reads fall in different banks:
//   forward, dQ pass   Q tile 64 x D once; K, V tiles kBlockN x D, 2 stages
//   dK/dV pass         K, V tiles 64 x D once; Q, dO tiles kBlockM x D, 2 stages
#pragma once
#include "cuda/compat.cuh"

#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda/attention/attention.h"

namespace fusedseq::cuda::attn {

FUSEDSEQ_EXTERN_SHARED(unsigned char, attn_smem);

constexpr int kThreads = 128, kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

template <int kD>
struct Tiles {
  static constexpr int kStride = kD + 8;                  // padded smem row, elements
  static constexpr int kRows = 64;                         // rows the 4 warps own (16 each)
  static constexpr int kFwdN = kD <= 128 ? 64 : 32;        // keys per tile: forward and dQ pass
  static constexpr int kBwdM = kD <= 64 ? 64 : 32;         // queries per tile: dK/dV pass
  static constexpr size_t kFwdSmem = size_t(kRows + 4 * kFwdN) * kStride * 2;
  static constexpr size_t kDqSmem = size_t(2 * kRows + 4 * kFwdN) * kStride * 2;
  static constexpr size_t kDkvSmem = size_t(2 * kRows + 4 * kBwdM) * kStride * 2 + 2 * 2 * kBwdM * sizeof(float);
};

// ------------------------------------------------------------ key ranges --
// Which keys query i sees (csrc/common/params.h, AttnShape): keys
// [lo(i), hi(i)), both non-decreasing in i.
struct KeyRange {
  int64_t Nk, off, wl, wr;
  bool causal;

  __device__ __forceinline__ KeyRange(const AttnShape& s)
      : Nk(s.Nk), off(s.bottom_right ? s.Nk - s.Nq : 0), wl(s.window_left), wr(s.window_right), causal(s.causal) {}
  __device__ __forceinline__ int64_t lo(int64_t i) const {
    return wl >= 0 ? (i + off - wl > 0 ? i + off - wl : 0) : 0;
  }
  __device__ __forceinline__ int64_t hi(int64_t i) const {
    int64_t h = Nk;
    if (causal && i + off + 1 < h) h = i + off + 1;
    if (wr >= 0 && i + off + wr + 1 < h) h = i + off + wr + 1;
    return h > 0 ? h : 0;
  }
  __device__ __forceinline__ bool sees(int64_t i, int64_t j) const { return j >= lo(i) && j < hi(i); }
  // Queries [qlo, qhi) that see any key of [j0, j1) (within [0, Nq)).
  __device__ __forceinline__ void queries_of(int64_t j0, int64_t j1, int64_t Nq, int64_t& qlo, int64_t& qhi) const {
    qlo = 0, qhi = Nq;
    if (causal && j0 - off > qlo) qlo = j0 - off;             // j0 <= i + off
    if (wr >= 0 && j0 - off - wr > qlo) qlo = j0 - off - wr;  // j0 <= i + off + wr
    if (wl >= 0 && j1 - 1 - off + wl + 1 < qhi) qhi = j1 - 1 - off + wl + 1;  // j1 - 1 >= i + off - wl
    if (qhi < qlo) qhi = qlo;
  }
};

// attn_mask (csrc/common/params.h, AttnMask) at (b, h), read element by
// element where a tile needs it (never expanded). A: the additive mask's
// element type (float for every input but fp64).
template <class A>
struct MaskRef {
  MaskKind kind;
  const uint8_t* keep = nullptr;
  const A* add = nullptr;
  int64_t q, k;

  __device__ __forceinline__ MaskRef(const AttnMask& m, int64_t b, int64_t h) : kind(m.kind), q(m.q), k(m.k) {
    if (kind == MaskKind::Bool) keep = static_cast<const uint8_t*>(m.ptr) + b * m.b + h * m.h;
    if (kind == MaskKind::Additive) add = static_cast<const A*>(m.ptr) + b * m.b + h * m.h;
  }
  __device__ __forceinline__ bool any() const { return kind != MaskKind::None; }
  // The mask's term of logit (i, j) (natural units): 0, -inf, or the additive value.
  __device__ __forceinline__ A term(int64_t i, int64_t j) const {
    if (kind == MaskKind::Bool) return keep[i * q + j * k] ? A(0) : A(-INFINITY);
    if (kind == MaskKind::Additive) return add[i * q + j * k];
    return A(0);
  }
};

// ---------------------------------------------------------------- copies --
// Issues the cp.async copies of rows [row0, row0 + kRowsT) of a (nrows, D)
// matrix with row stride `stride` into a smem tile of kD-wide rows; rows past
// nrows and columns past D copy nothing and are zero-filled.
// `skip(row)` (optional) zero-fills rows the caller wants as zeros.
struct NoSkip {
  __device__ __forceinline__ bool operator()(int64_t) const { return false; }
};
template <class T, int kD, int kRowsT, class Skip = NoSkip>
__device__ __forceinline__ void load_rows(T* s, const T* g, int64_t stride, int64_t row0, int64_t nrows, int D,
                                          Skip skip = {}) {
  constexpr int kChunks = kD / 8;
  for (int c = threadIdx.x; c < kRowsT * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const int64_t gr = row0 + r;
    const int valid = gr < nrows && !skip(gr) ? (D - col >= 8 ? 8 : (D - col > 0 ? D - col : 0)) : 0;
    cp_async_16(s + r * Tiles<kD>::kStride + col, valid ? g + gr * stride + col : g, int(valid * sizeof(T)));
  }
}

// ------------------------------------------------------- warp-level MMAs --
// acc[n][*] += A Bᵀ for one warp: A is the warp's 16 rows (smem, row-major,
// kK columns from column 0), B is kN rows (smem, row-major, same columns):
// both are "k-contiguous", so A loads with ldmatrix and Bᵀ with plain
// ldmatrix too (its rows are the mma's B columns). acc: kN / 8 C fragments.
template <class T, int kK, int kN>
__device__ __forceinline__ void mma_abt(float (&acc)[kN / 8][4], const T* a, int lda, const T* b, int ldb) {
  const int lane = threadIdx.x % 32, m = lane / 8;
#pragma unroll
  for (int kk = 0; kk < kK; kk += 16) {
    uint32_t af[4];
    // x4: lanes 0-15 rows 0-15 at kk, lanes 16-31 rows 0-15 at kk + 8 -> a0..a3
    ldmatrix_x4(af, a + (lane % 16) * lda + kk + (lane / 16) * 8);
#pragma unroll
    for (int nj = 0; nj < kN / 16; ++nj) {
      // matrices (rows +0 | +8) x (k +0 | +8): b0 b1 of n-tile 2nj, then of 2nj + 1
      uint32_t r[4];
      ldmatrix_x4(r, b + (nj * 16 + (m / 2) * 8 + lane % 8) * ldb + kk + (m % 2) * 8);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_m16n8k16<T>(acc[2 * nj], af, b0, acc[2 * nj]);
      mma_m16n8k16<T>(acc[2 * nj + 1], af, b1, acc[2 * nj + 1]);
    }
  }
}

// The A fragments of a 16 x 16 block of an fp32 C-fragment tile (kb-th pair
// of n-tiles), rounded to T: an accumulator becomes the next product's A
// without leaving registers (c0 c1 | c2 c3 of n-tiles 2kb, 2kb + 1 are
// exactly a0 | a1 | a2 | a3).
template <class T>
__device__ __forceinline__ void c_to_a(uint32_t (&af)[4], const float (&c0)[4], const float (&c1)[4]) {
  af[0] = pack2(from_float<T>(c0[0]), from_float<T>(c0[1]));
  af[1] = pack2(from_float<T>(c0[2]), from_float<T>(c0[3]));
  af[2] = pack2(from_float<T>(c1[0]), from_float<T>(c1[1]));
  af[3] = pack2(from_float<T>(c1[2]), from_float<T>(c1[3]));
}

// acc[n][*] += P B for one warp: P (16 x kK) is in registers as C fragments
// (kK / 8 tiles), B is kK rows x kN columns in smem, row-major ("n-contiguous",
// so it loads with ldmatrix .trans).
template <class T, int kK, int kN>
__device__ __forceinline__ void mma_pb(float (&acc)[kN / 8][4], const float (&pc)[kK / 8][4], const T* b, int ldb) {
  const int lane = threadIdx.x % 32, m = lane / 8;
#pragma unroll
  for (int kb = 0; kb < kK / 16; ++kb) {
    uint32_t af[4];
    c_to_a<T>(af, pc[2 * kb], pc[2 * kb + 1]);
#pragma unroll
    for (int nj = 0; nj < kN / 16; ++nj) {
      // x4.trans: matrices (k +0 | +8) x (n +0 | +8): b0 b1 of n-tile 2nj, then of 2nj + 1
      uint32_t r[4];
      ldmatrix_x4_trans(r, b + (kb * 16 + (m % 2) * 8 + lane % 8) * ldb + nj * 16 + (m / 2) * 8);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_m16n8k16<T>(acc[2 * nj], af, b0, acc[2 * nj]);
      mma_m16n8k16<T>(acc[2 * nj + 1], af, b1, acc[2 * nj + 1]);
    }
  }
}

template <int kN>
__device__ __forceinline__ void zero(float (&acc)[kN][4]) {
#pragma unroll
  for (int n = 0; n < kN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.f;
}

// Fragment coordinates: element e of n-tile n of a C fragment sits at row
// (lane / 4 + 8 (e / 2)) and column (8 n + 2 (lane % 4) + e % 2) of the warp's tile.
__device__ __forceinline__ int c_row(int e) { return (threadIdx.x % 32) / 4 + 8 * (e / 2); }
__device__ __forceinline__ int c_col(int n, int e) { return 8 * n + 2 * (threadIdx.x % 4) + (e % 2); }

// Stores a warp's 16 x kD fp32 C-fragment tile times row_scale[rr] as T into
// rows [row0, row0 + 16) of a (nrows, D) matrix (rows >= nrows, columns >= D
// skipped).
template <class T, int kD>
__device__ __forceinline__ void store_rows(T* g, int64_t stride, int64_t row0, int64_t nrows, int D,
                                           const float (&acc)[kD / 8][4], const float (&row_scale)[2]) {
#pragma unroll
  for (int n = 0; n < kD / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + c_row(e);
      const int col = c_col(n, e);
      if (row < nrows && col < D) g[row * stride + col] = from_float<T>(acc[n][e] * row_scale[e / 2]);
    }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Scaled logits (log2 units) of a warp's 16 x kN score tile whose row 0 is
// query i0 and column 0 key j0; keys query i does not see become -inf.
// A logit (log2 units) plus the mask's term: a masked-out key gives -inf
// even when its logit is NaN (a NaN key no query may see reaches nothing).
__device__ __forceinline__ float masked_logit(float x, float term) {
  return term == -INFINITY ? -INFINITY : x + term * kLog2e;
}

// With attn_mask, its term is added (rows i >= Nq, padding, read nothing).
template <int kN>
__device__ __forceinline__ void scale_and_mask(float (&s)[kN / 8][4], float scale_log2, bool masked,
                                               const KeyRange& r, const MaskRef<float>& mask, int64_t Nq,
                                               int64_t i0, int64_t j0) {
#pragma unroll
  for (int n = 0; n < kN / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float x = s[n][e] * scale_log2;
      if (masked) {
        const int64_t i = i0 + c_row(e), j = j0 + c_col(n, e);
        if (!r.sees(i, j)) x = -INFINITY;
        else if (mask.any() && i < Nq) x = masked_logit(x, mask.term(i, j));
      }
      s[n][e] = x;
    }
}

// Whether every query of [i0, i1] sees every key of [j0, j0 + n): then the
// tile needs no per-element mask (the common case off the diagonal).
__device__ __forceinline__ bool tile_needs_mask(const KeyRange& r, int64_t i0, int64_t i1, int64_t j0, int n) {
  return !(j0 >= r.lo(i1) && j0 + n <= r.hi(i0));
}

// A row's LSE in log2 units for recomputing P = exp2(x - lse2); a row that
// sees no key (lse = -inf) gets +inf so that its P is exactly 0, never NaN.
__device__ __forceinline__ float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

// ================================================================ forward ==
// Grid (query tiles, B·Hq); the tile's key range [kv_lo, kv_hi) skips every
// key tile above the causal diagonal or outside the window.
template <class T, int kD>
__global__ void __launch_bounds__(kThreads) fwd_kernel(AttnFwdParams<uint16_t> p) {
  using Tl = Tiles<kD>;
  constexpr int kN = Tl::kFwdN, kS = Tl::kStride;
  T* sQ = reinterpret_cast<T*>(attn_smem);
  T* sK = sQ + Tl::kRows * kS;   // 2 stages
  T* sV = sK + 2 * kN * kS;      // 2 stages
  const int warp = threadIdx.x / 32, D = int(p.s.D);
  const int64_t m0 = int64_t(blockIdx.x) * Tl::kRows, Nq = p.s.Nq, Nk = p.s.Nk;
  const int64_t b = blockIdx.y / p.s.Hq, h = blockIdx.y % p.s.Hq, hk = h / (p.s.Hq / p.s.Hkv);
  const T* q = reinterpret_cast<const T*>(p.q) + b * p.q_st.b + h * p.q_st.h;
  const T* k = reinterpret_cast<const T*>(p.k) + b * p.k_st.b + hk * p.k_st.h;
  const T* v = reinterpret_cast<const T*>(p.v) + b * p.v_st.b + hk * p.v_st.h;
  const KeyRange r(p.s);
  const MaskRef<float> mask(p.mask, b, h);
  const int64_t i_last = (m0 + Tl::kRows < Nq ? m0 + Tl::kRows : Nq) - 1;
  const int64_t kv_lo = r.lo(m0) / kN * kN, kv_hi = r.hi(i_last);
  const int ntiles = kv_hi > kv_lo ? int((kv_hi - kv_lo + kN - 1) / kN) : 0;
  const float scale_log2 = float(p.s.scale * 1.4426950408889634);
  const int64_t wrow0 = m0 + warp * 16;  // the warp's first query

  float o[kD / 8][4];
  zero(o);
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  if (ntiles > 0) {
    load_rows<T, kD, Tl::kRows>(sQ, q, p.q_st.n, m0, Nq, D);
    load_rows<T, kD, kN>(sK, k, p.k_st.n, kv_lo, Nk, D);
    load_rows<T, kD, kN>(sV, v, p.v_st.n, kv_lo, Nk, D);
    cp_async_commit();
  }
  for (int t = 0; t < ntiles; ++t) {
    const int64_t n0 = kv_lo + int64_t(t) * kN;
    if (t + 1 < ntiles) {
      load_rows<T, kD, kN>(sK + ((t + 1) % 2) * kN * kS, k, p.k_st.n, n0 + kN, Nk, D);
      load_rows<T, kD, kN>(sV + ((t + 1) % 2) * kN * kS, v, p.v_st.n, n0 + kN, Nk, D);
    }
    cp_async_commit();  // (possibly empty: "all but the newest group" is still tile t)
    cp_async_wait<1>();
    __syncthreads();
    const T* sKt = sK + (t % 2) * kN * kS;
    const T* sVt = sV + (t % 2) * kN * kS;

    float s[kN / 8][4];
    zero(s);
    mma_abt<T, kD, kN>(s, sQ + warp * 16 * kS, kS, sKt, kS);
    const bool masked = mask.any() || n0 + kN > Nk || tile_needs_mask(r, m0, i_last, n0, kN);
    scale_and_mask<kN>(s, scale_log2, masked, r, mask, Nq, wrow0, n0);

    // Online softmax: rescale what was accumulated by exp2(old max - new max).
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < kN / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * rr], s[n][2 * rr + 1]));
      const float new_max = fmaxf(row_max[rr], quad_max(mx));
      const float base = new_max == -INFINITY ? 0.f : new_max;  // a row with nothing seen yet stays at 0
      const float corr = exp2f(row_max[rr] - base);
      row_max[rr] = new_max;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kN / 8; ++n) {
        s[n][2 * rr] = exp2f(s[n][2 * rr] - base);
        s[n][2 * rr + 1] = exp2f(s[n][2 * rr + 1] - base);
        sum += s[n][2 * rr] + s[n][2 * rr + 1];
      }
      row_sum[rr] = row_sum[rr] * corr + sum;
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) o[n][2 * rr] *= corr, o[n][2 * rr + 1] *= corr;
    }
    mma_pb<T, kN, kD>(o, s, sVt, kS);
    __syncthreads();  // every warp is done with stage t % 2 before iteration t + 1 refills it
  }

  // Epilogue: O / l and the LSE; a row that saw no key gets zeros and -inf.
  float inv[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float l = quad_sum(row_sum[rr]);
    inv[rr] = l > 0.f ? 1.f / l : 0.f;
    const int64_t i = wrow0 + c_row(2 * rr);
    if (threadIdx.x % 4 == 0 && i < Nq) {
      const int64_t at = b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n;
      p.lse[at] = l > 0.f ? (row_max[rr] + log2f(l)) * kLn2 : -INFINITY;
      p.lse_lo[at] = 0.f;
    }
  }
  T* out = reinterpret_cast<T*>(p.out) + b * p.o_st.b + h * p.o_st.h;
  store_rows<T, kD>(out, p.o_st.n, wrow0, Nq, D, o, inv);
}

// =============================================================== backward ==
// delta = rowsum(dO ∘ O) in fp32, one warp per row.
template <class T>
__global__ void __launch_bounds__(kThreads) bwd_delta_kernel(AttnBwdParams<uint16_t> p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;  // over (B, Hq, Nq)
  const int64_t rows = p.s.B * p.s.Hq * p.s.Nq;
  if (row >= rows) return;
  const int64_t i = row % p.s.Nq, bh = row / p.s.Nq, b = bh / p.s.Hq, h = bh % p.s.Hq;
  const T* o = reinterpret_cast<const T*>(p.out) + b * p.o_st.b + h * p.o_st.h + i * p.o_st.n;
  const T* g = reinterpret_cast<const T*>(p.grad_out) + b * p.do_st.b + h * p.do_st.h + i * p.do_st.n;
  float acc = 0.f;
  for (int64_t d = lane; d < p.s.D; d += 32) acc += to_float(o[d]) * to_float(g[d]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) p.delta[row] = acc;
}

// dK, dV: grid (key tiles of 64, B·Hkv). Each warp owns 16 keys and keeps
// their dK, dV rows in registers while the block streams the query tiles of
// every query head of its group (GQA sums over the group on chip, no
// atomics). In the transposed frame (rows = keys):
//   Sᵀ = K Qᵀ, Pᵀ = exp2(Sᵀ·scale·log2e − lse2), dV += Pᵀ dO,
//   dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − delta), dK += dSᵀ Q   (· scale at the end)
template <class T, int kD>
__global__ void __launch_bounds__(kThreads) bwd_dkdv_kernel(AttnBwdParams<uint16_t> p) {
  using Tl = Tiles<kD>;
  constexpr int kM = Tl::kBwdM, kS = Tl::kStride, kN = Tl::kRows;
  T* sK = reinterpret_cast<T*>(attn_smem);
  T* sV = sK + kN * kS;
  T* sQ = sV + kN * kS;       // 2 stages
  T* sG = sQ + 2 * kM * kS;   // dO, 2 stages
  float* sL = reinterpret_cast<float*>(sG + 2 * kM * kS);  // lse2, 2 stages
  float* sDelta = sL + 2 * kM;                              // delta, 2 stages
  const int warp = threadIdx.x / 32, D = int(p.s.D);
  const int64_t n0 = int64_t(blockIdx.x) * kN, Nq = p.s.Nq, Nk = p.s.Nk;
  const int64_t b = blockIdx.y / p.s.Hkv, hk = blockIdx.y % p.s.Hkv, group = p.s.Hq / p.s.Hkv;
  const T* k = reinterpret_cast<const T*>(p.k) + b * p.k_st.b + hk * p.k_st.h;
  const T* v = reinterpret_cast<const T*>(p.v) + b * p.v_st.b + hk * p.v_st.h;
  const KeyRange r(p.s);
  const int64_t j_last = (n0 + kN < Nk ? n0 + kN : Nk) - 1;
  int64_t qlo, qhi;
  r.queries_of(n0, j_last + 1, Nq, qlo, qhi);
  qlo = qlo / kM * kM;
  const int per_head = qhi > qlo ? int((qhi - qlo + kM - 1) / kM) : 0;
  const int ntiles = per_head * int(group);
  const float scale_log2 = float(p.s.scale * 1.4426950408889634);
  const int64_t wkey0 = n0 + warp * 16;

  float dk[kD / 8][4], dv[kD / 8][4];
  zero(dk);
  zero(dv);

  // Tile t: query head hk·group + t / per_head, queries from qlo + (t % per_head)·kM.
  auto issue = [&](int t, int stage) {
    const int64_t h = hk * group + t / per_head, i0 = qlo + int64_t(t % per_head) * kM;
    const T* q = reinterpret_cast<const T*>(p.q) + b * p.q_st.b + h * p.q_st.h;
    const T* g = reinterpret_cast<const T*>(p.grad_out) + b * p.do_st.b + h * p.do_st.h;
    // A query that sees no key (lse = -inf) adds nothing to dK; its row of Q
    // is loaded as zeros so that 0 · (-inf) in a -inf query cannot make a NaN.
    const float* lse = p.lse + b * p.lse_st.b + h * p.lse_st.h;
    const int64_t lse_n = p.lse_st.n;
    load_rows<T, kD, kM>(sQ + stage * kM * kS, q, p.q_st.n, i0, Nq, D,
                         [=](int64_t i) { return lse[i * lse_n] == -INFINITY; });
    load_rows<T, kD, kM>(sG + stage * kM * kS, g, p.do_st.n, i0, Nq, D);
    for (int c = threadIdx.x; c < kM; c += kThreads) {  // plain loads: visible after the next barrier
      const int64_t i = i0 + c;
      const bool in = i < Nq;
      sL[stage * kM + c] = in ? lse_log2(p.lse[b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n]) : INFINITY;
      sDelta[stage * kM + c] = in ? p.delta[(b * p.s.Hq + h) * Nq + i] : 0.f;
    }
  };

  if (ntiles > 0) {
    load_rows<T, kD, kN>(sK, k, p.k_st.n, n0, Nk, D);
    load_rows<T, kD, kN>(sV, v, p.v_st.n, n0, Nk, D);
    issue(0, 0);
    cp_async_commit();
  }
  for (int t = 0; t < ntiles; ++t) {
    const int64_t i0 = qlo + int64_t(t % per_head) * kM;
    if (t + 1 < ntiles) issue(t + 1, (t + 1) % 2);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int st = t % 2;
    const T* sQt = sQ + st * kM * kS;
    const T* sGt = sG + st * kM * kS;

    float pt[kM / 8][4];  // Sᵀ, then Pᵀ, then dSᵀ
    zero(pt);
    mma_abt<T, kD, kM>(pt, sK + warp * 16 * kS, kS, sQt, kS);
    const int64_t i_last = (i0 + kM < Nq ? i0 + kM : Nq) - 1;
    const int64_t h = hk * group + t / per_head;
    const MaskRef<float> mask(p.mask, b, h);
    const bool masked = mask.any() || j_last + 1 - n0 < kN || !(n0 >= r.lo(i_last) && j_last + 1 <= r.hi(i0)) ||
                        i0 + kM > Nq;
#pragma unroll
    for (int n = 0; n < kM / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = wkey0 + c_row(e), i = i0 + c_col(n, e);
        float x = pt[n][e] * scale_log2 - sL[st * kM + c_col(n, e)];
        if (masked) {
          if (!(j < Nk && r.sees(i, j))) x = -INFINITY;
          else if (mask.any() && i < Nq) x = masked_logit(x, mask.term(i, j));
        }
        pt[n][e] = exp2f(x);
      }
    mma_pb<T, kM, kD>(dv, pt, sGt, kS);

    float dpt[kM / 8][4];
    zero(dpt);
    mma_abt<T, kD, kM>(dpt, sV + warp * 16 * kS, kS, sGt, kS);
#pragma unroll
    for (int n = 0; n < kM / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) pt[n][e] *= dpt[n][e] - sDelta[st * kM + c_col(n, e)];
    mma_pb<T, kM, kD>(dk, pt, sQt, kS);
    __syncthreads();  // stage st is free for the refill of iteration t + 1
  }

  const float one[2] = {1.f, 1.f}, scale[2] = {float(p.s.scale), float(p.s.scale)};
  T* gk = reinterpret_cast<T*>(p.grad_k) + b * p.dk_st.b + hk * p.dk_st.h;
  T* gv = reinterpret_cast<T*>(p.grad_v) + b * p.dv_st.b + hk * p.dv_st.h;
  store_rows<T, kD>(gk, p.dk_st.n, wkey0, Nk, D, dk, scale);
  store_rows<T, kD>(gv, p.dv_st.n, wkey0, Nk, D, dv, one);
}

// (Its set-up repeats the forward's on purpose: one struct holding both cost
// registers, a 32-byte spill in dQ d64 and 170 -> 208 registers in the sm_80
// forward d128.)
// dQ: grid (query tiles, B·Hq), the forward's loop with one more product:
//   S = Q Kᵀ, P = exp2(S·scale·log2e − lse2), dP = dO Vᵀ, dS = P ∘ (dP − delta),
//   dQ += dS K   (· scale at the end)
template <class T, int kD>
__global__ void __launch_bounds__(kThreads) bwd_dq_kernel(AttnBwdParams<uint16_t> p) {
  using Tl = Tiles<kD>;
  constexpr int kN = Tl::kFwdN, kS = Tl::kStride;
  T* sQ = reinterpret_cast<T*>(attn_smem);
  T* sG = sQ + Tl::kRows * kS;
  T* sK = sG + Tl::kRows * kS;  // 2 stages
  T* sV = sK + 2 * kN * kS;     // 2 stages
  const int warp = threadIdx.x / 32, D = int(p.s.D);
  const int64_t m0 = int64_t(blockIdx.x) * Tl::kRows, Nq = p.s.Nq, Nk = p.s.Nk;
  const int64_t b = blockIdx.y / p.s.Hq, h = blockIdx.y % p.s.Hq, hk = h / (p.s.Hq / p.s.Hkv);
  const T* q = reinterpret_cast<const T*>(p.q) + b * p.q_st.b + h * p.q_st.h;
  const T* g = reinterpret_cast<const T*>(p.grad_out) + b * p.do_st.b + h * p.do_st.h;
  const T* k = reinterpret_cast<const T*>(p.k) + b * p.k_st.b + hk * p.k_st.h;
  const T* v = reinterpret_cast<const T*>(p.v) + b * p.v_st.b + hk * p.v_st.h;
  const KeyRange r(p.s);
  const MaskRef<float> mask(p.mask, b, h);
  const int64_t i_last = (m0 + Tl::kRows < Nq ? m0 + Tl::kRows : Nq) - 1;
  const int64_t kv_lo = r.lo(m0) / kN * kN, kv_hi = r.hi(i_last);
  const int ntiles = kv_hi > kv_lo ? int((kv_hi - kv_lo + kN - 1) / kN) : 0;
  const float scale_log2 = float(p.s.scale * 1.4426950408889634);
  const int64_t wrow0 = m0 + warp * 16;

  float lse2[2], delta[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t i = wrow0 + c_row(2 * rr);
    const bool in = i < Nq;
    lse2[rr] = in ? lse_log2(p.lse[b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n]) : INFINITY;
    delta[rr] = in ? p.delta[(b * p.s.Hq + h) * Nq + i] : 0.f;
  }
  float dq[kD / 8][4];
  zero(dq);

  if (ntiles > 0) {
    load_rows<T, kD, Tl::kRows>(sQ, q, p.q_st.n, m0, Nq, D);
    load_rows<T, kD, Tl::kRows>(sG, g, p.do_st.n, m0, Nq, D);
    load_rows<T, kD, kN>(sK, k, p.k_st.n, kv_lo, Nk, D);
    load_rows<T, kD, kN>(sV, v, p.v_st.n, kv_lo, Nk, D);
    cp_async_commit();
  }
  for (int t = 0; t < ntiles; ++t) {
    const int64_t n0 = kv_lo + int64_t(t) * kN;
    if (t + 1 < ntiles) {
      load_rows<T, kD, kN>(sK + ((t + 1) % 2) * kN * kS, k, p.k_st.n, n0 + kN, Nk, D);
      load_rows<T, kD, kN>(sV + ((t + 1) % 2) * kN * kS, v, p.v_st.n, n0 + kN, Nk, D);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* sKt = sK + (t % 2) * kN * kS;
    const T* sVt = sV + (t % 2) * kN * kS;

    float s[kN / 8][4];  // S, then P, then dS
    zero(s);
    mma_abt<T, kD, kN>(s, sQ + warp * 16 * kS, kS, sKt, kS);
    const bool masked = mask.any() || n0 + kN > Nk || tile_needs_mask(r, m0, i_last, n0, kN);
    scale_and_mask<kN>(s, scale_log2, masked, r, mask, Nq, wrow0, n0);
#pragma unroll
    for (int n = 0; n < kN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = exp2f(s[n][e] - lse2[e / 2]);
    float dp[kN / 8][4];
    zero(dp);
    mma_abt<T, kD, kN>(dp, sG + warp * 16 * kS, kS, sVt, kS);
#pragma unroll
    for (int n = 0; n < kN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] *= dp[n][e] - delta[e / 2];
    mma_pb<T, kN, kD>(dq, s, sKt, kS);
    __syncthreads();
  }
  const float scale[2] = {float(p.s.scale), float(p.s.scale)};
  T* gq = reinterpret_cast<T*>(p.grad_q) + b * p.dq_st.b + h * p.dq_st.h;
  store_rows<T, kD>(gq, p.dq_st.n, wrow0, Nq, D, dq, scale);
}

// ============================================================== launchers ==
inline unsigned grid_dim(int64_t n, const char* what) {
  if (n > 2147483647 || n < 1) throw std::invalid_argument(std::string("fusedseq attention: ") + what + " out of range");
  return unsigned(n);
}
inline unsigned grid_y(int64_t n) {
  if (n > 65535) throw std::invalid_argument("fusedseq attention: B * heads must be at most 65535 on CUDA");
  return unsigned(n);
}

// Defined in attention_{fwd,bwd}_d<D>.cu, one head dim each.
template <int kD>
void launch_forward(const AttnFwdParams<uint16_t>& p, AttnDtype dtype, void* stream);
template <int kD>
void launch_backward(const AttnBwdParams<uint16_t>& p, AttnDtype dtype, void* stream);
#define FUSEDSEQ_ATTENTION_DECLARE(D)                                                   \
  template <>                                                                           \
  void launch_forward<D>(const AttnFwdParams<uint16_t>& p, AttnDtype dtype, void* stream); \
  template <>                                                                           \
  void launch_backward<D>(const AttnBwdParams<uint16_t>& p, AttnDtype dtype, void* stream);
FUSEDSEQ_ATTENTION_DECLARE(32)
FUSEDSEQ_ATTENTION_DECLARE(64)
FUSEDSEQ_ATTENTION_DECLARE(96)
FUSEDSEQ_ATTENTION_DECLARE(128)
FUSEDSEQ_ATTENTION_DECLARE(256)
#undef FUSEDSEQ_ATTENTION_DECLARE

template <class T, int kD>
void launch_forward_t(const AttnFwdParams<uint16_t>& p, void* stream) {
  using Tl = Tiles<kD>;
  const dim3 grid(grid_dim((p.s.Nq + Tl::kRows - 1) / Tl::kRows, "query tiles"), grid_y(p.s.B * p.s.Hq));
  launch(fwd_kernel<T, kD>, {grid, dim3(kThreads), Tl::kFwdSmem, stream}, p);
}

template <class T, int kD>
void launch_backward_t(const AttnBwdParams<uint16_t>& p, void* stream) {
  using Tl = Tiles<kD>;
  const int64_t rows = p.s.B * p.s.Hq * p.s.Nq;
  launch(bwd_delta_kernel<T>, {dim3(grid_dim((rows + kWarps - 1) / kWarps, "rows")), dim3(kThreads), 0, stream}, p);
  const dim3 gkv(grid_dim((p.s.Nk + Tl::kRows - 1) / Tl::kRows, "key tiles"), grid_y(p.s.B * p.s.Hkv));
  launch(bwd_dkdv_kernel<T, kD>, {gkv, dim3(kThreads), Tl::kDkvSmem, stream}, p);
  const dim3 gq(grid_dim((p.s.Nq + Tl::kRows - 1) / Tl::kRows, "query tiles"), grid_y(p.s.B * p.s.Hq));
  launch(bwd_dq_kernel<T, kD>, {gq, dim3(kThreads), Tl::kDqSmem, stream}, p);
}

}  // namespace fusedseq::cuda::attn

// The body of attention_{fwd,bwd}_d<D>.cu: one head dim's launchers, bf16 and fp16.
#define FUSEDSEQ_ATTENTION_FWD_INSTANCE(D)                                                                \
  template <>                                                                                             \
  void launch_forward<D>(const AttnFwdParams<uint16_t>& p, AttnDtype dtype, void* stream) {              \
    if (dtype == AttnDtype::BF16) launch_forward_t<bf16, D>(p, stream);                                   \
    else launch_forward_t<fp16, D>(p, stream);                                                            \
  }
#define FUSEDSEQ_ATTENTION_BWD_INSTANCE(D)                                                                \
  template <>                                                                                             \
  void launch_backward<D>(const AttnBwdParams<uint16_t>& p, AttnDtype dtype, void* stream) {             \
    if (dtype == AttnDtype::BF16) launch_backward_t<bf16, D>(p, stream);                                  \
    else launch_backward_t<fp16, D>(p, stream);                                                           \
  }
