// The weight gradients of a recurrence's backward, computed chunk of steps by
// chunk of steps as the backward releases dz, so that they run beside the
// recurrence (step_pipeline.h, SideWork) instead of after it.
//
//   dW (R × N) = Σ over all rows (t, b) of dz_rowᵀ · y_row
//
// with y = x (dW_ih) or y = h_{t-1} (dW_hh), dz the (T·B × R) pre-activation
// gradients (R = 4H for the LSTM), and db = Σ dz_row alongside. Chunk k
// adds dz_kᵀ y_k over its K rows (K = 128 at B = 16).
//
// The columns of dW are cut into blocks of at most kBlockCols; a block is one
// stream of SideWork: its chunks are added one at a time, in the order the
// recurrence releases them, so each element of dW is the same sum in the same
// order on every run, whichever thread computes which chunk. Each chunk's
// K-row partial sum is formed in registers and then added to dW (and db's per
// chunk in a scratch row): a two-level sum, no longer a 3200-term chain.
//
// Operand layout, per item (chunk, block):
//   y_k's block columns are packed into 16-wide panels (K × 16 each), the B
//     operand gemm_nn_packed reads: y's rows are 1 KiB apart at N = 256, and
//     a K-row panel read in place maps to a few L1 sets only;
//   dz_kᵀ is read six rows of dW at a time into a 6 × K micro-panel (3 KiB,
//     stays in L1 while the block's panels stream past): in place, each k of
//     a tile would be a different cache line 4 KiB from the last, all in one
//     L1 set.
// The packing reads each dz_k once per block and y_k's block once: with two
// blocks (I = H = 256) ~5% of the item's time next to its 2·R·K·(N/2) FLOPs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/microkernels.h"
#include "cpu/recurrent.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

// One operand y of the weight gradients: row r of the (T·B × N) matrix is
// head + r·N for r < head_rows, else body + (r - head_rows)·N (h_{t-1}: h0
// for the first B rows, then the outputs), and its gradient grad (R × N).
template <typename T>
struct WeightGradOperand {
  const T* head;
  int64_t head_rows;
  const T* body;
  int64_t N;
  T* grad;
  const T* row(int64_t r) const { return r < head_rows ? head + r * N : body + (r - head_rows) * N; }
};

template <typename T>
class ChunkedWeightGrads {
 public:
  // Columns per block: two blocks at I = H = 256, one stream per thread of a
  // two-thread backward at the end, when both share what is left.
  static constexpr int64_t kBlockCols = 256;

  // dz: (rows × R) row-major; chunks of chunk_rows rows; grad_b (R) or null.
  ChunkedWeightGrads(const T* dz, int64_t R, int64_t rows, int64_t chunk_rows,
                     std::vector<WeightGradOperand<T>> operands, T* grad_b)
      : dz_(dz), R_(R), rows_(rows), chunk_rows_(chunk_rows), ops_(std::move(operands)), grad_b_(grad_b) {
    for (int64_t o = 0; o < static_cast<int64_t>(ops_.size()); ++o)
      for (int64_t c0 = 0; c0 < ops_[o].N; c0 += kBlockCols)
        blocks_.push_back({o, c0, std::min(kBlockCols, ops_[o].N - c0)});
  }
  int64_t streams() const { return static_cast<int64_t>(blocks_.size()); }

  // Chunk k's share of block s; `first` writes dW (and db) instead of adding.
  void operator()(int64_t k, int64_t s, bool first) const {
    const Block& blk = blocks_[s];
    const WeightGradOperand<T>& y = ops_[blk.op];
    const int64_t r0 = k * chunk_rows_, K = std::min(rows_, r0 + chunk_rows_) - r0, w = blk.cols;
    // Per-thread scratch, kept across calls: a fresh buffer of this size
    // would come from mmap, and page faults cost more than the packing.
    thread_local std::vector<T> scratch;
    const int64_t panel_size = div_up(w, kPanel) * kPanel * K;
    if (static_cast<int64_t>(scratch.size()) < panel_size + 6 * K + R_) scratch.resize(panel_size + 6 * K + R_);
    T* bp = scratch.data();
    T* ap = bp + panel_size;
    T* colsum = ap + 6 * K;

    // y_k's columns [c0, c0 + w) as 16-wide panels, zero past w.
    for (int64_t j = 0; j < w; j += kPanel) {
      const int64_t n = std::min(kPanel, w - j);
      T* d = bp + j * K;
      for (int64_t kk = 0; kk < K; ++kk) {
        const T* src = y.row(r0 + kk) + blk.c0 + j;
        std::copy(src, src + n, d + kk * kPanel);
        std::fill(d + kk * kPanel + n, d + (kk + 1) * kPanel, T(0));
      }
    }
    // Six rows of dW at a time: their dz_kᵀ micro-panel, then every panel.
    // db rides with the first block: its chunk sums are taken from the values
    // the packing reads anyway (row 0, then rows 1..K-1 added in order).
    const T* dz = dz_ + r0 * R_;
    const bool sum_b = s == 0 && grad_b_;
    for (int64_t i = 0; i < R_; i += 6) {
      const int64_t m = std::min<int64_t>(6, R_ - i);
      for (int64_t kk = 0; kk < K; ++kk)
        for (int64_t ii = 0; ii < m; ++ii) {
          const T v = dz[kk * R_ + i + ii];
          ap[kk * 6 + ii] = v;
          if (sum_b) colsum[i + ii] = kk == 0 ? v : colsum[i + ii] + v;
        }
      gemm_nn_packed<T>(m, w, K, ap, 1, 6, bp, y.grad + i * y.N + blk.c0, y.N, !first);
    }
    if (sum_b) {
      if (first)
        std::copy(colsum, colsum + R_, grad_b_);
      else
        for (int64_t r = 0; r < R_; ++r) grad_b_[r] += colsum[r];
    }
  }

 private:
  struct Block {
    int64_t op, c0, cols;
  };
  const T* dz_;
  int64_t R_, rows_, chunk_rows_;
  std::vector<WeightGradOperand<T>> ops_;
  T* grad_b_;
  std::vector<Block> blocks_;
};

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
