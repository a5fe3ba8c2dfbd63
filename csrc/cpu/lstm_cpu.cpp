// LSTM on the CPU: the fused cell and the fused recurrence, forward and
// backward (the gate math is in gates.h, the work split in recurrent.h).
//
// Per time step of the sequence, one parallel region: each thread owns a
// range of 16-unit chunks and, for each, runs the four gate products
// h_{t-1} W_hhᵀ (gemm_nn tiles accumulating onto the step's input
// projection, W_hhᵀ packed once per call with the four gates of a chunk side
// by side), then applies σ/tanh and the cell update to those 16 units while
// they are still in L1. The backward step is the same shape: dh_t for the
// chunk (dz_{t+1} W_hh, W_hh packed once) and the gate gradients in the
// epilogue.
//
// Saved for the backward (per step, in the compute dtype): the activated
// gates i, f, g, o (4·B·H) and the cell state c_t (B·H), besides h_t, which
// is the output anyway: 5·B·H values, 20·B·H bytes in fp32.
#include <memory>

#include "cpu/gates.h"
#include "cpu/kernels_cpu.h"
#include "cpu/recurrent.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
namespace {
constexpr int64_t G = 4;  // gates per unit: i, f, g, o
}  // namespace

// ------------------------------------------------------------- cell forward --
// One pass: per 16-unit chunk and gate, gemm_nt tiles compute x·W_ihᵀ +
// h·W_hhᵀ reading both weights as stored (a one-step call cannot amortise
// packing them); the epilogue adds the biases, applies the activations and
// updates c and h.
template <typename T>
void lstm_cell_forward(const LstmCellFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, I = p.I, H = p.H, GH = G * H;
  const std::vector<T> bias = combined_bias(p.b_ih, p.b_hh, GH);
  for_chunks(pf, H, grain_for(B * G * kUnitChunk * (I + H)), [&](int64_t, int64_t j0, int64_t n) {
    for (int64_t q = 0; q < G; ++q) {
      const int64_t row = q * H + j0;  // first W row of gate q for this chunk
      const NtSegment<T> seg[2] = {{p.x, I, p.w_ih + row * I, I, I}, {p.h, H, p.w_hh + row * H, H, H}};
      gemm_nt<T>(B, n, seg, 2, p.gates + row, GH);
    }
    for (int64_t b = 0; b < B; ++b)
      lstm_forward_row<T>(p.gates + b * GH + j0, H, bias.empty() ? nullptr : bias.data() + j0, p.c + b * H + j0,
                          p.c_next + b * H + j0, p.h_next + b * H + j0, n);
  });
}

// ------------------------------------------------------------ cell backward --
template <typename T>
void lstm_cell_backward(const LstmCellBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, GH = G * H;
  for (int64_t b = 0; b < B; ++b) {
    std::copy(p.grad_c_next + b * H, p.grad_c_next + (b + 1) * H, p.grad_c + b * H);
    lstm_backward_row<T>(p.gates + b * GH, H, p.c + b * H, p.grad_h_next + b * H, p.grad_c + b * H,
                         p.grad_gates + b * GH, H);
  }
  cell_grad_products<T>({p.grad_gates, GH, p.grad_gates, GH, p.x, p.h, p.w_ih, p.w_hh, p.grad_x, p.grad_h,
                         p.grad_w_ih, p.grad_w_hh, p.grad_b, nullptr, B, p.I, H, GH, false},
                        pf);
}

// --------------------------------------------------------- sequence forward --
template <typename T>
void lstm_seq_forward(const LstmSeqFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, GH = G * H, BH = B * H;
  const int64_t grain = grain_for(B * G * kUnitChunk * H);
  const std::vector<T> bias = combined_bias(p.b_ih, p.b_hh, GH);
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * G * H * kPanel);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_gate_chunk<T>(p.w_hh, H, G, c, wp.get()); });
  for (int64_t t = 0; t < p.T_; ++t) {
    const T* h_prev = t == 0 ? p.h0 : p.out + (t - 1) * BH;
    const T* c_prev = t == 0 ? p.c0 : p.cell + (t - 1) * BH;
    T* z = p.gates + t * B * GH;
    T* c_t = p.cell + t * BH;
    T* h_t = p.out + t * BH;
    for_chunks(pf, H, grain, [&](int64_t c, int64_t j0, int64_t n) {
      for (int64_t q = 0; q < G; ++q) prefetch_rows(z + q * H + j0, B, GH, n);
      for (int64_t q = 0; q < G; ++q)
        gemm_nn<T>(B, n, H, h_prev, H, 1, gate_panel(wp.get(), H, G, c, q), kPanel, z + q * H + j0, GH, true);
      for (int64_t b = 0; b < B; ++b)
        lstm_forward_row<T>(z + b * GH + j0, H, bias.empty() ? nullptr : bias.data() + j0, c_prev + b * H + j0,
                            c_t + b * H + j0, h_t + b * H + j0, n);
    });
  }
}

// -------------------------------------------------------- sequence backward --
// grad_h0 serves as the running dh_t and grad_c0 as the carried dc until the
// last step overwrites them with their own values.
template <typename T>
void lstm_seq_backward(const LstmSeqBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, GH = G * H, BH = B * H, T_ = p.T_;
  const int64_t grain = grain_for(B * GH * kUnitChunk);
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * kPanel * GH);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_unit_chunk<T>(p.w_hh, H, G, c, wp.get()); });
  T* dh = p.grad_h0;
  T* dc = p.grad_c0;
  for (int64_t t = T_ - 1; t >= 0; --t) {
    const T* dz_next = p.grad_gates + (t + 1) * B * GH;  // valid for t < T-1
    T* dz = p.grad_gates + t * B * GH;
    const T* gates = p.gates + t * B * GH;
    const T* c_prev = t == 0 ? p.c0 : p.cell + (t - 1) * BH;
    const T* go = p.grad_out + t * BH;
    const T* gc = p.grad_cell + t * BH;
    for_chunks(pf, H, grain, [&](int64_t, int64_t j0, int64_t n) {
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = b * H + j0;
        std::copy(go + o, go + o + n, dh + o);
        for (int64_t j = 0; j < n; ++j) dc[o + j] = gc[o + j] + (t == T_ - 1 ? T(0) : dc[o + j]);
      }
      if (t < T_ - 1) gemm_nn<T>(B, n, GH, dz_next, GH, 1, wp.get() + j0 * GH, kPanel, dh + j0, H, true);
      for (int64_t b = 0; b < B; ++b)
        lstm_backward_row<T>(gates + b * GH + j0, H, c_prev + b * H + j0, dh + b * H + j0, dc + b * H + j0,
                             dz + b * GH + j0, n);
    });
  }
  for_chunks(pf, H, grain, [&](int64_t, int64_t j0, int64_t n) {
    gemm_nn<T>(B, n, GH, p.grad_gates, GH, 1, wp.get() + j0 * GH, kPanel, p.grad_h0 + j0, H, false);
  });
}

#define FUSEDSEQ_INSTANTIATE(T)                                                          \
  template void lstm_cell_forward<T>(const LstmCellFwdParams<T>&, const ParallelFor&);   \
  template void lstm_cell_backward<T>(const LstmCellBwdParams<T>&, const ParallelFor&);  \
  template void lstm_seq_forward<T>(const LstmSeqFwdParams<T>&, const ParallelFor&);     \
  template void lstm_seq_backward<T>(const LstmSeqBwdParams<T>&, const ParallelFor&);
FUSEDSEQ_INSTANTIATE(float)
FUSEDSEQ_INSTANTIATE(double)
#undef FUSEDSEQ_INSTANTIATE

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
