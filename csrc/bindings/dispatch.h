// Glue between tensors and the torch-free kernels: the thread pool, the
// compute dtype and the "no CUDA kernel yet" error.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/params.h"

namespace fusedseq {

inline ParallelFor torch_parallel_for() {
  return [](int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
    at::parallel_for(begin, end, grain, body);
  };
}

// Kernels run in float or double; fp16/bf16 are computed in float.
inline at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Contiguous copy in the compute dtype (a no-op when already so).
inline at::Tensor as_compute(const at::Tensor& t, at::ScalarType dt) { return t.to(dt).contiguous(); }

inline std::optional<at::Tensor> as_compute(const std::optional<at::Tensor>& t, at::ScalarType dt) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return as_compute(*t, dt);
}

// Calls fn.template operator()<scalar_t>() with scalar_t = float or double.
template <typename Fn>
inline void dispatch_compute(at::ScalarType dt, Fn&& fn) {
  if (dt == at::kDouble)
    fn.template operator()<double>();
  else
    fn.template operator()<float>();
}

[[noreturn]] inline void no_cuda_kernel(const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op,
                              ": this build of fusedseq has no CUDA kernel for this op yet; "
                              "move the tensors to the CPU (fusedseq.build_info() lists what was compiled)");
  __builtin_unreachable();
}

}  // namespace fusedseq
