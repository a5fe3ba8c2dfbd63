// What the recurrent kernels (csrc/cuda/rnn.cu: Elman; csrc/cuda/gated_rnn.cu:
// LSTM, GRU) share: the warp tile that does every matrix product of a
// recurrent step, the loop that hands a block's tiles to its warps, the
// staging of a block's weight rows in shared memory, and the host-side
// choice between the persistent cooperative kernel and one launch per step.
// Torch-free; included by .cu files only (after cuda/compat.cuh).
//
// The warp tile: a warp computes a kRows x kBatch tile of  Σ_k W[j][k] s[b][k]
// (weight rows j, batch rows b), its lanes striding over k (so a warp reads
// each row of W and of the state s coalesced, and shared memory without bank
// conflicts), then a halving butterfly of 9 shuffles leaves sum v on lanes
// 4v..4v+3 and lane 4v runs the epilogue of element v = r·kBatch + b. Each
// element's sum has the same association whichever warp and tile computes it,
// so the persistent and the per-step kernels agree bit for bit.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "cuda/rnn.h"

namespace fusedseq::cuda::recurrent {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kRows = 2, kBatch = 4;          // a warp's register tile: hidden units x batch rows

// ------------------------------------------------------------ arithmetic --
// (CUDA's min has no int64_t overload on every host compiler's long.)
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Arithmetic type: fp32, fp64 for fp64 storage.
template <class T>
using AccT = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class A, class T>
__device__ __forceinline__ A load(const T* p) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return A(*p);
  else return A(to_float(*p));
}
template <class T, class A>
__device__ __forceinline__ void store(T* p, A v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) *p = T(v);
  else *p = from_float<T>(float(v));
}

// --------------------------------------------------------- the warp tile --
// acc[r][b] += Σ_k rows[r][k] s[b ld_s + k] over this lane's k. Batch rows at
// or past nb re-read row 0 instead (and callers point rows past their count
// at a valid row): their sums are never stored, and the loop keeps no bounds
// tests and no index arithmetic beyond one pointer step per operand.
template <class A, class W, class S>
__device__ __forceinline__ void tile_dot_rows(A (&acc)[kRows][kBatch], const W* const (&rows)[kRows], const S* s,
                                              int64_t ld_s, int nb, int64_t K, int lane) {
  const W* wr[kRows];
  const S* sb[kBatch];
  for (int r = 0; r < kRows; ++r) wr[r] = rows[r] + lane;
  for (int b = 0; b < kBatch; ++b) sb[b] = s + (b < nb ? b : 0) * ld_s + lane;
  for (int64_t k = lane; k < K; k += 32) {
    A wv[kRows], sv[kBatch];
    for (int r = 0; r < kRows; ++r) wv[r] = load<A>(wr[r]), wr[r] += 32;
    for (int b = 0; b < kBatch; ++b) sv[b] = load<A>(sb[b]), sb[b] += 32;
    for (int r = 0; r < kRows; ++r)
      for (int b = 0; b < kBatch; ++b) acc[r][b] += wv[r] * sv[b];
  }
}
// The same over rows w, w + ld_w, ... (nr of them).
template <class A, class W, class S>
__device__ __forceinline__ void tile_dot(A (&acc)[kRows][kBatch], const W* w, int64_t ld_w, int nr, const S* s,
                                         int64_t ld_s, int nb, int64_t K, int lane) {
  const W* rows[kRows];
  for (int r = 0; r < kRows; ++r) rows[r] = w + (r < nr ? r : 0) * ld_w;
  tile_dot_rows(acc, rows, s, ld_s, nb, K, lane);
}

// Sums the tile's 8 accumulators over the warp with 9 shuffles instead of
// 8 x 5: a butterfly that halves what each lane carries at every level
// (lanes with bit 4 set keep values 4..7 and send 0..3 to their partner,
// which keeps 0..3; then bit 3 splits each half, then bit 2). After the
// three halving levels lane l holds value (l >> 2) & 7 summed over 8 lanes;
// the last two levels sum the rest. Returns that sum: lane l owns tile
// element v = l / 4 (row v / kBatch, batch row v % kBatch) when l % 4 == 0.
static_assert(kRows * kBatch == 8, "the reduction below is written for 8 accumulators");
template <class A>
__device__ __forceinline__ A tile_sum_for_lane(A (&acc)[kRows][kBatch], int lane) {
  A v[8];
  for (int r = 0; r < kRows; ++r)
    for (int b = 0; b < kBatch; ++b) v[r * kBatch + b] = acc[r][b];
  for (int half = 4, offset = 16; half >= 1; half /= 2, offset /= 2) {
    const bool upper = (lane & offset) != 0;
    for (int i = 0; i < half; ++i) {
      const A send = upper ? v[i] : v[i + half], keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
    }
  }
  v[0] += __shfl_xor_sync(0xffffffffu, v[0], 2);
  v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
  return v[0];
}

// Runs a block's tiles over units [0, nrows) x batch rows [0, B), the warps
// taking turns: sum(i0, b0, nr, nb, lane) returns this lane's reduced sum of
// the tile at (i0, b0) (tile_sum_for_lane), and epilogue(i, b, v) runs on
// the lane that owns element (i, b).
template <class A, class Sum, class Epilogue>
__device__ __forceinline__ void for_each_tile(int nrows, int64_t B, Sum&& sum, Epilogue&& epilogue) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const bool owner = lane % 4 == 0;  // the element this lane's epilogue owns (tile_sum_for_lane)
  const int mr = (lane / 4) / kBatch, mb = (lane / 4) % kBatch;
  const int tiles_r = (nrows + kRows - 1) / kRows;
  const int64_t tiles = int64_t(tiles_r) * ((B + kBatch - 1) / kBatch);
  for (int64_t tile = warp; tile < tiles; tile += kWarps) {
    const int i0 = int(tile % tiles_r) * kRows;
    const int64_t b0 = (tile / tiles_r) * kBatch;
    const int nr = min(kRows, nrows - i0), nb = int(min64(kBatch, B - b0));
    const A v = sum(i0, b0, nr, nb, lane);
    if (owner && mr < nr && mb < nb) epilogue(i0 + mr, b0 + mb, v);
  }
}

// Copies rows [r0, r0 + nrows) of w (K columns) into shared memory at w_s, packed.
template <class T>
__device__ __forceinline__ const T* stage_rows(T* w_s, const T* w, int64_t ld_w, int64_t r0, int nrows, int64_t K) {
  for (int64_t i = threadIdx.x; i < int64_t(nrows) * K; i += kThreads) w_s[i] = w[(r0 + i / K) * ld_w + i % K];
  __syncthreads();
  return w_s;
}

// ================================================================= host ==
inline void require(bool ok, const char* what, const char* field) {
  if (!ok) throw std::invalid_argument(std::string("fusedseq cuda ") + what + ": " + field);
}

inline unsigned blocks_for(int64_t n, int64_t per_block) {
  const int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks > int64_t(0x7fffffff)) throw std::invalid_argument("fusedseq cuda rnn: too many blocks");
  return unsigned(blocks);
}

// Calls fn.template operator()<T>() with T the storage type of dt.
template <class Fn>
decltype(auto) dispatch(RnnDtype dt, Fn&& fn) {
  switch (dt) {
    case RnnDtype::F32: return fn.template operator()<float>();
    case RnnDtype::F64: return fn.template operator()<double>();
    case RnnDtype::BF16: return fn.template operator()<bf16>();
    case RnnDtype::FP16: return fn.template operator()<fp16>();
  }
  throw std::invalid_argument("fusedseq cuda rnn: unknown dtype");
}

// What the persistent kernels may use: SMs and opt-in shared memory per block.
// The emulator plays a small GPU (8 SMs, an H100's 227 KB) so that tests see
// several blocks, uneven splits and both paths at small H.
struct DeviceLimits {
  int sms;
  int64_t smem_per_block;
  bool cooperative;
};
inline DeviceLimits device_limits() {
#if FUSEDSEQ_EMULATED
  return {8, 227 * 1024, true};
#else
  int device = 0, sms = 0, smem = 0, coop = 0;
  const LaunchConfig cfg(dim3(1), dim3(1));
  check(cudaGetDevice(&device), cfg, "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cfg, "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), cfg,
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device), cfg, "cudaDeviceGetAttribute");
  return {sms, smem, coop != 0};
#endif
}

inline RnnPath choose(RnnPath forced, const RnnPlan& plan, const char* what) {
  if (forced == RnnPath::PerStep) return RnnPath::PerStep;
  if (forced == RnnPath::Persistent && !plan.persistent)
    throw std::runtime_error(std::string("fusedseq cuda ") + what + ": the persistent path was forced but cannot run: " +
                             plan.why);
  return plan.persistent ? RnnPath::Persistent : RnnPath::PerStep;
}

// A cooperative launch that the device refuses (e.g. other work holds SMs)
// falls back to per-step launches when the path was not forced. On the
// emulator every launch error is a bug report and propagates.
template <class Persistent, class PerStep>
RnnPath run(RnnPath forced, const RnnPlan& plan, const char* what, Persistent&& persistent, PerStep&& per_step) {
  RnnPath path = choose(forced, plan, what);
  if (path == RnnPath::Persistent) {
#if FUSEDSEQ_EMULATED
    persistent();
    return path;
#else
    try {
      persistent();
      return path;
    } catch (const std::runtime_error&) {
      if (forced == RnnPath::Persistent) throw;
      (void)cudaGetLastError();  // a refused launch leaves no sticky error; clear the last one
    }
#endif
  }
  per_step();
  return RnnPath::PerStep;
}

// A recurrence: `kernel` as one cooperative launch of plan.blocks blocks of
// kThreads (arguments p and plan.rows_per_block), or per_step() (see run()).
template <class... P, class Params, class PerStep>
RnnPath run_recurrence(RnnPath forced, const RnnPlan& plan, const char* what, const unsigned* grid_barrier,
                       void* stream, void (*kernel)(P...), const Params& p, PerStep&& per_step) {
  return run(
      forced, plan, what,
      [&] {
        require(grid_barrier != nullptr, what, "the persistent kernel needs its grid barrier counter");
        launch_cooperative(kernel, {dim3(unsigned(plan.blocks)), dim3(kThreads), size_t(plan.smem_bytes), stream}, p,
                           plan.rows_per_block);
      },
      std::forward<PerStep>(per_step));
}

}  // namespace fusedseq::cuda::recurrent
