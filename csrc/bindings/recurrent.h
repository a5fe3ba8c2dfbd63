// What the bindings of the recurrent ops (RNN, LSTM, GRU) share.
#pragma once
#include "bindings/stable.h"

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

}  // namespace fusedseq
