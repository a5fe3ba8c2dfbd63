// Argument checks shared by every op. Each failure names the op, the
// argument and what was expected, and is raised before any kernel runs:
// ValueError for shapes and values, TypeError for dtypes, devices and kinds.
#pragma once
#include <ATen/ATen.h>

#include <initializer_list>
#include <sstream>
#include <string>

#include "common/params.h"

namespace fusedseq::checks {

inline std::string sizes_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

// t is a defined, floating-point tensor of exactly `dims` dims, none empty.
inline void tensor(const char* op, const char* name, const at::Tensor& t, int64_t dims, const char* layout) {
  TORCH_CHECK_TYPE(t.defined(), op, ": argument '", name, "' must be a tensor ", layout, ", got None");
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, op, ": argument '", name, "' must be a dense (strided) tensor, got ",
                   t.layout());
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, op,
                   ": argument '", name, "' must be float32, float64, float16 or bfloat16, got ", st);
  TORCH_CHECK_VALUE(t.dim() == dims, op, ": argument '", name, "' must be ", dims, "-D ", layout, ", got ",
                    t.dim(), "-D with shape ", sizes_str(t.sizes()));
  for (int64_t d = 0; d < dims; ++d)
    TORCH_CHECK_VALUE(t.size(d) > 0, op, ": argument '", name, "' ", layout, " must not be empty, got shape ",
                      sizes_str(t.sizes()));
}

// t has the expected sizes; `layout` spells them symbolically, e.g. "(H, I)".
inline void shape(const char* op, const char* name, const at::Tensor& t, std::initializer_list<int64_t> expected,
                  const char* layout) {
  const bool ok = t.dim() == static_cast<int64_t>(expected.size()) &&
                  std::equal(expected.begin(), expected.end(), t.sizes().begin());
  TORCH_CHECK_VALUE(ok, op, ": argument '", name, "' must have shape ", layout, " = ",
                    sizes_str(at::IntArrayRef(expected.begin(), expected.size())), ", got ", sizes_str(t.sizes()));
}

// t matches ref in dtype and device.
inline void like(const char* op, const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": argument '", name, "' must have the dtype of '",
                   ref_name, "' (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_TYPE(t.device() == ref.device(), op, ": argument '", name, "' must be on the device of '", ref_name,
                   "' (", ref.device(), "), got ", t.device());
}

inline Activation activation(const char* op, c10::string_view nonlinearity) {
  if (nonlinearity == "tanh") return Activation::Tanh;
  if (nonlinearity == "relu") return Activation::Relu;
  TORCH_CHECK_VALUE(false, op, ": argument 'nonlinearity' must be 'tanh' or 'relu', got '", std::string(nonlinearity),
                    "'");
  return Activation::Tanh;
}

inline void supported_device(const char* op, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.device().is_cpu() || t.device().is_cuda(), op, ": tensors must be on the CPU or a CUDA device, got ",
                   t.device());
}

}  // namespace fusedseq::checks
