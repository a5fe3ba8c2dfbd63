// What the bindings of the recurrent ops (RNN, LSTM, GRU) share.
#pragma once
#include <cstdlib>
#include <string>

#include "bindings/errors.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

namespace fusedseq {

// The state each step of a sequence started from, h_{t-1} for t = 0..T-1, as
// one (T·B, H) matrix: h0, then the outputs shifted by one step. The weight
// gradient of W_hh is one product with it.
inline Tensor previous_states(const Tensor& h0,       // (B, H)
                              const Tensor& output) {  // (T, B, H) contiguous
  const int64_t T_ = output.size(0), B = output.size(1), H = output.size(2);
  if (T_ == 1) return h0;
  return cat({h0, view2d(output, (T_ - 1) * B, H)}, 0);  // output is contiguous: its first T-1 steps
}

// Columns [start, start + count) of a 2-D tensor whose rows have unit stride.
inline Tensor columns(const Tensor& a, int64_t start, int64_t count) {
  return strided_view(a, {a.size(0), count}, {a.stride(0), 1}, start);
}

inline bool has(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// FUSEDSEQ_CPU_RNN_PATH = auto (default) | pipeline | split | aten: how the
// CPU LSTM runs its input projection, dx and (on up to two threads) the
// weight gradients beside the recurrence (cpu/step_pipeline.h). `aten`
// leaves all of those products to ATen and splits every
// step over threads, as before the pipeline; tests force each, and A/B timings
// use it. Read on every call.
struct CpuRecurrenceChoice {
  bool fuse_side_products;  // the kernel computes x W_ihᵀ and dz W_ih itself
  RecurrencePath path;
};

inline CpuRecurrenceChoice cpu_recurrence_choice(const char* op, ScalarType dt) {
  const char* v = std::getenv("FUSEDSEQ_CPU_RNN_PATH");
  const std::string s = v ? v : "";
  FUSEDSEQ_CHECK_VALUE(s.empty() || s == "auto" || s == "pipeline" || s == "split" || s == "aten", op,
                       ": environment variable FUSEDSEQ_CPU_RNN_PATH must be 'auto', 'pipeline', 'split' or ",
                       "'aten', got '", s, "'");
  // Our register tiles beat ATen's product only where they run: fp32 on an
  // AVX2 build (double and the baseline build keep ATen's).
  const bool tiles = dt == ScalarType::Float && std::string(cpu::chosen().isa) != "baseline";
  if (s == "aten" || !tiles) return {false, RecurrencePath::Split};
  return {true, s == "pipeline" ? RecurrencePath::Pipeline : s == "split" ? RecurrencePath::Split
                                                                         : RecurrencePath::Auto};
}

// The threads an intra-op parallel loop may use now.
inline int64_t intra_op_threads() { return static_cast<int64_t>(torch::stable::get_num_threads()); }

}  // namespace fusedseq
