#include "bindings/checks.h"

#include <sstream>

namespace fusedseq::checks {

using torch::headeronly::Layout;

std::string sizes_str(IntList s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

std::string device_str(const torch::stable::Device& d) {
  using torch::headeronly::DeviceType;
  std::string name = d.type() == DeviceType::CPU    ? "cpu"
                     : d.type() == DeviceType::CUDA ? "cuda"
                     : d.type() == DeviceType::Meta ? "meta"
                                                    : "device type " + std::to_string(static_cast<int>(d.type()));
  return d.has_index() ? name + ":" + std::to_string(d.index()) : name;
}

const char* dtype_str(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    default: return torch::headeronly::toString(t);
  }
}

static const char* layout_str(Layout l) {
  switch (l) {
    case Layout::Strided: return "strided";
    case Layout::Sparse: return "sparse_coo";
    case Layout::SparseCsr: return "sparse_csr";
    case Layout::SparseCsc: return "sparse_csc";
    case Layout::SparseBsr: return "sparse_bsr";
    case Layout::SparseBsc: return "sparse_bsc";
    case Layout::Mkldnn: return "mkldnn";
    case Layout::Jagged: return "jagged";
    default: return "non-strided";
  }
}

void tensor(const char* op, const char* name, const Tensor& t, int64_t dims, const char* layout) {
  FUSEDSEQ_CHECK_TYPE(t.defined(), op, ": argument '", name, "' must be a tensor ", layout, ", got None");
  FUSEDSEQ_CHECK_TYPE(t.layout() == Layout::Strided, op, ": argument '", name,
                      "' must be a dense (strided) tensor, got layout ", layout_str(t.layout()));
  const auto st = t.scalar_type();
  FUSEDSEQ_CHECK_TYPE(
      st == ScalarType::Float || st == ScalarType::Double || st == ScalarType::Half || st == ScalarType::BFloat16, op,
      ": argument '", name, "' must be float32, float64, float16 or bfloat16, got ", dtype_str(st));
  FUSEDSEQ_CHECK_VALUE(t.dim() == dims, op, ": argument '", name, "' must be ", dims, "-D ", layout, ", got ",
                       t.dim(), "-D with shape ", sizes_str(t.sizes()));
  for (int64_t d = 0; d < dims; ++d)
    FUSEDSEQ_CHECK_VALUE(t.size(d) > 0, op, ": argument '", name, "' ", layout, " must not be empty, got shape ",
                         sizes_str(t.sizes()));
}

void shape(const char* op, const char* name, const Tensor& t, std::initializer_list<int64_t> expected,
           const char* layout) {
  const auto sizes = t.sizes();
  const bool ok = sizes.size() == expected.size() && std::equal(expected.begin(), expected.end(), sizes.begin());
  FUSEDSEQ_CHECK_VALUE(ok, op, ": argument '", name, "' must have shape ", layout, " = ",
                       sizes_str(IntList(expected.begin(), expected.size())), ", got ", sizes_str(sizes));
}

void like(const char* op, const char* name, const Tensor& t, const char* ref_name, const Tensor& ref) {
  FUSEDSEQ_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": argument '", name, "' must have the dtype of '",
                      ref_name, "' (", dtype_str(ref.scalar_type()), "), got ", dtype_str(t.scalar_type()));
  FUSEDSEQ_CHECK_TYPE(t.device() == ref.device(), op, ": argument '", name, "' must be on the device of '", ref_name,
                      "' (", device_str(ref.device()), "), got ", device_str(t.device()));
}

Activation activation(const char* op, std::string_view nonlinearity) {
  if (nonlinearity == "tanh") return Activation::Tanh;
  if (nonlinearity == "relu") return Activation::Relu;
  throw_value_error(op, ": argument 'nonlinearity' must be 'tanh' or 'relu', got '", std::string(nonlinearity), "'");
}

void supported_device(const char* op, const Tensor& t) {
  FUSEDSEQ_CHECK_TYPE(t.is_cpu() || t.is_cuda(), op, ": tensors must be on the CPU or a CUDA device, got ",
                      device_str(t.device()));
}

}  // namespace fusedseq::checks
