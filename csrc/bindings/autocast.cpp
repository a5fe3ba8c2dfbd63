// Autocast rules: inside torch.autocast the forward ops run in the autocast
// dtype (float16 / bfloat16), as torch's own rnn and
// scaled_dot_product_attention do. The kernels still accumulate in fp32.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

namespace fusedseq {
namespace {

template <c10::DeviceType dev>
struct Autocast {
  static at::ScalarType dtype() { return at::autocast::get_lower_precision_fp_from_device_type(dev); }
  static at::Tensor cast(const at::Tensor& t) { return at::autocast::cached_cast(dtype(), t, dev); }
  static std::optional<at::Tensor> cast(const std::optional<at::Tensor>& t) {
    return at::autocast::cached_cast(dtype(), t, dev);
  }
  using Guard = c10::impl::ExcludeDispatchKeyGuard;
  static c10::DispatchKey key() { return at::autocast::get_autocast_dispatch_key_from_device_type(dev); }

  static at::Tensor rnn_cell(const at::Tensor& x, const at::Tensor& h, const at::Tensor& w_ih, const at::Tensor& w_hh,
                             const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                             c10::string_view act) {
    Guard g(key());
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fusedseq::rnn_cell", "").typed<decltype(rnn_cell)>();
    return op.call(cast(x), cast(h), cast(w_ih), cast(w_hh), cast(b_ih), cast(b_hh), act);
  }

  static std::tuple<at::Tensor, at::Tensor> rnn(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                                const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                                const std::optional<at::Tensor>& b_hh, c10::string_view act) {
    Guard g(key());
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fusedseq::rnn", "").typed<decltype(rnn)>();
    return op.call(cast(x), cast(h0), cast(w_ih), cast(w_hh), cast(b_ih), cast(b_hh), act);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_fwd(
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& attn_mask,
      double dropout_p, bool is_causal, double scale, int64_t wl, int64_t wr, int64_t seed, int64_t offset) {
    Guard g(key());
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("fusedseq::attention_fwd", "").typed<decltype(attention_fwd)>();
    return op.call(cast(q), cast(k), cast(v), cast(attn_mask), dropout_p, is_causal, scale, wl, wr, seed, offset);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_fwd(
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_q, const at::Tensor& cu_k,
      int64_t max_q, int64_t max_k, double dropout_p, bool is_causal, double scale, int64_t wl, int64_t wr,
      int64_t seed, int64_t offset) {
    Guard g(key());
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fusedseq::attention_varlen_fwd", "")
                         .typed<decltype(attention_varlen_fwd)>();
    return op.call(cast(q), cast(k), cast(v), cu_q, cu_k, max_q, max_k, dropout_p, is_causal, scale, wl, wr, seed,
                   offset);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fusedseq, AutocastCPU, m) {
  using A = Autocast<c10::DeviceType::CPU>;
  m.impl("rnn_cell", &A::rnn_cell);
  m.impl("rnn", &A::rnn);
  m.impl("attention_fwd", &A::attention_fwd);
  m.impl("attention_varlen_fwd", &A::attention_varlen_fwd);
}

TORCH_LIBRARY_IMPL(fusedseq, AutocastCUDA, m) {
  using A = Autocast<c10::DeviceType::CUDA>;
  m.impl("rnn_cell", &A::rnn_cell);
  m.impl("rnn", &A::rnn);
  m.impl("attention_fwd", &A::attention_fwd);
  m.impl("attention_varlen_fwd", &A::attention_varlen_fwd);
}

}  // namespace fusedseq
