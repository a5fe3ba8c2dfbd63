// Elman RNN on the CPU: the fused cell and the fused recurrence.
//
// Work split. Every product here has a small M (the batch) and a wide N (the
// hidden units), so threads split N: each thread owns a slice of hidden units
// and, across the time steps of a sequence, keeps re-reading the same slice
// of W_hh, which stays in its core's L2. Per time step that is one parallel
// region; nothing else crosses threads.
#include <vector>

#include "cpu/grain.h"
#include "cpu/kernels_cpu.h"
#include "cpu/microkernels.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
namespace {

// Column chunks are multiples of 16 so that every thread's slice lines up
// with the 16-wide register tiles of gemm_nn.
constexpr int64_t kColChunk = 16;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ------------------------------------------------------------- cell forward --
// One pass: for a 3×4 block of (batch, unit) the tile accumulates x·W_ihᵀ and
// then h·W_hhᵀ into the same registers, reads both rows of W as stored, and
// the epilogue adds both biases and applies the activation.
template <typename T>
void rnn_cell_forward(const RnnCellFwdParams<T>& p, const ParallelFor& pf) {
  const NtSegment<T> seg[2] = {{p.x, p.ld_x, p.w_ih, p.ld_w_ih, p.I}, {p.h, p.ld_h, p.w_hh, p.ld_w_hh, p.H}};
  const bool relu = p.act == Activation::Relu;
  const int64_t nchunks = div_up(p.H, kColChunk);
  pf(0, nchunks, /*grain*/ grain_for(p.B * kColChunk * (p.I + p.H)), [&](int64_t c0, int64_t c1) {
    const int64_t j0 = c0 * kColChunk, j1 = std::min(p.H, c1 * kColChunk);
    // Shift B's rows so that tile column 0 is unit j0.
    NtSegment<T> s[2] = {seg[0], seg[1]};
    s[0].B += j0 * s[0].ldb;
    s[1].B += j0 * s[1].ldb;
    T* out = p.h_next + j0;
    gemm_nt<T>(p.B, j1 - j0, s, 2, out, p.ld_h_next);
    std::vector<T> bias;
    const T* bptr = nullptr;
    if (p.b_ih || p.b_hh) {
      bias.resize(j1 - j0);
      for (int64_t j = j0; j < j1; ++j)
        bias[j - j0] = (p.b_ih ? p.b_ih[j] : T(0)) + (p.b_hh ? p.b_hh[j] : T(0));
      bptr = bias.data();
    }
    for (int64_t b = 0; b < p.B; ++b) bias_act_row<T>(out + b * p.ld_h_next, bptr, j1 - j0, relu);
  });
}

// ------------------------------------------------------------ cell backward --
//   dz = dh' ∘ act'(h')        dx = dz W_ih        dh = dz W_hh
//   dW_ih = dzᵀ x              dW_hh = dzᵀ h       db = Σ_batch dz
// All four products are gemm_nn: dz and its transpose are read through
// strides, W and x as stored.
template <typename T>
void rnn_cell_backward(const RnnCellBwdParams<T>& p, const ParallelFor& pf) {
  const bool relu = p.act == Activation::Relu;
  const int64_t B = p.B, I = p.I, H = p.H;
  for (int64_t b = 0; b < B; ++b) {
    const T* g = p.grad_h_next + b * p.ld_grad_h_next;
    std::copy(g, g + H, p.grad_z + b * H);
    mul_act_grad_row<T>(p.grad_z + b * H, p.h_next + b * p.ld_h_next, H, relu);
  }
  const T* dz = p.grad_z;  // (B, H) contiguous
  // Inputs' gradients: split over their columns (I, then H).
  const int64_t cx = div_up(I, kColChunk), ch = div_up(H, kColChunk);
  pf(0, cx + ch, /*grain*/ grain_for(B * kColChunk * H), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      if (c < cx) {
        const int64_t j0 = c * kColChunk, n = std::min(kColChunk, I - j0);
        gemm_nn<T>(B, n, H, dz, H, 1, p.w_ih + j0, p.ld_w_ih, p.grad_x + j0, p.ld_grad_x, false);
      } else {
        const int64_t j0 = (c - cx) * kColChunk, n = std::min(kColChunk, H - j0);
        gemm_nn<T>(B, n, H, dz, H, 1, p.w_hh + j0, p.ld_w_hh, p.grad_h + j0, p.ld_grad_h, false);
      }
    }
  });
  // Weights' gradients: split over their rows (the hidden units).
  pf(0, H, /*grain*/ grain_for(B * (I + H)), [&](int64_t r0, int64_t r1) {
    const int64_t m = r1 - r0;
    gemm_nn<T>(m, I, B, dz + r0, 1, H, p.x, p.ld_x, p.grad_w_ih + r0 * p.ld_grad_w_ih, p.ld_grad_w_ih, false);
    gemm_nn<T>(m, H, B, dz + r0, 1, H, p.h, p.ld_h, p.grad_w_hh + r0 * p.ld_grad_w_hh, p.ld_grad_w_hh, false);
    if (p.grad_b) {
      for (int64_t r = r0; r < r1; ++r) {
        T s = 0;
        for (int64_t b = 0; b < B; ++b) s += dz[b * H + r];
        p.grad_b[r] = s;
      }
    }
  });
}

// --------------------------------------------------------- sequence forward --
// out[t] arrives holding x_t W_ihᵀ; each step adds h_{t-1} W_hhᵀ into it in
// place, then the biases, and applies the activation while the chunk is still
// in L1. W_hhᵀ is packed once per call (row k = column k of W_hh) so that the
// per-step product streams contiguous rows.
template <typename T>
void rnn_seq_forward(const RnnSeqFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H;
  const bool relu = p.act == Activation::Relu;
  // W_hhᵀ in 16-column panels: B(k, j) = W_hh[j, k].
  std::vector<T> wt(panels_size(H, H));
  pack_panels<T>(H, H, p.w_hh, 1, p.ld_w_hh, wt.data());
  std::vector<T> bias;
  if (p.b_ih || p.b_hh) {
    bias.resize(H);
    for (int64_t j = 0; j < H; ++j) bias[j] = (p.b_ih ? p.b_ih[j] : T(0)) + (p.b_hh ? p.b_hh[j] : T(0));
  }
  const int64_t nchunks = div_up(H, kColChunk);
  const int64_t grain = grain_for(B * kColChunk * H);
  for (int64_t t = 0; t < p.T_; ++t) {
    const T* prev = t == 0 ? p.h0 : p.out + (t - 1) * p.out_st.t;
    const int64_t ld_prev = t == 0 ? p.ld_h0 : p.out_st.b, ld_cur = p.out_st.b;
    T* cur = p.out + t * p.out_st.t;
    pf(0, nchunks, grain, [&](int64_t c0, int64_t c1) {
      const int64_t j0 = c0 * kColChunk, n = std::min(H, c1 * kColChunk) - j0;
      const T* b = bias.empty() ? nullptr : bias.data() + j0;
      gemm_nn_packed<T>(B, n, H, prev, ld_prev, 1, wt.data() + j0 * H, cur + j0, ld_cur, /*accumulate=*/true);
      for (int64_t r = 0; r < B; ++r) bias_act_row<T>(cur + r * ld_cur + j0, b, n, relu);
    });
  }
}

// -------------------------------------------------------- sequence backward --
// Runs the recurrence backwards; the step's product dz_{t+1} W_hh reads W_hh
// (packed into panels once), and the epilogue multiplies by act'(h_t) in the
// same pass.
template <typename T>
void rnn_seq_backward(const RnnSeqBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, T_ = p.T_;
  const bool relu = p.act == Activation::Relu;
  std::vector<T> wp(panels_size(H, H));
  pack_panels<T>(H, H, p.w_hh, p.ld_w_hh, 1, wp.data());
  const int64_t nchunks = div_up(H, kColChunk);
  const int64_t grain = grain_for(B * kColChunk * H);
  for (int64_t t = T_ - 1; t >= 0; --t) {
    const int64_t ld_dz = p.grad_z_st.b, ld_go = p.grad_out_st.b, ld_y = p.out_st.b;
    T* dz = p.grad_z + t * p.grad_z_st.t;
    const T* dz_next = p.grad_z + (t + 1) * p.grad_z_st.t;  // valid for t < T-1
    const T* go = p.grad_out + t * p.grad_out_st.t;
    const T* y = p.out + t * p.out_st.t;
    pf(0, nchunks, grain, [&](int64_t c0, int64_t c1) {
      const int64_t j0 = c0 * kColChunk, n = std::min(H, c1 * kColChunk) - j0;
      for (int64_t b = 0; b < B; ++b) {
        T* row = dz + b * ld_dz + j0;
        const T* g = go + b * ld_go + j0;
        if (t == T_ - 1) {
          const T* gh = p.grad_h_n + b * p.ld_grad_h_n + j0;
          for (int64_t j = 0; j < n; ++j) row[j] = g[j] + gh[j];
        } else {
          std::copy(g, g + n, row);
        }
      }
      if (t < T_ - 1) gemm_nn_packed<T>(B, n, H, dz_next, ld_dz, 1, wp.data() + j0 * H, dz + j0, ld_dz, true);
      for (int64_t b = 0; b < B; ++b) mul_act_grad_row<T>(dz + b * ld_dz + j0, y + b * ld_y + j0, n, relu);
    });
  }
  pf(0, nchunks, grain, [&](int64_t c0, int64_t c1) {
    const int64_t j0 = c0 * kColChunk, n = std::min(H, c1 * kColChunk) - j0;
    gemm_nn_packed<T>(B, n, H, p.grad_z, p.grad_z_st.b, 1, wp.data() + j0 * H, p.grad_h0 + j0, p.ld_grad_h0, false);
  });
}

#define FUSEDSEQ_INSTANTIATE(T)                                                        \
  template void rnn_cell_forward<T>(const RnnCellFwdParams<T>&, const ParallelFor&);   \
  template void rnn_cell_backward<T>(const RnnCellBwdParams<T>&, const ParallelFor&);  \
  template void rnn_seq_forward<T>(const RnnSeqFwdParams<T>&, const ParallelFor&);     \
  template void rnn_seq_backward<T>(const RnnSeqBwdParams<T>&, const ParallelFor&);
FUSEDSEQ_INSTANTIATE(float)
FUSEDSEQ_INSTANTIATE(double)
#undef FUSEDSEQ_INSTANTIATE

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
