// What the gated recurrent kernels (LSTM, GRU) share: how work is split over
// threads, how W_hh is packed so that one thread's gates sit together, and
// the products of a cell's backward.
//
// Work split. As for the Elman RNN, threads split the hidden units into
// chunks of 16 (the width of a gemm_nn register tile). A unit's G gates are
// rows j, H + j, ..., (G-1)H + j of W_hh, so the thread that owns unit j
// computes all of its gates itself and can apply the state update right
// after the product: there is one parallel region per time step and nothing
// else crosses threads. Across the steps of a sequence a thread keeps
// re-reading the same G·16 rows of W_hh, which stay in its core's L2.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/params.h"
#include "cpu/grain.h"
#include "cpu/microkernels.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

// Units per chunk: the 16-wide register tiles of gemm_nn, and the panels.
constexpr int64_t kUnitChunk = kPanel;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Asks for the cache lines of `rows` rows of n <= 16 values (row stride ld)
// to be brought into L1. A step reads its chunk of the input projections and
// saved gates from memory (written long before, megabytes ago) at rows
// kilobytes apart, a pattern the hardware prefetcher does not follow;
// prefetching them before the step's product lets that product hide the
// misses.
template <typename T>
inline void prefetch_rows(const T* p, int64_t rows, int64_t ld, int64_t n) {
#if FUSEDSEQ_AVX2
  for (int64_t r = 0; r < rows; ++r) {
    const char* a = reinterpret_cast<const char*>(p + r * ld);
    _mm_prefetch(a, _MM_HINT_T0);
    _mm_prefetch(a + (n * static_cast<int64_t>(sizeof(T)) - 1), _MM_HINT_T0);  // a row may straddle two lines
  }
#else
  (void)p, (void)rows, (void)ld, (void)n;
#endif
}

// Runs body(c, j0, n) for every chunk c of the H hidden units (units
// [j0, j0 + n)), the chunks split over threads by pf with `grain` chunks at
// least per thread. The split depends only on H, the grain and the thread
// count, so a thread gets the same chunks in every call: what it packs in
// one call it multiplies by in the next ones, from its own cache.
template <typename Body>
inline void for_chunks(const ParallelFor& pf, int64_t H, int64_t grain, Body&& body) {
  pf(0, div_up(H, kUnitChunk), grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * kUnitChunk;
      body(c, j0, std::min(kUnitChunk, H - j0));
    }
  });
}

// ------------------------------------------------------- gate-chunk panels --
// W_hhᵀ for the forward step, (H × G·H) as a product operand, packed as 16-
// wide panels ordered by unit chunk first and gate second: panel (c, q) holds
// columns qH + 16c .. qH + 16c + 15, i.e. gate q of the units of chunk c. The
// G panels of one chunk are adjacent, so a thread's share of W_hh is one
// contiguous block, packed by that thread (pack in the same pf split as the
// steps and the block is first touched by, and cached near, its user).
template <typename T>
inline T* gate_panel(T* wp, int64_t H, int64_t G, int64_t chunk, int64_t gate) {
  return wp + (chunk * G + gate) * H * kPanel;
}

template <typename T>
inline void pack_gate_chunk(const T* w_hh, int64_t H, int64_t G, int64_t chunk, T* wp) {
  const int64_t j0 = chunk * kUnitChunk, n = std::min(kUnitChunk, H - j0);
  for (int64_t q = 0; q < G; ++q)  // B(k, c) = W_hh[qH + j0 + c, k]
    pack_panels<T>(H, n, w_hh + (q * H + j0) * H, 1, H, gate_panel(wp, H, G, chunk, q));
}

// W_hh as stored, (G·H × H), for the backward step dh = dz W_hh: one 16-wide
// panel of all G·H rows per unit chunk.
template <typename T>
inline void pack_unit_chunk(const T* w_hh, int64_t H, int64_t G, int64_t chunk, T* wp) {
  const int64_t j0 = chunk * kUnitChunk, n = std::min(kUnitChunk, H - j0);
  pack_panels<T>(G * H, n, w_hh + j0, H, 1, wp + j0 * G * H);
}

// ------------------------------------------------ a cell's backward products --
// Given the gradients of a cell's pre-activations, dzi (B, R) for the input
// side x W_ihᵀ + b_ih and dzh (B, R) for the hidden side h W_hhᵀ + b_hh
// (R = G·H rows; the same buffer for the LSTM, different in the GRU's n rows):
//   dx = dzi W_ih     dh (+)= dzh W_hh     dW_ih = dziᵀ x     dW_hh = dzhᵀ h
//   db_ih = Σ_b dzi   db_hh = Σ_b dzh
// All four products are gemm_nn: dz and its transpose are read through
// strides, W and x as stored. dh accumulates when `accumulate_dh` (the GRU's
// dh z term is already there).
template <typename T>
struct CellGradProducts {
  const T* dzi; int64_t ldzi;  // (B, R), row stride ldzi
  const T* dzh; int64_t ldzh;  // (B, R), row stride ldzh
  const T* x;     // (B, I)
  const T* h;     // (B, H)
  const T* w_ih;  // (R, I)
  const T* w_hh;  // (R, H)
  T* grad_x;      // (B, I) out
  T* grad_h;      // (B, H) out (or accumulated into)
  T* grad_w_ih;   // (R, I) out
  T* grad_w_hh;   // (R, H) out
  T* grad_b_ih;   // (R) out, or nullptr
  T* grad_b_hh;   // (R) out, or nullptr (may equal grad_b_ih when dzi == dzh)
  int64_t B, I, H, R;
  bool accumulate_dh;
};

template <typename T>
inline void cell_grad_products(const CellGradProducts<T>& a, const ParallelFor& pf) {
  const int64_t B = a.B, I = a.I, H = a.H, R = a.R;
  // Inputs' gradients, split over their columns (I, then H).
  const int64_t cx = div_up(I, kUnitChunk), ch = div_up(H, kUnitChunk);
  pf(0, cx + ch, grain_for(B * R * kUnitChunk), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      if (c < cx) {
        const int64_t j0 = c * kUnitChunk, n = std::min(kUnitChunk, I - j0);
        gemm_nn<T>(B, n, R, a.dzi, a.ldzi, 1, a.w_ih + j0, I, a.grad_x + j0, I, false);
      } else {
        const int64_t j0 = (c - cx) * kUnitChunk, n = std::min(kUnitChunk, H - j0);
        gemm_nn<T>(B, n, R, a.dzh, a.ldzh, 1, a.w_hh + j0, H, a.grad_h + j0, H, a.accumulate_dh);
      }
    }
  });
  // Weights' gradients, split over their rows.
  pf(0, R, grain_for(B * (I + H)), [&](int64_t r0, int64_t r1) {
    const int64_t m = r1 - r0;
    gemm_nn<T>(m, I, B, a.dzi + r0, 1, a.ldzi, a.x, I, a.grad_w_ih + r0 * I, I, false);
    gemm_nn<T>(m, H, B, a.dzh + r0, 1, a.ldzh, a.h, H, a.grad_w_hh + r0 * H, H, false);
    for (int64_t r = r0; r < r1; ++r) {
      T si = 0, sh = 0;
      for (int64_t b = 0; b < B; ++b) {
        si += a.dzi[b * a.ldzi + r];
        sh += a.dzh[b * a.ldzh + r];
      }
      if (a.grad_b_ih) a.grad_b_ih[r] = si;
      if (a.grad_b_hh) a.grad_b_hh[r] = sh;
    }
  });
}

// b_ih + b_hh (either may be null) over n entries, or an empty vector when
// both are null: the combined bias a cell's epilogue adds.
template <typename T>
inline std::vector<T> combined_bias(const T* b_ih, const T* b_hh, int64_t n) {
  std::vector<T> s;
  if (!b_ih && !b_hh) return s;
  s.resize(n);
  for (int64_t k = 0; k < n; ++k) s[k] = (b_ih ? b_ih[k] : T(0)) + (b_hh ? b_hh[k] : T(0));
  return s;
}

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
