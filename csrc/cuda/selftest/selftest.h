// Self-test kernels of the CUDA layer (torch-free host launchers). They prove,
// on the emulator in CI and on a GPU in tools/gpu_check.sh, that the compat
// primitives do what the kernels assume: tensor-core fragments, cp.async
// pipelines with tails, warp shuffles, block and grid barriers. Each has a CPU
// reference in the tests (tests/test_emulated_selftest.py,
// tests/emulated/selftest_driver.cpp).
//
// Every launcher checks what it needs and throws std::invalid_argument naming
// the field; CUDA and emulator failures come out as std::runtime_error.
#pragma once
#include <cstdint>

namespace fusedseq::cuda::selftest {

enum class Half16 : int32_t { BF16 = 0, FP16 = 1 };

// C (M x N, fp32) = A (M x K) B (K x N), A and B bf16 or fp16, row-major with
// leading dimensions lda, ldb (elements, multiples of 8: rows start 16-byte
// aligned, as cp.async needs) and ldc. Any M, N, K >= 1 (tails zero-filled).
struct GemmParams {
  const void* a;  // (M, K) row stride lda
  const void* b;  // (K, N) row stride ldb
  float* c;       // (M, N) row stride ldc
  int64_t M, N, K, lda, ldb, ldc;
  Half16 dtype;
  void* stream;  // cudaStream_t; ignored by the emulator
};
void gemm(const GemmParams& p);

// y[r, :] = softmax(x[r, :]) for every row; fp32, row strides ldx, ldy.
struct RowSoftmaxParams {
  const float* x;  // (rows, cols)
  float* y;        // (rows, cols)
  int64_t rows, cols, ldx, ldy;
  void* stream;
};
void row_softmax(const RowSoftmaxParams& p);

// The persistent recurrence h_{t+1} = tanh(W h_t), out[t] = h_{t+1}, over a
// grid of `blocks` co-resident blocks (each keeps its H / blocks rows of W in
// shared memory for every step) separated by a grid barrier.
struct PersistentRnnParams {
  const float* w;     // (H, H) row-major
  const float* h0;    // (B, H)
  float* out;         // (steps, B, H)
  unsigned* barrier;  // workspace: one zeroed unsigned int (the grid barrier's counter)
  int64_t B, H, steps;
  int32_t blocks;  // H % blocks == 0
  void* stream;
};
void persistent_rnn(const PersistentRnnParams& p);
inline constexpr int kPersistentRnnBlocks = 8;

// Fragment probes, one warp each: what the hardware (or the emulator) really
// puts in each lane's registers.
//
// ldmatrix: shared memory holds `count` 8x8 matrices of 16-bit codes
// m * 64 + row * 8 + col; lane 8m + r points at row r of matrix m. out[lane *
// 8 + reg * 2 + half] receives the code each lane got (unused registers: -1).
// count is 1, 2 or 4; trans selects .trans.
struct LdmatrixProbeParams {
  int32_t* out;  // (32, 4, 2)
  int32_t count;
  bool trans;
  void* stream;
};
void ldmatrix_probe(const LdmatrixProbeParams& p);

// One mma.m16n8k16: d = a b + c with A (16x16), B (16x8 as K x N) and C
// (16x8) loaded into registers through the fragment maps; row-major, fp32 c/d.
struct MmaProbeParams {
  const void* a;  // (16, 16)
  const void* b;  // (16, 8)
  const float* c;  // (16, 8)
  float* d;        // (16, 8)
  Half16 dtype;
  void* stream;
};
void mma_probe(const MmaProbeParams& p);

}  // namespace fusedseq::cuda::selftest
