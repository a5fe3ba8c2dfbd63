// The bindings' view of torch: the LibTorch stable ABI only.
//
// CMake compiles the bindings with TORCH_TARGET_VERSION = 2.10, so the stable
// headers hide anything newer and any unstable header (ATen, c10) fails to
// compile: one binary runs with every torch from 2.10 on. This file adds the
// few tensor helpers the bindings share, built from torch::stable ops and
// from aten ops called through the stable dispatcher.
#pragma once
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <array>
#include <optional>
#include <vector>

#include "bindings/errors.h"
#include "common/params.h"

namespace fusedseq {

using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using IntList = torch::headeronly::IntHeaderOnlyArrayRef;

// ---------------------------------------------------------------- threads --
// Kernels split work through torch's intra-op thread pool (so they follow
// torch.set_num_threads); `grain` has at::parallel_for's meaning.
inline ParallelFor torch_parallel_for() {
  return [](int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
    torch::stable::parallel_for(begin, end, grain, body);
  };
}

// ----------------------------------------------------------------- dtypes --
// CPU kernels run in float or double; fp16/bf16 are computed in float.
inline ScalarType compute_dtype(const Tensor& t) {
  return t.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

// Every torch::stable op is a boxed dispatcher call (a few µs), which adds
// up on the small RNN-cell calls that autoregressive loops make: the helpers
// below first ask the tensor (a plain C call) whether there is anything to do.

// Contiguous, in dtype `dt`: the tensor itself when it already is.
inline Tensor as_compute(const Tensor& t, ScalarType dt) {
  if (t.scalar_type() == dt && t.is_contiguous()) return t;
  return torch::stable::contiguous(torch::stable::to(t, dt));
}

inline std::optional<Tensor> as_compute(const std::optional<Tensor>& t, ScalarType dt) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return as_compute(*t, dt);
}

// In dtype `dt` with unit stride along the last dim, other strides kept.
inline Tensor unit_last_stride(const Tensor& t, ScalarType dt) {
  Tensor r = t.scalar_type() == dt ? t : torch::stable::to(t, dt);
  return r.stride(-1) == 1 ? r : torch::stable::contiguous(r);
}

// t in dtype `dt` (the tensor itself when it already is).
inline Tensor to_dtype(const Tensor& t, ScalarType dt) {
  return t.scalar_type() == dt ? t : torch::stable::to(t, dt);
}

// Calls fn.template operator()<scalar_t>() with scalar_t = float or double.
template <typename Fn>
inline void dispatch_compute(ScalarType dt, Fn&& fn) {
  if (dt == ScalarType::Double)
    fn.template operator()<double>();
  else
    fn.template operator()<float>();
}

template <typename T>
inline T* ptr(const Tensor& t) {
  return t.mutable_data_ptr<T>();
}

template <typename T>
inline T* ptr(const std::optional<Tensor>& t) {
  return t ? t->mutable_data_ptr<T>() : nullptr;
}

// ------------------------------------------------------------ aten calls --
// An aten op through the stable dispatcher; returns its first output.
template <typename... Args>
inline Tensor call_aten(const char* name, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<Tensor>(stack[0]);
}

// A new contiguous tensor on the device of `device_of`. Straight through the
// C shim (aoti_torch_empty_strided): no boxed dispatcher call, which is most
// of what a small op would otherwise spend outside its kernel.
inline Tensor empty(IntList sizes, ScalarType dt, const Tensor& device_of) {
  constexpr size_t kMaxDims = 8;
  STD_TORCH_CHECK(sizes.size() <= kMaxDims, "fusedseq: empty() takes at most 8 dims");
  std::array<int64_t, kMaxDims> strides{};
  int64_t stride = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= sizes[i];
  }
  int32_t device_type = 0, device_index = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(device_of.get(), &device_type));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(device_of.get(), &device_index));
  const auto dtype = torch::stable::detail::to<int32_t>(torch::stable::detail::from(dt));
  AtenTensorHandle handle = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(),
                                                         strides.data(), dtype, device_type, device_index, &handle));
  return Tensor(handle);
}

inline Tensor mm(const Tensor& a, const Tensor& b) { return call_aten("aten::mm", "", a, b); }
inline void mm_out(const Tensor& out, const Tensor& a, const Tensor& b) { call_aten("aten::mm", "out", a, b, out); }

// Views made through the C shim (no dispatcher call): `sizes`/`strides` over
// a's storage, starting `offset` elements after a's first element. (The
// shim's offset argument is an increment on a's own storage offset, as
// torch.ops.inductor._reinterpret_tensor's is: passing a.storage_offset()
// too would count it twice for a view that does not start its storage.)
inline Tensor strided_view(const Tensor& a, IntList sizes, IntList strides, int64_t offset = 0) {
  STD_TORCH_CHECK(sizes.size() == strides.size(), "fusedseq: strided_view needs one stride per size");
  AtenTensorHandle handle = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch__reinterpret_tensor(a.get(), static_cast<int64_t>(sizes.size()),
                                                               sizes.data(), strides.data(), offset, &handle));
  return Tensor(handle);
}
// (rows, cols) view of a contiguous tensor.
inline Tensor view2d(const Tensor& a, int64_t rows, int64_t cols) { return strided_view(a, {rows, cols}, {cols, 1}); }
// Transpose of a 2-D tensor.
inline Tensor t(const Tensor& a) { return strided_view(a, {a.size(1), a.size(0)}, {a.stride(1), a.stride(0)}); }

// dst <- src (same shape; dtypes may differ), through the C shim.
inline void copy_into(const Tensor& dst, const Tensor& src) {
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_copy_(dst.get(), src.get(), /*non_blocking=*/0));
}
inline Tensor cat(const std::vector<Tensor>& ts, int64_t dim) { return call_aten("aten::cat", "", ts, dim); }
inline Tensor sum_dim(const Tensor& a, int64_t dim) {
  std::vector<int64_t> dims{dim};
  return torch::stable::sum(a, IntList(dims));
}

// --------------------------------------------------------------- devices --
// Until an op has a CUDA kernel, CUDA tensors get this, after the checks.
[[noreturn]] inline void no_cuda_kernel(const char* op) {
  throw_not_implemented(op,
                        ": this build of fusedseq has no CUDA kernel for this op yet; move the tensors to the CPU "
                        "(fusedseq.build_info() lists what was compiled)");
}

}  // namespace fusedseq
