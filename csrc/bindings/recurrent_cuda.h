// What the CUDA bindings of the recurrent ops (rnn_cuda.cpp, lstm_cuda.cpp,
// gru_cuda.cpp) share: the kernels' dtype tag and the path override.
//
// FUSEDSEQ_CUDA_RNN_PATH = auto (default) | persistent | per_step chooses how
// the recurrences (Elman, LSTM, GRU) run (csrc/cuda/rnn.h): tests force each
// path; `auto` takes the persistent kernel where the recurrent weights fit on
// chip and every block can be resident.
#pragma once
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "bindings/errors.h"
#include "bindings/stable.h"
#include "cuda/rnn.h"

namespace fusedseq::cuda_bindings {

inline cuda::RnnDtype rnn_dtype(ScalarType st) {
  switch (st) {
    case ScalarType::Float: return cuda::RnnDtype::F32;
    case ScalarType::Double: return cuda::RnnDtype::F64;
    case ScalarType::BFloat16: return cuda::RnnDtype::BF16;
    case ScalarType::Half: return cuda::RnnDtype::FP16;
    default: break;
  }
  throw std::invalid_argument("fusedseq: no CUDA RNN kernel for this dtype");  // checks::tensor let it through
}

inline cuda::RnnPath path_from_env(const char* op) {
  const char* v = std::getenv("FUSEDSEQ_CUDA_RNN_PATH");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return cuda::RnnPath::Auto;
  if (std::strcmp(v, "persistent") == 0) return cuda::RnnPath::Persistent;
  if (std::strcmp(v, "per_step") == 0) return cuda::RnnPath::PerStep;
  FUSEDSEQ_CHECK_VALUE(false, op, ": environment variable FUSEDSEQ_CUDA_RNN_PATH must be 'auto', 'persistent' or ",
                       "'per_step', got '", v, "'");
  return cuda::RnnPath::Auto;
}

}  // namespace fusedseq::cuda_bindings
