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

void tensor_like(const char* op, const char* name, const Tensor& t, const Tensor& x,
                 std::initializer_list<int64_t> expected, const char* layout) {
  tensor(op, name, t, static_cast<int64_t>(expected.size()), layout);
  like(op, name, t, "x", x);
  shape(op, name, t, expected, layout);
}

void recurrent_weights(const char* op, const Tensor& x, int64_t I, int64_t H, int64_t gates, const Tensor& w_ih,
                       const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  const std::string rows = gates == 1 ? "H" : std::to_string(gates) + "H";
  const std::string ih = "(" + rows + ", I)", hh = "(" + rows + ", H)", bias = "(" + rows + ",)";
  tensor(op, "w_ih", w_ih, 2, ih.c_str());
  tensor(op, "w_hh", w_hh, 2, hh.c_str());
  like(op, "w_ih", w_ih, "x", x);
  like(op, "w_hh", w_hh, "x", x);
  shape(op, "w_ih", w_ih, {gates * H, I}, ih.c_str());
  shape(op, "w_hh", w_hh, {gates * H, H}, hh.c_str());
  for (auto [name, b] : {std::pair<const char*, const std::optional<Tensor>*>{"b_ih", &b_ih}, {"b_hh", &b_hh}}) {
    if (!b->has_value() || !(*b)->defined()) continue;
    tensor(op, name, **b, 1, bias.c_str());
    like(op, name, **b, "x", x);
    shape(op, name, **b, {gates * H}, bias.c_str());
  }
}

int64_t first_state(const char* op, const char* name, const Tensor& t, const Tensor& x, int64_t batch_dim) {
  tensor(op, name, t, 2, "(B, H)");
  like(op, name, t, "x", x);
  const int64_t B = x.size(batch_dim);
  FUSEDSEQ_CHECK_VALUE(t.size(0) == B, op, ": argument '", name, "' must have shape (B, H) with B = ", B,
                       batch_dim == 0 ? " (the batch of 'x')" : " (dim 1 of 'x')", ", got ", sizes_str(t.sizes()));
  return t.size(1);
}

void workspace(const char* op, const char* name, const Tensor& t, ScalarType dt, const Tensor& x,
               std::initializer_list<int64_t> expected, const char* layout) {
  tensor(op, name, t, static_cast<int64_t>(expected.size()), layout);
  FUSEDSEQ_CHECK_TYPE(t.scalar_type() == dt, op, ": argument '", name, "' must be ", dtype_str(dt),
                      " (as the forward returns it), got ", dtype_str(t.scalar_type()));
  FUSEDSEQ_CHECK_TYPE(t.device() == x.device(), op, ": argument '", name, "' must be on the device of 'x' (",
                      device_str(x.device()), "), got ", device_str(t.device()));
  shape(op, name, t, expected, layout);
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
