// The self-test kernels (csrc/cuda/selftest/) as torch ops, through the same
// mechanism as every CUDA op (csrc/bindings/cuda_ops.h): this file is
// compiled into the CUDA extension, as torch.ops.fusedseq_selftest.* for CUDA
// tensors, and into the emulated library, as
// torch.ops.fusedseq_selftest_emulated.* for CPU tensors. Tests reach the
// kernels' source through both (tests/test_emulated_selftest.py).
#include <string>

#include "bindings/checks.h"
#include "bindings/cuda_binding.h"
#include "bindings/stable.h"
#include "cuda/selftest/selftest.h"

#if FUSEDSEQ_EMULATED_LIBRARY
#define FUSEDSEQ_SELFTEST_NS fusedseq_selftest_emulated
#define FUSEDSEQ_SELFTEST_KEY CPU
#else
#define FUSEDSEQ_SELFTEST_NS fusedseq_selftest
#define FUSEDSEQ_SELFTEST_KEY CUDA
#endif
#define FUSEDSEQ_STR2(x) #x
#define FUSEDSEQ_STR(x) FUSEDSEQ_STR2(x)
// Indirections so that the namespace macros expand before being pasted.
#define FUSEDSEQ_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define FUSEDSEQ_LIBRARY_IMPL(ns, key, m) STABLE_TORCH_LIBRARY_IMPL(ns, key, m)

namespace fusedseq {
namespace {

namespace st = cuda::selftest;

std::string op_name(const char* op) { return std::string(FUSEDSEQ_STR(FUSEDSEQ_SELFTEST_NS)) + "." + op; }

void dims(const std::string& op, const char* name, const Tensor& t, int64_t n, const char* layout) {
  FUSEDSEQ_CHECK_VALUE(t.dim() == n, op, ": argument '", name, "' must be ", n, "-D ", layout, ", got shape ",
                       checks::sizes_str(t.sizes()));
  for (int64_t d = 0; d < n; ++d)
    FUSEDSEQ_CHECK_VALUE(t.size(d) > 0, op, ": argument '", name, "' must not be empty, got shape ",
                         checks::sizes_str(t.sizes()));
}

st::Half16 half16(const std::string& op, const char* name, const Tensor& t) {
  const auto dt = t.scalar_type();
  FUSEDSEQ_CHECK_TYPE(dt == ScalarType::BFloat16 || dt == ScalarType::Half, op, ": argument '", name,
                      "' must be bfloat16 or float16, got ", checks::dtype_str(dt));
  return dt == ScalarType::BFloat16 ? st::Half16::BF16 : st::Half16::FP16;
}

void float32(const std::string& op, const char* name, const Tensor& t) {
  FUSEDSEQ_CHECK_TYPE(t.scalar_type() == ScalarType::Float, op, ": argument '", name, "' must be float32, got ",
                      checks::dtype_str(t.scalar_type()));
}

// a (M, K) @ b (K, N) -> (M, N) float32; a, b bf16 or fp16 (the same).
Tensor gemm(const Tensor& a, const Tensor& b) {
  const std::string op = op_name("gemm");
  DeviceContext ctx(op.c_str(), {{"a", &a}, {"b", &b}});
  dims(op, "a", a, 2, "(M, K)");
  dims(op, "b", b, 2, "(K, N)");
  const st::Half16 dt = half16(op, "a", a);
  FUSEDSEQ_CHECK_TYPE(b.scalar_type() == a.scalar_type(), op, ": argument 'b' must have the dtype of 'a' (",
                      checks::dtype_str(a.scalar_type()), "), got ", checks::dtype_str(b.scalar_type()));
  FUSEDSEQ_CHECK_VALUE(b.size(0) == a.size(1), op, ": argument 'b' must have shape (K, N) with K = ", a.size(1),
                       ", got ", checks::sizes_str(b.sizes()));
  const Tensor a16 = rows_16_byte_aligned(a), b16 = rows_16_byte_aligned(b);
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Tensor c = empty({M, N}, ScalarType::Float, a);
  st::gemm({a16.data_ptr(), b16.data_ptr(), static_cast<float*>(c.data_ptr()), M, N, K, a16.stride(0),
            b16.stride(0), N, dt, ctx.stream()});
  return c;
}

// softmax over the last dim of x (R, C), float32.
Tensor row_softmax(const Tensor& x) {
  const std::string op = op_name("row_softmax");
  DeviceContext ctx(op.c_str(), {{"x", &x}});
  dims(op, "x", x, 2, "(R, C)");
  float32(op, "x", x);
  const Tensor xc = x.stride(1) == 1 ? x : torch::stable::contiguous(x);
  Tensor y = empty({x.size(0), x.size(1)}, ScalarType::Float, x);
  st::row_softmax({static_cast<const float*>(xc.data_ptr()), static_cast<float*>(y.data_ptr()), x.size(0),
                   x.size(1), xc.stride(0), x.size(1), ctx.stream()});
  return y;
}

// h_{t+1} = tanh(W h_t) for `steps` steps: w (H, H), h0 (B, H) -> (steps, B, H), float32.
Tensor persistent_rnn(const Tensor& w, const Tensor& h0, int64_t steps) {
  const std::string op = op_name("persistent_rnn");
  DeviceContext ctx(op.c_str(), {{"w", &w}, {"h0", &h0}});
  dims(op, "w", w, 2, "(H, H)");
  dims(op, "h0", h0, 2, "(B, H)");
  float32(op, "w", w);
  float32(op, "h0", h0);
  const int64_t H = w.size(0), B = h0.size(0);
  FUSEDSEQ_CHECK_VALUE(w.size(1) == H && h0.size(1) == H, op, ": 'w' must be (H, H) and 'h0' (B, H), got ",
                       checks::sizes_str(w.sizes()), " and ", checks::sizes_str(h0.sizes()));
  FUSEDSEQ_CHECK_VALUE(steps > 0, op, ": argument 'steps' must be positive, got ", steps);
  const Tensor wc = torch::stable::contiguous(w), hc = torch::stable::contiguous(h0);
  Tensor out = empty({steps, B, H}, ScalarType::Float, w);
  Tensor barrier = zeroed_workspace(w, 1);  // the grid barrier's counter
  st::persistent_rnn({static_cast<const float*>(wc.data_ptr()), static_cast<const float*>(hc.data_ptr()),
                      static_cast<float*>(out.data_ptr()), static_cast<unsigned*>(barrier.data_ptr()), B, H, steps,
                      st::kPersistentRnnBlocks, ctx.stream()});
  return out;
}

// The codes each lane received from ldmatrix.x{count}[.trans]: (32, 4, 2)
// int32 on the device of `like` (see selftest.h).
Tensor ldmatrix_probe(const Tensor& like, int64_t count, bool trans) {
  const std::string op = op_name("ldmatrix_probe");
  DeviceContext ctx(op.c_str(), {{"like", &like}});
  FUSEDSEQ_CHECK_VALUE(count == 1 || count == 2 || count == 4, op, ": argument 'count' must be 1, 2 or 4, got ",
                       count);
  Tensor out = empty({32, 4, 2}, ScalarType::Int, like);
  st::ldmatrix_probe({static_cast<int32_t*>(out.data_ptr()), static_cast<int32_t>(count), trans, ctx.stream()});
  return out;
}

// One mma.m16n8k16 through the fragment maps: a (16, 16), b (16, 8) bf16 or
// fp16, c (16, 8) float32 -> a b + c, float32.
Tensor mma_probe(const Tensor& a, const Tensor& b, const Tensor& c) {
  const std::string op = op_name("mma_probe");
  DeviceContext ctx(op.c_str(), {{"a", &a}, {"b", &b}, {"c", &c}});
  const st::Half16 dt = half16(op, "a", a);
  FUSEDSEQ_CHECK_TYPE(b.scalar_type() == a.scalar_type(), op, ": 'b' must have the dtype of 'a'");
  float32(op, "c", c);
  FUSEDSEQ_CHECK_VALUE(a.dim() == 2 && a.size(0) == 16 && a.size(1) == 16 && b.dim() == 2 && b.size(0) == 16 &&
                           b.size(1) == 8 && c.dim() == 2 && c.size(0) == 16 && c.size(1) == 8,
                       op, ": expects a (16, 16), b (16, 8) and c (16, 8)");
  const Tensor ac = torch::stable::contiguous(a), bc = torch::stable::contiguous(b), cc = torch::stable::contiguous(c);
  Tensor d = empty({16, 8}, ScalarType::Float, c);
  st::mma_probe({ac.data_ptr(), bc.data_ptr(), static_cast<const float*>(cc.data_ptr()),
                 static_cast<float*>(d.data_ptr()), dt, ctx.stream()});
  return d;
}

}  // namespace

FUSEDSEQ_LIBRARY(FUSEDSEQ_SELFTEST_NS, m) {
  m.def("gemm(Tensor a, Tensor b) -> Tensor");
  m.def("row_softmax(Tensor x) -> Tensor");
  m.def("persistent_rnn(Tensor w, Tensor h0, int steps) -> Tensor");
  m.def("ldmatrix_probe(Tensor like, int count, bool trans) -> Tensor");
  m.def("mma_probe(Tensor a, Tensor b, Tensor c) -> Tensor");
}

FUSEDSEQ_LIBRARY_IMPL(FUSEDSEQ_SELFTEST_NS, FUSEDSEQ_SELFTEST_KEY, m) {
  m.impl("gemm", TORCH_BOX(&gemm));
  m.impl("row_softmax", TORCH_BOX(&row_softmax));
  m.impl("persistent_rnn", TORCH_BOX(&persistent_rnn));
  m.impl("ldmatrix_probe", TORCH_BOX(&ldmatrix_probe));
  m.impl("mma_probe", TORCH_BOX(&mma_probe));
}

}  // namespace fusedseq
