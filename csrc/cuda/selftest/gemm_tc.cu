// Self-test: a tensor-core GEMM, C = A B, written the way our real kernels
// are: a 64x64 block tile, four warps of 32x32, K in steps of 32 through a
// double-buffered cp.async pipeline, fragments loaded with ldmatrix (A plain,
// B .trans), mma.sync.m16n8k16 with fp32 accumulators, and tails in M, N and
// K zero-filled by the copies themselves.
//
// Bugs planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>, one at a time):
//   swapped_accumulator     epilogue stores c1 and c2 at each other's place
//   ldmatrix_lane_map       lanes give the A rows of matrices 1 and 2 swapped
//   missing_cp_async_wait   reads the stage without waiting for its copies
//   missing_refill_barrier  refills a stage while other warps still read it
//   global_tail_overread    the M tail still copies rows past the end of A
#include "cuda/compat.cuh"
#include "cuda/selftest/selftest.h"
#include "emu/fragments.h"

namespace fusedseq::cuda::selftest {
namespace {

constexpr int BM = 64, BN = 64, BK = 32;
constexpr int kThreads = 128;                 // 4 warps as 2 x 2, each 32 x 32
constexpr int A_STRIDE = BK + 8, B_STRIDE = BN + 8;  // padded rows, still 16-byte aligned
constexpr int kStageElems = BM * A_STRIDE + BK * B_STRIDE;

FUSEDSEQ_EXTERN_SHARED(unsigned char, gemm_smem);

// Issues the copies of K-tile `kt` into stage `s`: 2 A chunks and 2 B chunks
// of 8 elements per thread; a chunk past M, N or K copies fewer (or no) bytes
// and the rest is zero-filled.
template <class T>
__device__ void load_tile(const GemmParams& p, T* stage, int m0, int n0, int kt) {
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  const int k0 = kt * BK;
  T* As = stage;
  T* Bs = stage + BM * A_STRIDE;
  for (int i = 0; i < 2; ++i) {
    const int c = threadIdx.x + i * kThreads;
    {  // A: 64 rows x 4 chunks
      const int row = c / 4, kc = (c % 4) * 8;
      const int64_t gm = m0 + row, gk = k0 + kc;
#ifdef FUSEDSEQ_MUTANT_global_tail_overread
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(8, p.K - gk));
#else
      const int64_t valid = gm < p.M ? std::max<int64_t>(0, std::min<int64_t>(8, p.K - gk)) : 0;
#endif
      cp_async_16(As + row * A_STRIDE + kc, valid ? A + gm * p.lda + gk : A, int(valid * sizeof(T)));
    }
    {  // B: 32 rows x 8 chunks
      const int row = c / 8, nc = (c % 8) * 8;
      const int64_t gk = k0 + row, gn = n0 + nc;
      const int64_t valid = gk < p.K ? std::max<int64_t>(0, std::min<int64_t>(8, p.N - gn)) : 0;
      cp_async_16(Bs + row * B_STRIDE + nc, valid ? B + gk * p.ldb + gn : B, int(valid * sizeof(T)));
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmParams p) {
  T* smem = reinterpret_cast<T*>(gemm_smem);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // warp's corner in the block tile
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int ktiles = int((p.K + BK - 1) / BK);

  float acc[2][4][4] = {};  // [m16 tile][n8 tile][register]

  load_tile(p, smem, m0, n0, 0);
  cp_async_commit();
  for (int kt = 0; kt < ktiles; ++kt) {
    T* stage = smem + (kt % 2) * kStageElems;
    if (kt + 1 < ktiles) load_tile(p, smem + ((kt + 1) % 2) * kStageElems, m0, n0, kt + 1);
    cp_async_commit();  // (possibly empty: keeps "all but the newest group" meaning tile kt)
#ifndef FUSEDSEQ_MUTANT_missing_cp_async_wait
    cp_async_wait<1>();
#endif
    __syncthreads();
    const T* As = stage;
    const T* Bs = stage + BM * A_STRIDE;
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[2][4], b[4][2];
      for (int mi = 0; mi < 2; ++mi) {
        // x4: lanes 0-15 give rows 0-15 at k, lanes 16-31 rows 0-15 at k + 8
        // (matrices: rows 0-7 / 8-15 x k 0-7 / 8-15 = a0a1, a2a3, a4a5, a6a7).
#ifdef FUSEDSEQ_MUTANT_ldmatrix_lane_map
        const int row = lane % 8 + (lane / 16) * 8, col = ((lane / 8) % 2) * 8;
#else
        const int row = lane % 16, col = (lane / 16) * 8;
#endif
        ldmatrix_x4(a[mi], As + (wm + mi * 16 + row) * A_STRIDE + kk + col);
      }
      for (int nj = 0; nj < 2; ++nj) {
        // x4.trans over B stored (k, n): matrices k 0-7 / 8-15 x n 0-7 / 8-15
        // give b0b1, b2b3 of n-tile 2nj and of n-tile 2nj + 1.
        uint32_t r[4];
        const int m = lane / 8;
        ldmatrix_x4_trans(r, Bs + (kk + (m % 2) * 8 + lane % 8) * B_STRIDE + wn + nj * 16 + (m / 2) * 8);
        b[2 * nj][0] = r[0], b[2 * nj][1] = r[1], b[2 * nj + 1][0] = r[2], b[2 * nj + 1][1] = r[3];
      }
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni) mma_m16n8k16<T>(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
    }
#ifndef FUSEDSEQ_MUTANT_missing_refill_barrier
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
#endif
  }

  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int e = 0; e < 4; ++e) {
#ifdef FUSEDSEQ_MUTANT_swapped_accumulator
        const fragments::RowCol rc{lane / 4 + 8 * (e % 2), 2 * (lane % 4) + e / 2};
#else
        const fragments::RowCol rc = fragments::mma_c(lane, e);
#endif
        const int64_t gm = m0 + wm + mi * 16 + rc.row, gn = n0 + wn + ni * 8 + rc.col;
        if (gm < p.M && gn < p.N) p.c[gm * p.ldc + gn] = acc[mi][ni][e];
      }
}

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("fusedseq selftest gemm: ") + what);
}

}  // namespace

void gemm(const GemmParams& p) {
  require(p.M > 0 && p.N > 0 && p.K > 0, "M, N and K must be positive");
  require(p.lda % 8 == 0 && p.ldb % 8 == 0, "lda and ldb must be multiples of 8 (16-byte rows for cp.async)");
  require(p.lda >= p.K && p.ldb >= p.N && p.ldc >= p.N, "leading dimensions too small");
  require(reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && reinterpret_cast<uintptr_t>(p.b) % 16 == 0,
          "a and b must be 16-byte aligned");
  require((p.M + BM - 1) / BM <= 65535, "M too large for the grid");
  const dim3 grid(unsigned((p.N + BN - 1) / BN), unsigned((p.M + BM - 1) / BM));
  const size_t smem = 2 * kStageElems * 2;  // two stages of 16-bit elements
  if (p.dtype == Half16::BF16)
    launch(gemm_kernel<bf16>, {grid, dim3(kThreads), smem, p.stream}, p);
  else
    launch(gemm_kernel<fp16>, {grid, dim3(kThreads), smem, p.stream}, p);
}

}  // namespace fusedseq::cuda::selftest
