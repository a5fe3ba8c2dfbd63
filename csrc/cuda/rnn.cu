// The fused Elman RNN on the GPU: cell forward/backward kernels and the
// persistent (or per-step) recurrence, forward and BPTT. API and shapes in
// csrc/cuda/rnn.h; the CPU kernels (csrc/cpu/rnn_cpu.cpp) are the reference
// for the contract, benchmarks/NOTES.md for the floors and predictions.
//
// One building block does every matrix product of a recurrent step: a warp
// computes a kRows x kBatch tile of  Σ_k W[j][k] s[b][k]  (hidden units j,
// batch rows b), its lanes striding over k (so a warp reads each row of W
// and of the state s coalesced, and shared memory without bank conflicts),
// then a halving butterfly of 9 shuffles leaves sum v on lanes 4v..4v+3 and
// lane 4v runs the epilogue of element v = r·kBatch + b, i.e. (j0 + r, b0 + b).
//
// Kernels: cell forward (both products, biases, activation: one launch);
// cell backward (dx and dh in one launch, dz made per chunk in shared
// memory); the recurrences forward and BPTT as one persistent cooperative
// launch (W_hh rows, or W_hhᵀ rows, staged once in shared memory; a grid
// barrier between steps) or, when that cannot run, one launch per step of the
// same step code reading W from global memory.
//
// Bugs planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>, csrc/emu/README.md):
//   rnn_missing_grid_barrier   the persistent kernels' steps are not separated:
//                              a block reads h_{t-1} (dz_{t+1}) before the other
//                              blocks have written it
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/rnn.h"

namespace fusedseq::cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kRows = 2, kBatch = 4;          // a warp's register tile: hidden units x batch rows
constexpr int kStepRows = kWarps * kRows;     // hidden units per block of the cell / per-step kernels
constexpr int kMinRows = 8;                   // fewest hidden units per block of the persistent kernels

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

// relu keeps NaN (as torch.relu); tanh in the arithmetic type.
template <class A>
__device__ __forceinline__ A activate(A v, Activation act) {
  if (act == Activation::Relu) return v < A(0) ? A(0) : v;
  if constexpr (std::is_same_v<A, double>) return tanh(v);
  else return tanhf(v);
}
// g · act'(z) from y = act(z): tanh' = 1 - y², relu' = [y > 0] (a select, as the CPU kernel).
template <class A>
__device__ __forceinline__ A times_act_grad(A g, A y, Activation act) {
  return act == Activation::Relu ? (y > A(0) ? g : A(0)) : g * (A(1) - y * y);
}

// --------------------------------------------------------- the warp tile --
// acc[r][b] += Σ_k w[r ld_w + k] s[b ld_s + k] over this lane's k. Rows at or
// past nr (batch rows at or past nb) re-read row 0 instead: their sums are
// never stored, and the loop keeps no bounds tests and no index arithmetic
// beyond one pointer step per operand.
template <class A, class W, class S>
__device__ __forceinline__ void tile_dot(A (&acc)[kRows][kBatch], const W* w, int64_t ld_w, int nr, const S* s,
                                         int64_t ld_s, int nb, int64_t K, int lane) {
  const W* wr[kRows];
  const S* sb[kBatch];
  for (int r = 0; r < kRows; ++r) wr[r] = w + (r < nr ? r : 0) * ld_w + lane;
  for (int b = 0; b < kBatch; ++b) sb[b] = s + (b < nb ? b : 0) * ld_s + lane;
  for (int64_t k = lane; k < K; k += 32) {
    A wv[kRows], sv[kBatch];
    for (int r = 0; r < kRows; ++r) wv[r] = load<A>(wr[r]), wr[r] += 32;
    for (int b = 0; b < kBatch; ++b) sv[b] = load<A>(sb[b]), sb[b] += 32;
    for (int r = 0; r < kRows; ++r)
      for (int b = 0; b < kBatch; ++b) acc[r][b] += wv[r] * sv[b];
  }
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

// ================================================================== cell ==
template <class T>
struct CellFwd {
  const T* x; int64_t ld_x;
  const T* h; int64_t ld_h;
  const T* w_ih; int64_t ld_w_ih;
  const T* w_hh; int64_t ld_w_hh;
  const T* b_ih;
  const T* b_hh;
  T* h_next;
  int64_t B, I, H;
  Activation act;
};

// Grid: H / kStepRows blocks; warp w owns units [j0, j0 + kRows) and runs both
// products of every batch tile into the same accumulators, then the biases
// and the activation: the whole cell in one pass over W_ih and W_hh.
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_cell_fwd_kernel(CellFwd<T> p) {
  using A = AccT<T>;
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int64_t j0 = int64_t(blockIdx.x) * kStepRows + int64_t(warp) * kRows;
  if (j0 >= p.H) return;  // the whole warp: no collective is left half-joined
  const int nr = int(min64(kRows, p.H - j0));
  const bool owner = lane % 4 == 0;  // the element this lane's epilogue owns (tile_sum_for_lane)
  const int mr = (lane / 4) / kBatch, mb = (lane / 4) % kBatch;
  for (int64_t b0 = 0; b0 < p.B; b0 += kBatch) {
    const int nb = int(min64(kBatch, p.B - b0));
    A acc[kRows][kBatch] = {};
    tile_dot(acc, p.w_ih + j0 * p.ld_w_ih, p.ld_w_ih, nr, p.x + b0 * p.ld_x, p.ld_x, nb, p.I, lane);
    tile_dot(acc, p.w_hh + j0 * p.ld_w_hh, p.ld_w_hh, nr, p.h + b0 * p.ld_h, p.ld_h, nb, p.H, lane);
    A v = tile_sum_for_lane(acc, lane);
    if (owner && mr < nr && mb < nb) {
      const int64_t j = j0 + mr, b = b0 + mb;
      if (p.b_ih) v += load<A>(p.b_ih + j);
      if (p.b_hh) v += load<A>(p.b_hh + j);
      store(p.h_next + b * p.H + j, activate(v, p.act));
    }
  }
}

template <class T>
struct CellBwd {
  const T* grad_h_next; int64_t ld_g;
  const T* h_next; int64_t ld_y;
  const T* w_ih; int64_t ld_w_ih;
  const T* w_hh; int64_t ld_w_hh;
  AccT<T>* grad_z;  // in the arithmetic type: the weight gradients are products of it
  T* grad_x;
  T* grad_h;
  int64_t B, I, H;
  Activation act;
};

// dx = dz W_ih and dh = dz W_hh in one launch: thread c owns column c of
// [W_ih | W_hh] (reads of W coalesced across the warp) and a batch tile of
// accumulators. dz = dh' ∘ act'(h') is computed once per chunk of kThreads
// units into shared memory, never materialised before the kernel; block 0
// also writes it out for the weight gradients.
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_cell_bwd_kernel(CellBwd<T> p) {
  using A = AccT<T>;
  __shared__ A dz_s[kBatch][kThreads];
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool is_x = c < p.I, active = c < p.I + p.H;
  const T* w = is_x ? p.w_ih + c : p.w_hh + (c - p.I);
  const int64_t ld_w = is_x ? p.ld_w_ih : p.ld_w_hh;
  for (int64_t b0 = 0; b0 < p.B; b0 += kBatch) {
    const int nb = int(min64(kBatch, p.B - b0));
    A acc[kBatch] = {};
    for (int64_t jc = 0; jc < p.H; jc += kThreads) {
      const int nj = int(min64(kThreads, p.H - jc));
      __syncthreads();  // the previous chunk is consumed
      if (int(threadIdx.x) < nj) {
        const int64_t j = jc + threadIdx.x;
        for (int b = 0; b < nb; ++b) {
          const A dz = times_act_grad(load<A>(p.grad_h_next + (b0 + b) * p.ld_g + j),
                                      load<A>(p.h_next + (b0 + b) * p.ld_y + j), p.act);
          dz_s[b][threadIdx.x] = dz;
          if (blockIdx.x == 0) store(p.grad_z + (b0 + b) * p.H + j, dz);
        }
      }
      __syncthreads();
      if (active)
        for (int jj = 0; jj < nj; ++jj) {
          const A wv = load<A>(w + (jc + jj) * ld_w);
          for (int b = 0; b < kBatch; ++b)
            if (b < nb) acc[b] += dz_s[b][jj] * wv;
        }
    }
    if (active)
      for (int b = 0; b < nb; ++b) {
        if (is_x) store(p.grad_x + (b0 + b) * p.I + c, acc[b]);
        else store(p.grad_h + (b0 + b) * p.H + (c - p.I), acc[b]);
      }
  }
}

// ============================================================ recurrence ==
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

template <class T>
struct SeqFwd {
  const T* h0; int64_t ld_h0;
  const T* w_hh; int64_t ld_w_hh;
  const T* b_ih;
  const T* b_hh;
  const AccT<T>* proj;  // may alias out (fp32, fp64)
  T* out;
  AccT<T>* state;  // 2 x (B, H): h_t in the arithmetic type, ping-pong
  unsigned* grid_barrier;
  int64_t T_, B, H;
  Activation act;
};

// Step t for the block's units [r0, r0 + nrows), whose rows of W_hh start at
// w (shared memory in the persistent kernel, global in the per-step one):
// out[t] = act(proj[t] + b_ih + b_hh + h_{t-1} W_hhᵀ), h_{-1} = h0.
template <class T>
__device__ __forceinline__ void fwd_step(const SeqFwd<T>& p, int64_t t, const T* w, int64_t ld_w, int64_t r0,
                                         int nrows) {
  using A = AccT<T>;
  const int64_t BH = p.B * p.H;
  A* next = p.state + (t & 1) * BH;
  const A* prev = p.state + ((t + 1) & 1) * BH;
  T* out_t = p.out + t * BH;
  for_each_tile<A>(
      nrows, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        A acc[kRows][kBatch] = {};
        if (t == 0) tile_dot(acc, w + i0 * ld_w, ld_w, nr, p.h0 + b0 * p.ld_h0, p.ld_h0, nb, p.H, lane);
        else tile_dot(acc, w + i0 * ld_w, ld_w, nr, prev + b0 * p.H, p.H, nb, p.H, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int i, int64_t b, A v) {
        const int64_t j = r0 + i, at = b * p.H + j;
        v += p.proj[t * BH + at];
        if (p.b_ih) v += load<A>(p.b_ih + j);
        if (p.b_hh) v += load<A>(p.b_hh + j);
        const A h = activate(v, p.act);
        next[at] = h;
        store(out_t + at, h);
      });
}

template <class T>
struct SeqBwd {
  const T* grad_out;
  const T* grad_h_n; int64_t ld_grad_h_n;
  const T* out;
  const T* w_hh_t; int64_t ld_w;
  AccT<T>* grad_z;  // in the arithmetic type: the weight gradients are products of it
  T* grad_h0;
  AccT<T>* state;  // 2 x (B, H): dz_t in the arithmetic type, ping-pong
  unsigned* grid_barrier;
  int64_t T_, B, H;
  Activation act;
};

// Step s = 0..T of BPTT for the block's units, w its rows of W_hhᵀ:
//   s < T (t = T-1-s): dz_t = (grad_out[t] + [s = 0] grad_h_n + dz_{t+1} W_hh) ∘ act'(out[t]);
//   s = T:             grad_h0 = dz_0 W_hh.
template <class T>
__device__ __forceinline__ void bwd_step(const SeqBwd<T>& p, int64_t s, const T* w, int64_t ld_w, int64_t r0,
                                         int nrows) {
  using A = AccT<T>;
  const int64_t BH = p.B * p.H, t = p.T_ - 1 - s;
  A* next = p.state + (s & 1) * BH;
  const A* prev = p.state + ((s + 1) & 1) * BH;
  for_each_tile<A>(
      nrows, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        if (s == 0) return A(0);  // (warp-uniform) nothing flows back into the last step
        A acc[kRows][kBatch] = {};
        tile_dot(acc, w + i0 * ld_w, ld_w, nr, prev + b0 * p.H, p.H, nb, p.H, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int i, int64_t b, A v) {
        const int64_t j = r0 + i, at = b * p.H + j;
        if (t < 0) {
          store(p.grad_h0 + at, v);
          return;
        }
        v += load<A>(p.grad_out + t * BH + at);
        if (s == 0) v += load<A>(p.grad_h_n + b * p.ld_grad_h_n + j);
        const A dz = times_act_grad(v, load<A>(p.out + t * BH + at), p.act);
        next[at] = dz;
        store(p.grad_z + t * BH + at, dz);
      });
}

FUSEDSEQ_EXTERN_SHARED(unsigned char, rnn_w_smem);

// Copies rows [r0, r0 + nrows) of w (H columns) into shared memory, packed.
template <class T>
__device__ __forceinline__ T* stage_rows(const T* w, int64_t ld_w, int64_t r0, int nrows, int64_t H) {
  T* w_s = reinterpret_cast<T*>(rnn_w_smem);
  for (int64_t i = threadIdx.x; i < int64_t(nrows) * H; i += kThreads) w_s[i] = w[(r0 + i / H) * ld_w + i % H];
  __syncthreads();
  return w_s;
}

// One cooperative launch for all T steps: block b owns units
// [b R, b R + R), keeps their rows of W_hh in shared memory throughout, and
// the grid barrier separates step t (which writes h_t) from step t + 1
// (which reads all of it).
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_fwd_persistent_kernel(SeqFwd<T> p, int rows_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int nrows = int(min64(rows_per_block, p.H - r0));
  const T* w_s = stage_rows(p.w_hh, p.ld_w_hh, r0, nrows, p.H);
  GridBarrier grid{p.grid_barrier};
  for (int64_t t = 0; t < p.T_; ++t) {
    fwd_step(p, t, w_s, p.H, r0, nrows);
#ifndef FUSEDSEQ_MUTANT_rnn_missing_grid_barrier
    if (t + 1 < p.T_) grid.sync();
#endif
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) rnn_bwd_persistent_kernel(SeqBwd<T> p, int rows_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int nrows = int(min64(rows_per_block, p.H - r0));
  const T* w_s = stage_rows(p.w_hh_t, p.ld_w, r0, nrows, p.H);
  GridBarrier grid{p.grid_barrier};
  for (int64_t s = 0; s <= p.T_; ++s) {
    bwd_step(p, s, w_s, p.H, r0, nrows);
#ifndef FUSEDSEQ_MUTANT_rnn_missing_grid_barrier
    if (s < p.T_) grid.sync();
#endif
  }
}

// The fallback: one launch per step, W read from global memory (L2).
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_fwd_step_kernel(SeqFwd<T> p, int64_t t) {
  const int64_t r0 = int64_t(blockIdx.x) * kStepRows;
  fwd_step(p, t, p.w_hh + r0 * p.ld_w_hh, p.ld_w_hh, r0, int(min64(kStepRows, p.H - r0)));
}
template <class T>
__global__ void __launch_bounds__(kThreads) rnn_bwd_step_kernel(SeqBwd<T> p, int64_t s) {
  const int64_t r0 = int64_t(blockIdx.x) * kStepRows;
  bwd_step(p, s, p.w_hh_t + r0 * p.ld_w, p.ld_w, r0, int(min64(kStepRows, p.H - r0)));
}

// ================================================================= host ==
void require(bool ok, const char* what, const char* field) {
  if (!ok) throw std::invalid_argument(std::string("fusedseq cuda ") + what + ": " + field);
}

unsigned blocks_for(int64_t n, int64_t per_block) {
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
DeviceLimits device_limits() {
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

template <class T>
RnnPlan plan_for(int64_t H, bool backward) {
  const DeviceLimits dev = device_limits();
  const int64_t row_bytes = H * int64_t(sizeof(T));
  if (!dev.cooperative) return {false, 0, 0, 0, "the device has no cooperative launch"};
  // At most one block per SM, the rows split evenly (in whole register
  // tiles), but at least kMinRows per block: below that the grid barrier's
  // arrivals (one per block) cost more than the rows' work saves (NOTES.md).
  int64_t rows = (H + dev.sms - 1) / dev.sms;
  rows = (rows + kRows - 1) / kRows * kRows;
  rows = rows > kMinRows ? rows : kMinRows;
  rows = rows < H ? rows : H;
  const int64_t smem = rows * row_bytes;
  if (smem > dev.smem_per_block)
    return {false, 0, 0, 0, "W_hh does not fit in the shared memory of all SMs (rows x H x element > per-block limit)"};
  const int blocks = int((H + rows - 1) / rows);
  const int resident = backward ? max_cooperative_blocks(rnn_bwd_persistent_kernel<T>, kThreads, size_t(smem))
                                : max_cooperative_blocks(rnn_fwd_persistent_kernel<T>, kThreads, size_t(smem));
  if (blocks > resident) return {false, 0, 0, 0, "a cooperative launch cannot make all blocks co-resident"};
  return {true, blocks, int(rows), smem, "W_hh stays in shared memory: one cooperative launch"};
}

RnnPath choose(RnnPath forced, const RnnPlan& plan, const char* what) {
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

}  // namespace

RnnPlan rnn_seq_plan(int64_t H, RnnDtype dtype, bool backward) {
  require(H > 0, "rnn_seq_plan", "H must be positive");
  return dispatch(dtype, [&]<class T>() { return plan_for<T>(H, backward); });
}

void rnn_cell_forward(const RnnCellFwdArgs& a) {
  const char* what = "rnn_cell_forward";
  require(a.B > 0 && a.I > 0 && a.H > 0, what, "B, I and H must be positive");
  require(a.x && a.h && a.w_ih && a.w_hh && a.h_next, what, "x, h, w_ih, w_hh and h_next are required");
  dispatch(a.dtype, [&]<class T>() {
    const CellFwd<T> p{static_cast<const T*>(a.x), a.ld_x, static_cast<const T*>(a.h), a.ld_h,
                       static_cast<const T*>(a.w_ih), a.ld_w_ih, static_cast<const T*>(a.w_hh), a.ld_w_hh,
                       static_cast<const T*>(a.b_ih), static_cast<const T*>(a.b_hh), static_cast<T*>(a.h_next),
                       a.B, a.I, a.H, a.act};
    launch(rnn_cell_fwd_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p);
  });
}

void rnn_cell_backward(const RnnCellBwdArgs& a) {
  const char* what = "rnn_cell_backward";
  require(a.B > 0 && a.I > 0 && a.H > 0, what, "B, I and H must be positive");
  require(a.grad_h_next && a.h_next && a.w_ih && a.w_hh && a.grad_z && a.grad_x && a.grad_h, what,
          "every tensor is required");
  dispatch(a.dtype, [&]<class T>() {
    const CellBwd<T> p{static_cast<const T*>(a.grad_h_next), a.ld_grad_h_next, static_cast<const T*>(a.h_next),
                       a.ld_h_next, static_cast<const T*>(a.w_ih), a.ld_w_ih, static_cast<const T*>(a.w_hh),
                       a.ld_w_hh, static_cast<AccT<T>*>(a.grad_z), static_cast<T*>(a.grad_x), static_cast<T*>(a.grad_h),
                       a.B, a.I, a.H, a.act};
    launch(rnn_cell_bwd_kernel<T>, {dim3(blocks_for(a.I + a.H, kThreads)), dim3(kThreads), 0, a.stream}, p);
  });
}

RnnPath rnn_seq_forward(const RnnSeqFwdArgs& a) {
  const char* what = "rnn_seq_forward";
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.h0 && a.w_hh && a.proj && a.out && a.state, what, "h0, w_hh, proj, out and state are required");
  return dispatch(a.dtype, [&]<class T>() {
    const SeqFwd<T> p{static_cast<const T*>(a.h0), a.ld_h0, static_cast<const T*>(a.w_hh), a.ld_w_hh,
                      static_cast<const T*>(a.b_ih), static_cast<const T*>(a.b_hh),
                      static_cast<const AccT<T>*>(a.proj), static_cast<T*>(a.out), static_cast<AccT<T>*>(a.state),
                      a.grid_barrier, a.T_, a.B, a.H, a.act};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<T>(a.H, false);
    return run(
        a.path, plan, what,
        [&] {
          require(a.grid_barrier != nullptr, what, "the persistent kernel needs its grid barrier counter");
          launch_cooperative(rnn_fwd_persistent_kernel<T>,
                             {dim3(unsigned(plan.blocks)), dim3(kThreads), size_t(plan.smem_bytes), a.stream}, p,
                             plan.rows_per_block);
        },
        [&] {
          for (int64_t t = 0; t < a.T_; ++t)
            launch(rnn_fwd_step_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p, t);
        });
  });
}

RnnPath rnn_seq_backward(const RnnSeqBwdArgs& a) {
  const char* what = "rnn_seq_backward";
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.grad_out && a.grad_h_n && a.out && a.w_hh_t && a.grad_z && a.grad_h0 && a.state, what,
          "every tensor is required");
  return dispatch(a.dtype, [&]<class T>() {
    const SeqBwd<T> p{static_cast<const T*>(a.grad_out), static_cast<const T*>(a.grad_h_n), a.ld_grad_h_n,
                      static_cast<const T*>(a.out), static_cast<const T*>(a.w_hh_t), a.ld_w_hh_t,
                      static_cast<AccT<T>*>(a.grad_z), static_cast<T*>(a.grad_h0), static_cast<AccT<T>*>(a.state),
                      a.grid_barrier, a.T_, a.B, a.H, a.act};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<T>(a.H, true);
    return run(
        a.path, plan, what,
        [&] {
          require(a.grid_barrier != nullptr, what, "the persistent kernel needs its grid barrier counter");
          launch_cooperative(rnn_bwd_persistent_kernel<T>,
                             {dim3(unsigned(plan.blocks)), dim3(kThreads), size_t(plan.smem_bytes), a.stream}, p,
                             plan.rows_per_block);
        },
        [&] {
          for (int64_t s = 0; s <= a.T_; ++s)
            launch(rnn_bwd_step_kernel<T>, {dim3(blocks_for(a.H, kStepRows)), dim3(kThreads), 0, a.stream}, p, s);
        });
  });
}

}  // namespace fusedseq::cuda
