// The fused LSTM and GRU on the GPU: the persistent (or per-step) recurrence,
// forward and BPTT, for both gated cells. API, buffers and formulas in
// csrc/cuda/gated_rnn.h; the CPU kernels (csrc/cpu/lstm_cpu.cpp,
// gru_cpu.cpp, gates.h) are the reference for the contract.
//
// The Elman RNN's kernels (csrc/cuda/rnn.cu) with a gate epilogue. Every
// matrix product is the warp tile of csrc/cuda/recurrent_tile.cuh:
//   forward  a block's G·U gate rows of W_hh (gate-major: row q·U + i is
//            W_hh row q·H + r0 + i) times h_{t-1}; each sum lands in its gate
//            slot of `gates` (phase 1); after a __syncthreads the block's
//            threads run the gate nonlinearities and the state update of its
//            U units x B batch rows (phase 2). No grid barrier inside a step:
//            a unit's gates never leave its block.
//   BPTT     a block's U rows of W_hhᵀ (each G·H long) times the previous
//            step's gate gradients (B, G·H), and the cell's backward formulas
//            as the epilogue of the element that owns (unit, batch row).
// The persistent kernels stage those rows in shared memory once and separate
// the steps with a grid barrier; the per-step kernels run the same step code
// on W from global memory (L2), one launch per step. Both paths compute every
// sum in the same order: their results agree bit for bit.
//
// Bugs planted by the mutation tests (-DFUSEDSEQ_MUTANT_<name>, csrc/emu/README.md):
//   lstm_missing_grid_barrier   the persistent kernels' steps are not separated:
//                               a block reads h_{t-1} (the gate gradients of
//                               step t+1) before the other blocks wrote them
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/gated_rnn.h"
#include "cuda/recurrent_tile.cuh"

namespace fusedseq::cuda {
namespace {

using namespace recurrent;
constexpr int kMinUnits = 2;                   // fewest hidden units per block of the persistent kernels
constexpr int kBwdStepUnits = kWarps * kRows;  // hidden units per block of the per-step BPTT kernel
constexpr int kSlots = 4;                      // gate slots per unit in `gates` and `grad_z` (both cells)

template <class A>
__device__ __forceinline__ A sigmoid(A x) {
  if constexpr (std::is_same_v<A, double>) return 1.0 / (1.0 + exp(-x));
  else return 1.0f / (1.0f + expf(-x));
}
template <class A>
__device__ __forceinline__ A tanh_a(A x) {
  if constexpr (std::is_same_v<A, double>) return tanh(x);
  else return tanhf(x);
}

// ================================================================ forward ==
template <class T>
struct Fwd {
  const T* h0; int64_t ld_h0;
  const T* c0; int64_t ld_c0;
  const T* w_hh; int64_t ld_w_hh;
  const T* b_ih;
  const T* b_hh;
  AccT<T>* gates;  // (T, B, 4H)
  T* out;          // (T, B, H)
  AccT<T>* cell;   // (T, B, H), LSTM
  AccT<T>* state;  // 2 x (B, H): h_t in the arithmetic type, ping-pong
  unsigned* grid_barrier;
  int64_t T_, B, H;
};

// The gate rows of a block's `units` hidden units: row q·units + i is the
// row of gate q of unit r0 + i (base points at gate 0 of unit r0).
template <class T>
struct GateRows {
  const T* base;
  int64_t ld, gate_stride;
  int units;
  __device__ __forceinline__ const T* row(int rho) const {
    return base + (rho / units) * gate_stride + int64_t(rho % units) * ld;
  }
};

struct Lstm {
  static constexpr int G = 4;
  // Phase 1: gate q's recurrent sum joins x W_ihᵀ in slot q.
  template <class A>
  __device__ static void add_recurrent(A* z, int q, int64_t H, A v) { z[q * H] = v + z[q * H]; }

  // Phase 2 for unit j, batch row b: i, f, o = σ, g = tanh; c = f c_{t-1} + i g; h = o tanh(c).
  template <class T>
  __device__ static void update(const Fwd<T>& p, int64_t t, int64_t j, int64_t b, const AccT<T>* /*h_prev*/) {
    using A = AccT<T>;
    const int64_t H = p.H, BH = p.B * H, at = b * H + j;
    A* z = p.gates + t * kSlots * BH + b * kSlots * H + j;
    A pre[G];
    for (int q = 0; q < G; ++q) {
      A v = z[q * H];
      if (p.b_ih) v += load<A>(p.b_ih + q * H + j);
      if (p.b_hh) v += load<A>(p.b_hh + q * H + j);
      pre[q] = v;
    }
    const A i = sigmoid(pre[0]), f = sigmoid(pre[1]), g = tanh_a(pre[2]), o = sigmoid(pre[3]);
    const A c_prev = t == 0 ? load<A>(p.c0 + b * p.ld_c0 + j) : p.cell[(t - 1) * BH + at];
    const A c = f * c_prev + i * g;
    const A h = o * tanh_a(c);
    z[0] = i, z[H] = f, z[2 * H] = g, z[3 * H] = o;
    p.cell[t * BH + at] = c;
    p.state[(t & 1) * BH + at] = h;
    store(p.out + t * BH + at, h);
  }
};

struct Gru {
  static constexpr int G = 3;
  // Phase 1: r's and z's recurrent sums join x W_ihᵀ in their slots; W_hn h
  // goes to slot 3 (it is multiplied by r before it meets x W_inᵀ).
  template <class A>
  __device__ static void add_recurrent(A* z, int q, int64_t H, A v) {
    if (q < 2) z[q * H] = v + z[q * H];
    else z[3 * H] = v;
  }

  // Phase 2: r, z = σ; a = W_hn h + b_hn; n = tanh(x W_inᵀ + b_in + r a); h = n + z (h_{t-1} - n).
  template <class T>
  __device__ static void update(const Fwd<T>& p, int64_t t, int64_t j, int64_t b, const AccT<T>* h_prev) {
    using A = AccT<T>;
    const int64_t H = p.H, BH = p.B * H, at = b * H + j;
    A* z = p.gates + t * kSlots * BH + b * kSlots * H + j;
    A zr = z[0], zz = z[H], zn = z[2 * H], a = z[3 * H];
    if (p.b_ih) zr += load<A>(p.b_ih + j), zz += load<A>(p.b_ih + H + j), zn += load<A>(p.b_ih + 2 * H + j);
    if (p.b_hh) zr += load<A>(p.b_hh + j), zz += load<A>(p.b_hh + H + j), a += load<A>(p.b_hh + 2 * H + j);
    const A r = sigmoid(zr), u = sigmoid(zz);
    const A n = tanh_a(zn + r * a);
    const A hp = t == 0 ? load<A>(p.h0 + b * p.ld_h0 + j) : h_prev[at];
    const A h = n + u * (hp - n);
    z[0] = r, z[H] = u, z[2 * H] = n, z[3 * H] = a;
    p.state[(t & 1) * BH + at] = h;
    store(p.out + t * BH + at, h);
  }
};

// Step t for the block's units [r0, r0 + w.units): phase 1 (the products),
// a block barrier, phase 2 (the gates).
template <class Cell, class T>
__device__ __forceinline__ void fwd_step(const Fwd<T>& p, int64_t t, const GateRows<T>& w, int64_t r0) {
  using A = AccT<T>;
  const int units = w.units;
  const int64_t BH = p.B * p.H;
  const A* prev = p.state + ((t + 1) & 1) * BH;
  A* gates_t = p.gates + t * kSlots * BH;
  for_each_tile<A>(
      Cell::G * units, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        const T* rows[kRows];
        for (int r = 0; r < kRows; ++r) rows[r] = w.row(i0 + (r < nr ? r : 0));
        A acc[kRows][kBatch] = {};
        if (t == 0) tile_dot_rows(acc, rows, p.h0 + b0 * p.ld_h0, p.ld_h0, nb, p.H, lane);
        else tile_dot_rows(acc, rows, prev + b0 * p.H, p.H, nb, p.H, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int rho, int64_t b, A v) {
        Cell::add_recurrent(gates_t + b * kSlots * p.H + r0 + rho % units, rho / units, p.H, v);
      });
  __syncthreads();  // the block's gate sums are in `gates` (global memory, written by this block)
  for (int64_t e = threadIdx.x; e < int64_t(units) * p.B; e += kThreads)
    Cell::update(p, t, r0 + e % units, e / units, prev);
}

FUSEDSEQ_EXTERN_SHARED(unsigned char, gated_w_smem);

template <class T>
__device__ __forceinline__ GateRows<T> global_gate_rows(const Fwd<T>& p, int64_t r0, int units) {
  return {p.w_hh + r0 * p.ld_w_hh, p.ld_w_hh, p.H * p.ld_w_hh, units};
}

// One cooperative launch for all T steps: block b owns units [b U, b U + U),
// keeps their G·U rows of W_hh in shared memory throughout, and the grid
// barrier separates step t (which writes h_t) from step t + 1 (which reads all of it).
template <class Cell, class T>
__global__ void __launch_bounds__(kThreads) gated_fwd_persistent_kernel(Fwd<T> p, int units_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * units_per_block;
  const int units = int(min64(units_per_block, p.H - r0));
  const GateRows<T> global = global_gate_rows(p, r0, units);
  T* w_s = reinterpret_cast<T*>(gated_w_smem);
  for (int64_t i = threadIdx.x; i < int64_t(Cell::G) * units * p.H; i += kThreads)
    w_s[i] = global.row(int(i / p.H))[i % p.H];
  __syncthreads();
  const GateRows<T> rows{w_s, p.H, units * p.H, units};
  GridBarrier grid{p.grid_barrier};
  for (int64_t t = 0; t < p.T_; ++t) {
    fwd_step<Cell>(p, t, rows, r0);
#ifndef FUSEDSEQ_MUTANT_lstm_missing_grid_barrier
    if (t + 1 < p.T_) grid.sync();
#endif
  }
}

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads) gated_fwd_step_kernel(Fwd<T> p, int64_t t, int units_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * units_per_block;
  fwd_step<Cell>(p, t, global_gate_rows(p, r0, int(min64(units_per_block, p.H - r0))), r0);
}

// =================================================================== BPTT ==
template <class T>
struct Bwd {
  const T* grad_out;           // (T, B, H)
  const AccT<T>* grad_cell;    // (T, B, H), LSTM
  const AccT<T>* gates;        // (T, B, 4H)
  const AccT<T>* cell;         // (T, B, H), LSTM
  const T* out;                // (T, B, H), GRU
  const T* init; int64_t ld_init;  // LSTM c0, GRU h0
  const T* w_hh_t; int64_t ld_w;   // (H, G H)
  AccT<T>* grad_z;             // (T, B, 4H)
  T* grad_h0;
  T* grad_c0;
  AccT<T>* state;  // 2 x (B, G H): the gate gradients that flow into h_{t-1}, ping-pong
  AccT<T>* carry;  // (B, H): LSTM dL/dc_{t-1} through f; GRU dL/dh_{t-1} through z
  unsigned* grid_barrier;
  int64_t T_, B, H;
};

// BPTT epilogues for unit j, batch row b of step s (t = T-1-s; t = -1 is the
// last step, which leaves grad_h0 (and grad_c0)); v = (that step's gate
// gradients) W_hh at (b, j), 0 at s = 0; next: this step's gate gradients
// for the following step's product.
struct LstmBack {
  static constexpr int G = 4;
  template <class T>
  __device__ static void step(const Bwd<T>& p, int64_t s, int64_t t, int64_t j, int64_t b, AccT<T> v,
                              AccT<T>* next) {
    using A = AccT<T>;
    const int64_t H = p.H, BH = p.B * H, at = b * H + j;
    if (t < 0) {
      store(p.grad_h0 + at, v);
      store(p.grad_c0 + at, p.carry[at]);
      return;
    }
    const A dh = v + load<A>(p.grad_out + t * BH + at);
    A dc = p.grad_cell[t * BH + at];
    if (s > 0) dc += p.carry[at];
    const A* g = p.gates + t * kSlots * BH + b * kSlots * H + j;
    const A i = g[0], f = g[H], gg = g[2 * H], o = g[3 * H];
    const A c_prev = t == 0 ? load<A>(p.init + b * p.ld_init + j) : p.cell[(t - 1) * BH + at];
    // c_t recomputed by the forward's own expression (as the CPU kernel does).
    const A tc = tanh_a(f * c_prev + i * gg);
    const A dct = dc + dh * o * (A(1) - tc * tc);
    p.carry[at] = dct * f;
    const A dz[G] = {dct * gg * (i * (A(1) - i)), dct * c_prev * (f * (A(1) - f)), dct * i * (A(1) - gg * gg),
                     dh * tc * (o * (A(1) - o))};
    A* gz = p.grad_z + t * kSlots * BH + b * kSlots * H + j;
    A* nx = next + b * G * H + j;
    for (int q = 0; q < G; ++q) gz[q * H] = dz[q], nx[q * H] = dz[q];
  }
};

struct GruBack {
  static constexpr int G = 3;
  template <class T>
  __device__ static void step(const Bwd<T>& p, int64_t s, int64_t t, int64_t j, int64_t b, AccT<T> v,
                              AccT<T>* next) {
    using A = AccT<T>;
    const int64_t H = p.H, BH = p.B * H, at = b * H + j;
    if (t < 0) {
      store(p.grad_h0 + at, v + p.carry[at]);
      return;
    }
    A dh = v;
    if (s > 0) dh += p.carry[at];
    dh += load<A>(p.grad_out + t * BH + at);
    const A* g = p.gates + t * kSlots * BH + b * kSlots * H + j;
    const A r = g[0], u = g[H], n = g[2 * H], a = g[3 * H];
    const A h_prev = t == 0 ? load<A>(p.init + b * p.ld_init + j) : load<A>(p.out + (t - 1) * BH + at);
    const A dzn = dh * (A(1) - u) * (A(1) - n * n);
    const A dzz = dh * (h_prev - n) * (u * (A(1) - u));
    const A dzr = dzn * a * (r * (A(1) - r));
    const A dza = dzn * r;  // dL/d(W_hn h + b_hn)
    A* gz = p.grad_z + t * kSlots * BH + b * kSlots * H + j;
    gz[0] = dzr, gz[H] = dzz, gz[2 * H] = dzn, gz[3 * H] = dza;
    A* nx = next + b * G * H + j;  // the hidden side, in W_hh's gate order
    nx[0] = dzr, nx[H] = dzz, nx[2 * H] = dza;
    p.carry[at] = dh * u;
  }
};

// Step s = 0..T of BPTT for the block's units [r0, r0 + units), w their rows of W_hhᵀ.
template <class Cell, class T>
__device__ __forceinline__ void bwd_step(const Bwd<T>& p, int64_t s, const T* w, int64_t ld_w, int64_t r0,
                                         int units) {
  using A = AccT<T>;
  const int64_t GH = Cell::G * p.H, t = p.T_ - 1 - s;
  A* next = p.state + (s & 1) * p.B * GH;
  const A* prev = p.state + ((s + 1) & 1) * p.B * GH;
  for_each_tile<A>(
      units, p.B,
      [&](int i0, int64_t b0, int nr, int nb, int lane) {
        if (s == 0) return A(0);  // (warp-uniform) nothing flows back into the last step
        A acc[kRows][kBatch] = {};
        tile_dot(acc, w + i0 * ld_w, ld_w, nr, prev + b0 * GH, GH, nb, GH, lane);
        return tile_sum_for_lane(acc, lane);
      },
      [&](int i, int64_t b, A v) { Cell::step(p, s, t, r0 + i, b, v, next); });
}

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads) gated_bwd_persistent_kernel(Bwd<T> p, int units_per_block) {
  const int64_t r0 = int64_t(blockIdx.x) * units_per_block;
  const int units = int(min64(units_per_block, p.H - r0));
  const int64_t GH = Cell::G * p.H;
  const T* w_s = stage_rows(reinterpret_cast<T*>(gated_w_smem), p.w_hh_t, p.ld_w, r0, units, GH);
  GridBarrier grid{p.grid_barrier};
  for (int64_t s = 0; s <= p.T_; ++s) {
    bwd_step<Cell>(p, s, w_s, GH, r0, units);
#ifndef FUSEDSEQ_MUTANT_lstm_missing_grid_barrier
    if (s < p.T_) grid.sync();
#endif
  }
}

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads) gated_bwd_step_kernel(Bwd<T> p, int64_t s) {
  const int64_t r0 = int64_t(blockIdx.x) * kBwdStepUnits;
  bwd_step<Cell>(p, s, p.w_hh_t + r0 * p.ld_w, p.ld_w, r0, int(min64(kBwdStepUnits, p.H - r0)));
}

// ================================================================= host ==
// Units per block of the per-step forward kernel: about kWarps·kRows gate rows.
template <class Cell>
constexpr int fwd_step_units() {
  return kWarps * kRows / Cell::G > 0 ? kWarps * kRows / Cell::G : 1;
}

// Calls fn.template operator()<Cell, T>() (Cell the forward's or BPTT's policy).
template <bool Backward, class Fn>
decltype(auto) dispatch_gated(GatedKind kind, RnnDtype dt, Fn&& fn) {
  using L = std::conditional_t<Backward, LstmBack, Lstm>;
  using R = std::conditional_t<Backward, GruBack, Gru>;
  return dispatch(dt, [&]<class T>() {
    if (kind == GatedKind::Lstm) return fn.template operator()<L, T>();
    if (kind == GatedKind::Gru) return fn.template operator()<R, T>();
    throw std::invalid_argument("fusedseq cuda gated rnn: unknown kind");
  });
}

template <bool Backward, class Cell, class T>
RnnPlan plan_for(int64_t H) {
  const DeviceLimits dev = device_limits();
  if (!dev.cooperative) return {false, 0, 0, 0, "the device has no cooperative launch"};
  // At most one block per SM, the units split evenly, at least kMinUnits per
  // block (G·kMinUnits gate rows: below that the grid barrier's arrivals cost
  // more than the rows' work saves, as for the Elman RNN).
  int64_t units = (H + dev.sms - 1) / dev.sms;
  units = units > kMinUnits ? units : kMinUnits;
  units = units < H ? units : H;
  const int64_t smem = units * Cell::G * H * int64_t(sizeof(T));
  if (smem > dev.smem_per_block)
    return {false, 0, 0, 0,
            "the gate rows of W_hh do not fit in the shared memory of all SMs (units x G x H x element > per-block "
            "limit)"};
  const int blocks = int((H + units - 1) / units);
  int resident = 0;
  if constexpr (Backward) resident = max_cooperative_blocks(gated_bwd_persistent_kernel<Cell, T>, kThreads, size_t(smem));
  else resident = max_cooperative_blocks(gated_fwd_persistent_kernel<Cell, T>, kThreads, size_t(smem));
  if (blocks > resident) return {false, 0, 0, 0, "a cooperative launch cannot make all blocks co-resident"};
  return {true, blocks, int(units), smem, "the gate rows of W_hh stay in shared memory: one cooperative launch"};
}

const char* name(GatedKind kind, bool backward) {
  if (kind == GatedKind::Lstm) return backward ? "lstm_seq_backward" : "lstm_seq_forward";
  return backward ? "gru_seq_backward" : "gru_seq_forward";
}

}  // namespace

RnnPlan gated_seq_plan(GatedKind kind, int64_t H, RnnDtype dtype, bool backward) {
  require(H > 0, "gated_seq_plan", "H must be positive");
  if (backward)
    return dispatch_gated<true>(kind, dtype, [&]<class Cell, class T>() { return plan_for<true, Cell, T>(H); });
  return dispatch_gated<false>(kind, dtype, [&]<class Cell, class T>() { return plan_for<false, Cell, T>(H); });
}

RnnPath gated_seq_forward(const GatedSeqFwdArgs& a) {
  const char* what = name(a.kind, false);
  const bool lstm = a.kind == GatedKind::Lstm;
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.h0 && a.w_hh && a.gates && a.out && a.state, what, "h0, w_hh, gates, out and state are required");
  require(!lstm || (a.c0 && a.cell), what, "the LSTM needs c0 and cell");
  return dispatch_gated<false>(a.kind, a.dtype, [&]<class Cell, class T>() {
    const Fwd<T> p{static_cast<const T*>(a.h0), a.ld_h0, static_cast<const T*>(a.c0), a.ld_c0,
                   static_cast<const T*>(a.w_hh), a.ld_w_hh, static_cast<const T*>(a.b_ih),
                   static_cast<const T*>(a.b_hh), static_cast<AccT<T>*>(a.gates), static_cast<T*>(a.out),
                   static_cast<AccT<T>*>(a.cell), static_cast<AccT<T>*>(a.state), a.grid_barrier, a.T_, a.B, a.H};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<false, Cell, T>(a.H);
    return run_recurrence(
        a.path, plan, what, a.grid_barrier, a.stream, gated_fwd_persistent_kernel<Cell, T>, p, [&] {
          constexpr int units = fwd_step_units<Cell>();
          for (int64_t t = 0; t < a.T_; ++t)
            launch(gated_fwd_step_kernel<Cell, T>, {dim3(blocks_for(a.H, units)), dim3(kThreads), 0, a.stream}, p,
                   t, units);
        });
  });
}

RnnPath gated_seq_backward(const GatedSeqBwdArgs& a) {
  const char* what = name(a.kind, true);
  const bool lstm = a.kind == GatedKind::Lstm;
  require(a.T_ > 0 && a.B > 0 && a.H > 0, what, "T, B and H must be positive");
  require(a.grad_out && a.gates && a.init && a.w_hh_t && a.grad_z && a.grad_h0 && a.state && a.carry, what,
          "grad_out, gates, init, w_hh_t, grad_z, grad_h0, state and carry are required");
  require(!lstm || (a.grad_cell && a.grad_c0 && (a.cell || a.T_ == 1)), what,
          "the LSTM needs grad_cell, grad_c0 and (for T > 1) cell");
  require(lstm || a.out || a.T_ == 1, what, "the GRU needs out for T > 1");
  return dispatch_gated<true>(a.kind, a.dtype, [&]<class Cell, class T>() {
    const Bwd<T> p{static_cast<const T*>(a.grad_out), static_cast<const AccT<T>*>(a.grad_cell),
                   static_cast<const AccT<T>*>(a.gates), static_cast<const AccT<T>*>(a.cell),
                   static_cast<const T*>(a.out), static_cast<const T*>(a.init), a.ld_init,
                   static_cast<const T*>(a.w_hh_t), a.ld_w_hh_t, static_cast<AccT<T>*>(a.grad_z),
                   static_cast<T*>(a.grad_h0), static_cast<T*>(a.grad_c0), static_cast<AccT<T>*>(a.state),
                   static_cast<AccT<T>*>(a.carry), a.grid_barrier, a.T_, a.B, a.H};
    const RnnPlan plan = a.path == RnnPath::PerStep ? RnnPlan{false, 0, 0, 0, "per-step path forced"}
                                                    : plan_for<true, Cell, T>(a.H);
    return run_recurrence(
        a.path, plan, what, a.grid_barrier, a.stream, gated_bwd_persistent_kernel<Cell, T>, p, [&] {
          for (int64_t s = 0; s <= a.T_; ++s)
            launch(gated_bwd_step_kernel<Cell, T>,
                   {dim3(blocks_for(a.H, kBwdStepUnits)), dim3(kThreads), 0, a.stream}, p, s);
        });
  });
}

}  // namespace fusedseq::cuda
