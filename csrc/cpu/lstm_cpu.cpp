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
// The side products. Where the binding passes x (fp32 on AVX2) the kernel
// also computes the input projection x W_ihᵀ (forward) and dx = dz W_ih
// (backward) in chunks of steps, with the same register tiles; on up to two
// threads it runs them beside the recurrence instead of splitting each step
// (step_pipeline.h: one thread steps, the other projects ahead of it or
// computes dx behind it), which at T=200, B=16, I=H=256 on this 2-core
// machine took the forward from parity with nn.LSTM to 1.13-1.22x
// (benchmarks/NOTES.md). On up to two threads the backward's weight
// gradients join dx there (weight_grad_chunks.h): the worker starts on them
// while the steps run, instead of both threads computing them after the last
// step, 3-13% off forward+backward in interleaved runs.
//
// Saved for the backward (per step, in the compute dtype): the activated
// gates i, f, g, o (4·B·H) and the cell state c_t (B·H), besides h_t, which
// is the output anyway: 5·B·H values, 20·B·H bytes in fp32.
#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "cpu/gates.h"
#include "cpu/kernels_cpu.h"
#include "cpu/recurrent.h"
#include "cpu/step_pipeline.h"
#include "cpu/weight_grad_chunks.h"

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

// ------------------------------------------------------- the side products --
// The input projection (forward) and dx (backward) go in chunks of steps of
// about 128 rows of x: a chunk's gates (512 KiB at 4H = 1024) are still in
// L2/L3 when its steps read them, and 25 chunks at T = 200, B = 16 keep the
// two threads of a pipeline in step.
inline int64_t steps_per_chunk(int64_t B) { return std::max<int64_t>(1, 128 / B); }

// Rows of x (or dz) per pass over the packed weights inside a chunk: 16 rows
// of 256 floats (16 KiB) stay in L1 while the weight panels stream past, the
// shape of a recurrence step (a whole 128-row chunk per panel re-reads its
// rows from L2 and ran at 69 GFLOP/s against 77-92 in the same test).
constexpr int64_t kRowBlock = 16;

// C = A · W for chunk k of the rows of A (steps_per_chunk(B) steps of B rows
// each), with W (K × N, W(k, n) = w[k·rs + n·cs]) packed once into 16-wide
// panels. The forward's projection is x W_ihᵀ (rs = 1, cs = I), the
// backward's dx is dz W_ih (rs = I, cs = 1).
template <typename T>
class ChunkedProduct {
 public:
  ChunkedProduct(int64_t K, int64_t N, const T* w, int64_t rs, int64_t cs, int64_t T_, int64_t B,
                 const ParallelFor& pf)
      : K_(K), N_(N), rows_(T_ * B), chunk_rows_(steps_per_chunk(B) * B),
        packed_(std::make_unique_for_overwrite<T[]>(panels_size(K, N))) {
    pf(0, div_up(N, kPanel), grain_for(K * kPanel), [&](int64_t p0, int64_t p1) {
      const int64_t c0 = p0 * kPanel, c1 = std::min(N, p1 * kPanel);
      pack_panels<T>(K, c1 - c0, w + c0 * cs, rs, cs, packed_.get() + c0 * K);
    });
  }
  int64_t chunks() const { return div_up(rows_, chunk_rows_); }

  // Chunk k: A is (T·B, K), C is (T·B, N), both row-major.
  void operator()(int64_t k, const T* A, T* C) const {
    const int64_t r1 = std::min(rows_, (k + 1) * chunk_rows_);
    for (int64_t r = k * chunk_rows_; r < r1; r += kRowBlock)
      gemm_nn_packed<T>(std::min(kRowBlock, r1 - r), N_, K_, A + r * K_, K_, 1, packed_.get(), C + r * N_, N_, false);
  }
  // Every chunk, split over threads (the paths that do not pipeline).
  void all(const T* A, T* C, const ParallelFor& pf) const {
    pf(0, chunks(), grain_for(chunk_rows_ * K_ * N_), [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) (*this)(k, A, C);
    });
  }

 private:
  int64_t K_, N_, rows_, chunk_rows_;
  std::unique_ptr<T[]> packed_;
};

// Whether two threads run the recurrence on one and the side product on the
// other (step_pipeline.h) rather than each half of every step: with up to two
// threads, when the recurrence is at most ~1.6x the side product (one thread
// alone on it then takes at most 1.25x an even split; in the forward the
// recurrence thread also helps with the projection when it catches up).
// p.path (FUSEDSEQ_CPU_RNN_PATH, read by the binding) may force either.
inline bool pipelined(RecurrencePath path, int64_t threads, int64_t recurrence_work, int64_t side_work) {
  if (path != RecurrencePath::Auto) return path == RecurrencePath::Pipeline;
  return threads <= 2 && 5 * recurrence_work <= 8 * side_work;
}

// The grain of a two-task pipeline: both tasks on one thread when the whole
// call is too small to share.
inline int64_t pipeline_grain(int64_t total_work) { return total_work >= kMinParallelWork ? 1 : 2; }

// --------------------------------------------------------- sequence forward --
template <typename T>
void lstm_seq_forward(const LstmSeqFwdParams<T>& p, const ParallelFor& pf) {
  const int64_t T_ = p.T_, B = p.B, H = p.H, I = p.I, GH = G * H, BH = B * H;
  const int64_t grain = grain_for(B * G * kUnitChunk * H);
  const std::vector<T> bias = combined_bias(p.b_ih, p.b_hh, GH);
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * G * H * kPanel);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_gate_chunk<T>(p.w_hh, H, G, c, wp.get()); });

  // Step t for the units [j0, j0 + n) of chunk c: the four gate products
  // onto the input projection already in z, then the cell update.
  auto step = [&](int64_t t, int64_t c, int64_t j0, int64_t n) {
    const T* h_prev = t == 0 ? p.h0 : p.out + (t - 1) * BH;
    const T* c_prev = t == 0 ? p.c0 : p.cell + (t - 1) * BH;
    T* z = p.gates + t * B * GH;
    for (int64_t q = 0; q < G; ++q) prefetch_rows(z + q * H + j0, B, GH, n);
    for (int64_t q = 0; q < G; ++q)
      gemm_nn<T>(B, n, H, h_prev, H, 1, gate_panel(wp.get(), H, G, c, q), kPanel, z + q * H + j0, GH, true);
    for (int64_t b = 0; b < B; ++b)
      lstm_forward_row<T>(z + b * GH + j0, H, bias.empty() ? nullptr : bias.data() + j0, c_prev + b * H + j0,
                          p.cell + t * BH + b * H + j0, p.out + t * BH + b * H + j0, n);
  };
  auto split_steps = [&] {
    for (int64_t t = 0; t < T_; ++t)
      for_chunks(pf, H, grain, [&](int64_t c, int64_t j0, int64_t n) { step(t, c, j0, n); });
  };
  if (!p.x) return split_steps();

  // The input projection, chunk by chunk: gates = x W_ihᵀ.
  const ChunkedProduct<T> projection(I, GH, p.w_ih, 1, I, T_, B, pf);
  const int64_t Tc = steps_per_chunk(B), nchunk = projection.chunks();
  auto project = [&](int64_t k) { projection(k, p.x, p.gates); };
  if (!pipelined(p.path, p.threads, H, I)) {
    projection.all(p.x, p.gates, pf);
    return split_steps();
  }
  ChunkQueue queue(nchunk);
  pf(0, 2, pipeline_grain(T_ * B * GH * (H + I)), [&](int64_t task0, int64_t task1) {
    for (int64_t task = task0; task < task1; ++task) {
      if (task == 0) {  // the recurrence, all units of every step on this thread
        for (int64_t t = 0; t < T_; ++t) {
          queue.ensure(t / Tc, project);
          for (int64_t c = 0, j0 = 0; j0 < H; ++c, j0 += kUnitChunk) step(t, c, j0, std::min(kUnitChunk, H - j0));
        }
      } else {  // the projection, ahead of it
        for (int64_t k; (k = queue.claim()) >= 0;) {
          project(k);
          queue.finish(k);
        }
      }
    }
  });
}

// -------------------------------------------------------- sequence backward --
// grad_h0 serves as the running dh_t and grad_c0 as the carried dc until the
// last step overwrites them with their own values.
template <typename T>
void lstm_seq_backward(const LstmSeqBwdParams<T>& p, const ParallelFor& pf) {
  const int64_t B = p.B, H = p.H, I = p.I, GH = G * H, BH = B * H, T_ = p.T_;
  const int64_t grain = grain_for(B * GH * kUnitChunk);
  auto wp = std::make_unique_for_overwrite<T[]>(div_up(H, kUnitChunk) * kPanel * GH);
  for_chunks(pf, H, grain, [&](int64_t c, int64_t, int64_t) { pack_unit_chunk<T>(p.w_hh, H, G, c, wp.get()); });
  T* dh = p.grad_h0;
  T* dc = p.grad_c0;
  // Step t (reverse time) for units [j0, j0 + n).
  auto step = [&](int64_t t, int64_t j0, int64_t n) {
    const T* dz_next = p.grad_gates + (t + 1) * B * GH;  // valid for t < T-1
    T* dz = p.grad_gates + t * B * GH;
    const T* gates = p.gates + t * B * GH;
    const T* c_prev = t == 0 ? p.c0 : p.cell + (t - 1) * BH;
    const T* go = p.grad_out + t * BH;
    const T* gc = p.grad_cell + t * BH;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * H + j0;
      std::copy(go + o, go + o + n, dh + o);
      for (int64_t j = 0; j < n; ++j) dc[o + j] = gc[o + j] + (t == T_ - 1 ? T(0) : dc[o + j]);
    }
    if (t < T_ - 1) gemm_nn<T>(B, n, GH, dz_next, GH, 1, wp.get() + j0 * GH, kPanel, dh + j0, H, true);
    for (int64_t b = 0; b < B; ++b)
      lstm_backward_row<T>(gates + b * GH + j0, H, c_prev + b * H + j0, dh + b * H + j0, dc + b * H + j0,
                           dz + b * GH + j0, n);
  };
  auto split_steps = [&] {
    for (int64_t t = T_ - 1; t >= 0; --t)
      for_chunks(pf, H, grain, [&](int64_t, int64_t j0, int64_t n) { step(t, j0, n); });
  };

  if (!p.grad_x) {
    split_steps();
  } else {
    // The side work of each chunk: dx = dz W_ih (a free item) and, when
    // asked, the chunk's share of the weight gradients (ordered items, one
    // stream per block of dW's columns).
    const ChunkedProduct<T> dx_product(GH, I, p.w_ih, I, 1, T_, B, pf);
    const int64_t Tc = steps_per_chunk(B), nchunk = dx_product.chunks();
    std::optional<ChunkedWeightGrads<T>> weights;
    if (p.grad_w_ih)
      weights.emplace(p.grad_gates, GH, T_ * B, Tc * B,
                      std::vector<WeightGradOperand<T>>{{p.x, 0, p.x, I, p.grad_w_ih},
                                                        {p.h0, B, p.out, H, p.grad_w_hh}},
                      p.grad_b);
    // Item i is the i-th chunk the reverse-time steps finish.
    SideWork work(nchunk, weights ? weights->streams() : 0);
    auto dx_item = [&](int64_t i) { dx_product(nchunk - 1 - i, p.grad_gates, p.grad_x); };
    auto weight_item = [&](int64_t i, int64_t s) { (*weights)(nchunk - 1 - i, s, i == 0); };
    if (!pipelined(p.path, p.threads, H, I)) {
      split_steps();
      work.release(nchunk);
      pf(0, std::max<int64_t>(1, p.threads), 1, [&](int64_t, int64_t) { work.run(dx_item, weight_item, true); });
    } else {
      pf(0, 2, pipeline_grain(T_ * B * GH * (H + I)), [&](int64_t task0, int64_t task1) {
        for (int64_t task = task0; task < task1; ++task) {
          if (task == 0) {  // the recurrence, all units of every step on this thread; then what is left
            work.start();
            for (int64_t t = T_ - 1; t >= 0; --t) {
              for (int64_t j0 = 0; j0 < H; j0 += kUnitChunk) step(t, j0, std::min(kUnitChunk, H - j0));
              if (t % Tc == 0) work.release(nchunk - t / Tc);
            }
            work.stop();
            work.run(dx_item, weight_item, true);
          } else {  // the side work, behind it
            work.run(dx_item, weight_item, false);
          }
        }
      });
    }
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
