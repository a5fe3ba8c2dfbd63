// What every CUDA binding (csrc/bindings/*_cuda.cpp) does around its launcher,
// written once for the two builds of those files:
//   - the CUDA extension (nvcc-built kernels): CUDA tensors, a device guard on
//     their GPU and the current CUDA stream passed to the launcher;
//   - the emulated library (FUSEDSEQ_EMULATED_LIBRARY, g++-built kernels run
//     by csrc/emu/): CPU tensors, no device, no stream.
//
// Dtype policy on CUDA (and so in the emulated library): fp16 and bf16 stay
// native. Kernels read them as they are, accumulate in fp32 and write outputs
// in the input dtype (a log-sum-exp or other statistic is fp32); there are no
// upcast copies, which are a CPU choice (stable.h's compute_dtype).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "bindings/checks.h"
#include "bindings/errors.h"
#include "bindings/stable.h"

#if !FUSEDSEQ_EMULATED_LIBRARY
#include <torch/csrc/stable/accelerator.h>
// From torch's AOTI C shim (libtorch_cuda): the current CUDA stream as a
// cudaStream_t. (torch::stable's Stream::nativeHandle needs torch 2.13; our
// stable-ABI target is 2.10.)
extern "C" int32_t aoti_torch_get_current_cuda_stream(int32_t device_index, void** ret_stream);
#endif

namespace fusedseq {

#if FUSEDSEQ_EMULATED_LIBRARY
inline constexpr bool kEmulated = true;
#else
inline constexpr bool kEmulated = false;
#endif

// The device every tensor of a CUDA binding's call must be on, checked; on a
// GPU, also the device guard and the stream for the launch.
class DeviceContext {
 public:
  DeviceContext(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
    const auto& [first_name, first] = *tensors.begin();
    if constexpr (kEmulated)
      FUSEDSEQ_CHECK_TYPE(first->is_cpu(), op, ": argument '", first_name,
                          "' must be a CPU tensor (the emulated CUDA kernels run on the host), got ",
                          checks::device_str(first->device()));
    else
      FUSEDSEQ_CHECK_TYPE(first->is_cuda(), op, ": argument '", first_name, "' must be a CUDA tensor, got ",
                          checks::device_str(first->device()));
    for (const auto& [name, t] : tensors)
      FUSEDSEQ_CHECK_TYPE(t->device() == first->device(), op, ": argument '", name, "' must be on the device of '",
                          first_name, "' (", checks::device_str(first->device()), "), got ",
                          checks::device_str(t->device()));
#if !FUSEDSEQ_EMULATED_LIBRARY
    const int32_t index = first->get_device_index();
    guard_.emplace(index);
    if (aoti_torch_get_current_cuda_stream(index, &stream_) != 0)
      throw std::runtime_error(std::string(op) + ": could not get the current CUDA stream");
#endif
  }

  // The cudaStream_t to launch on (nullptr in the emulated library).
  void* stream() const { return stream_; }

 private:
  void* stream_ = nullptr;
#if !FUSEDSEQ_EMULATED_LIBRARY
  std::optional<torch::stable::accelerator::DeviceGuard> guard_;
#endif
};

// A zeroed int32 workspace of `n` elements on t's device, from torch's
// (caching) allocator: grid-barrier counters, partial sums. Kernels never
// allocate.
inline Tensor zeroed_workspace(const Tensor& t, int64_t n) {
  return torch::stable::new_zeros(t, {n}, ScalarType::Int);
}

// t with 16-byte rows, as cp.async needs: unit column stride, a row stride
// that is a multiple of 16 bytes and a 16-byte-aligned start. A view that
// already is comes back as it is; anything else is copied into a buffer
// whose rows are padded.
inline Tensor rows_16_byte_aligned(const Tensor& t) {
  const int64_t per16 = 16 / static_cast<int64_t>(t.element_size());
  const bool ok = t.stride(1) == 1 && t.stride(0) % per16 == 0 &&
                  reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  if (ok) return t;
  const int64_t rows = t.size(0), cols = t.size(1), padded = (cols + per16 - 1) / per16 * per16;
  const Tensor view = strided_view(empty({rows, padded}, t.scalar_type(), t), {rows, cols}, {padded, 1});
  copy_into(view, t);  // (the padding is never read: copies stop at the last column)
  return view;
}

}  // namespace fusedseq
