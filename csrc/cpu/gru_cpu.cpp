// GRU on the CPU: the fused cell and the fused recurrence, forward and
// backward, on the same plan as lstm_cpu.cpp (one parallel region per step,
// threads own 16-unit chunks and all their gates).
//
// torch's reset-gate placement, n = tanh(x W_inᵀ + b_in + r ∘ (h W_hnᵀ + b_hn)),
// keeps the n gate's hidden product apart from its input projection: the
// r and z products accumulate onto the step's input projection, the n
// product lands in a fourth slot of the gate row, and the epilogue combines
// them. That slot keeps a = h W_hnᵀ + b_hn for the backward (dL/dr needs it).
//
// Saved for the backward (per step, in the compute dtype): r, z, n and a
// (4·B·H), besides h_t, which is the output anyway: 16·B·H bytes in fp32.
#include <memory>

#include "cpu/gates.h"
#include "cpu/kernels_cpu.h"
#include "cpu/recurrent.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
namespace {
constexpr int64_t G = 3;  // gates per unit: r, z, n
constexpr int64_t S = 4;  // slots per unit in a gate row: r, z, n, a

// dh[:, j0:j0+n] += dz^h W_hh[:, j0:j0+n] for the hidden side of a (B, 4H)
// gradient row, whose n-gate part sits in slot 3, not 2: two products over
// the rows of one packed unit-chunk panel (rows 0..2H: r, z; 2H..3H: n).
template <typename T>
void add_hidden_product(int64_t B, int64_t H, const T* dz, const T* panel, T* dh, int64_t n) {
  gemm_nn<T>(B, n, 2 * H, dz, S * H, 1, panel, kPanel, dh, H, true);
  gemm_nn<T>(B, n, H, dz + 3 * H, S * H, 1, panel + 2 * H * kPanel, kPanel, dh, H, true);
}
}  // namespace

// ------------------------------------------------------------- cell forward --
template <typename T>
void gru_cell_forward(const GruCellFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, I = p.I, H = p.H, SH = S * H;
  const std::vector<T> bias_rz = combined_bias(p.b_ih, p.b_hh, 2 * H);  // b_ir + b_hr, b_iz + b_hz
  for_chunks(pf, H, grain_for(B * G * kUnitChunk * (I + H)), [&](int64_t, int64_t j0, int64_t n) {
    for (int64_t q = 0; q < 2; ++q) {  // r, z: both products summed
      const int64_t row = q * H + j0;
      const NtSegment<T> seg[2] = {{p.x, I, p.w_ih + row * I, I, I}, {p.h, H, p.w_hh + row * H, H, H}};
      gemm_nt<T>(B, n, seg, 2, p.gates + row, SH);
    }
    const int64_t row = 2 * H + j0;  // n: the two products kept apart
    const NtSegment<T> in{p.x, I, p.w_ih + row * I, I, I}, hn{p.h, H, p.w_hh + row * H, H, H};
    gemm_nt<T>(B, n, &in, 1, p.gates + row, SH);
    gemm_nt<T>(B, n, &hn, 1, p.gates + 3 * H + j0, SH);
    for (int64_t b = 0; b < B; ++b)
      gru_forward_row<T>(p.gates + b * SH + j0, H, bias_rz.empty() ? nullptr : bias_rz.data() + j0,
                         p.b_ih ? p.b_ih + row : nullptr, p.b_hh ? p.b_hh + row : nullptr, p.h + b * H + j0,
                         p.h_next + b * H + j0, n);
  });
}

// ------------------------------------------------------------ cell backward --
// grad_gates gets (dz_r, dz_z, dz_n, dz_n r); the hidden side's (dz_r, dz_z,
// dz_n r) is copied to a contiguous (B, 3H) block for the products.
template <typename T>
void gru_cell_backward(const GruCellBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, SH = S * H, GH = G * H;
  std::vector<T> dzh(B * GH);
  for (int64_t b = 0; b < B; ++b) {
    T* dz = p.grad_gates + b * SH;
    gru_backward_row<T>(p.gates + b * SH, H, p.h + b * H, p.grad_h_next + b * H, dz, H);
    std::copy(dz, dz + 2 * H, dzh.data() + b * GH);
    std::copy(dz + 3 * H, dz + 4 * H, dzh.data() + b * GH + 2 * H);
    // dh = dh' z (the path around the products); the products add to it.
    for (int64_t j = 0; j < H; ++j) p.grad_h[b * H + j] = p.grad_h_next[b * H + j] * p.gates[b * SH + H + j];
  }
  cell_grad_products<T>({p.grad_gates, SH, dzh.data(), GH, p.x, p.h, p.w_ih, p.w_hh, p.grad_x, p.grad_h, p.grad_w_ih,
                         p.grad_w_hh, p.grad_b_ih, p.grad_b_hh, B, p.I, H, GH, true},
                        pf);
}

// --------------------------------------------------------- sequence forward --
template <typename T>
void gru_seq_forward(const GruSeqFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, SH = S * H, BH = B * H;
  const int64_t grain = grain_for(B * G * kUnitChunk * H);
  const std::vector<T> bias_rz = combined_bias(p.b_ih, p.b_hh, 2 * H);  // b_ir + b_hr, b_iz + b_hz
  const T* b_in = p.b_ih ? p.b_ih + 2 * H : nullptr;
  const T* b_hn = p.b_hh ? p.b_hh + 2 * H : nullptr;
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * G * H * kPanel);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_gate_chunk<T>(p.w_hh, H, G, c, wp.get()); });
  for (int64_t t = 0; t < p.T_; ++t) {
    const T* h_prev = t == 0 ? p.h0 : p.out + (t - 1) * BH;
    T* z = p.gates + t * B * SH;
    T* h_t = p.out + t * BH;
    for_chunks(pf, H, grain, [&](int64_t c, int64_t j0, int64_t n) {
      for (int64_t q = 0; q < G; ++q) prefetch_rows(z + q * H + j0, B, SH, n);
      for (int64_t q = 0; q < 2; ++q)  // r, z onto their input projections
        gemm_nn<T>(B, n, H, h_prev, H, 1, gate_panel(wp.get(), H, G, c, q), kPanel, z + q * H + j0, SH, true);
      // n: h W_hnᵀ into slot 3
      gemm_nn<T>(B, n, H, h_prev, H, 1, gate_panel(wp.get(), H, G, c, 2), kPanel, z + 3 * H + j0, SH, false);
      for (int64_t b = 0; b < B; ++b)
        gru_forward_row<T>(z + b * SH + j0, H, bias_rz.empty() ? nullptr : bias_rz.data() + j0,
                           b_in ? b_in + j0 : nullptr, b_hn ? b_hn + j0 : nullptr, h_prev + b * H + j0,
                           h_t + b * H + j0, n);
    });
  }
}

// -------------------------------------------------------- sequence backward --
// grad_h0 serves as the running dh_t until the end.
template <typename T>
void gru_seq_backward(const GruSeqBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, SH = S * H, GH = G * H, BH = B * H, T_ = p.T_;
  const int64_t grain = grain_for(B * GH * kUnitChunk);
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * kPanel * GH);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_unit_chunk<T>(p.w_hh, H, G, c, wp.get()); });
  T* dh = p.grad_h0;
  // dh[:, chunk] = extra + dh z_next + dz^h_next W_hh: what flows into h_t
  // from step t+1 (extra: grad_out[t], or nothing for h0).
  auto carry = [&](int64_t j0, int64_t n, const T* extra, const T* gates_next, const T* dz_next) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * H + j0;
      const T* u = gates_next + b * SH + H + j0;
      for (int64_t j = 0; j < n; ++j) dh[o + j] = (extra ? extra[o + j] : T(0)) + dh[o + j] * u[j];
    }
    add_hidden_product<T>(B, H, dz_next, wp.get() + j0 * GH, dh + j0, n);
  };
  for (int64_t t = T_ - 1; t >= 0; --t) {
    T* dz = p.grad_gates + t * B * SH;
    const T* gates = p.gates + t * B * SH;
    const T* h_prev = t == 0 ? p.h0 : p.out + (t - 1) * BH;
    const T* go = p.grad_out + t * BH;
    for_chunks(pf, H, grain, [&](int64_t, int64_t j0, int64_t n) {
      if (t == T_ - 1) {
        for (int64_t b = 0; b < B; ++b) std::copy(go + b * H + j0, go + b * H + j0 + n, dh + b * H + j0);
      } else {
        carry(j0, n, go, gates + B * SH, dz + B * SH);
      }
      for (int64_t b = 0; b < B; ++b)
        gru_backward_row<T>(gates + b * SH + j0, H, h_prev + b * H + j0, dh + b * H + j0, dz + b * SH + j0, n);
    });
  }
  for_chunks(pf, H, grain, [&](int64_t, int64_t j0, int64_t n) { carry(j0, n, nullptr, p.gates, p.grad_gates); });
}

#define FUSEDSEQ_INSTANTIATE(T)                                                        \
  template void gru_cell_forward<T>(const GruCellFwdParams<T>&, const ParallelFor&);   \
  template void gru_cell_backward<T>(const GruCellBwdParams<T>&, const ParallelFor&);  \
  template void gru_seq_forward<T>(const GruSeqFwdParams<T>&, const ParallelFor&);     \
  template void gru_seq_backward<T>(const GruSeqBwdParams<T>&, const ParallelFor&);
FUSEDSEQ_INSTANTIATE(float)
FUSEDSEQ_INSTANTIATE(double)
#undef FUSEDSEQ_INSTANTIATE

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
