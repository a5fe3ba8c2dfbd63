// Torch-free driver of the self-test kernels (csrc/cuda/selftest/), built with
// g++ against the emulator. It is what the mutation tests build once per
// planted bug, and what CI builds with ASan+UBSan: every check runs the CUDA
// source on fresh random inputs against a float64 CPU reference, with outputs
// poisoned (NaN) beforehand and inputs allocated to their exact size (so that
// ASan sees a read past the end).
//
//   selftest_driver [gemm|softmax|rnn|fragments|all]
// Prints one line per check; exits 0 when all pass, 1 when a result is wrong,
// 2 when the emulator (or a launcher) reports an error.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/selftest/selftest.h"
#include "emu/fragments.h"
#include "emu/half.h"

namespace st = fusedseq::cuda::selftest;
namespace emu = fusedseq::emu;

namespace {

// A buffer of exactly n elements, 16-byte aligned (ASan sees its true end).
template <class T>
struct Buffer {
  std::unique_ptr<T, decltype(&std::free)> p{nullptr, &std::free};
  size_t n = 0;
  explicit Buffer(size_t count) : n(count) {
    const size_t bytes = (count * sizeof(T) + 15) / 16 * 16;
    p.reset(static_cast<T*>(std::aligned_alloc(16, bytes)));
  }
  T* data() const { return p.get(); }
  T& operator[](size_t i) const { return p.get()[i]; }
};

std::mt19937_64 rng(0x5eed);
int failures = 0, errors = 0;

float normal() { return std::normal_distribution<float>(0.0f, 1.0f)(rng); }

void poison(float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
}

// Runs a check; a thrown error counts as an error, a false result as a failure.
void check(const std::string& name, const std::function<std::string()>& body) {
  try {
    const std::string bad = body();
    if (bad.empty()) {
      std::printf("PASS %s\n", name.c_str());
    } else {
      std::printf("FAIL %s: %s\n", name.c_str(), bad.c_str());
      ++failures;
    }
  } catch (const std::exception& e) {
    std::printf("ERROR %s: %s\n", name.c_str(), e.what());
    ++errors;
  }
  std::fflush(stdout);
}

// |out - ref| <= tol * scale elementwise; "" or a description of the worst.
std::string compare(const float* out, const std::vector<double>& ref, const std::vector<double>& scale, double tol) {
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(out[i]) - ref[i]), allowed = tol * scale[i] + 1e-30;
    const double ratio = std::isnan(err) ? INFINITY : err / allowed;
    if (ratio > 1) ++bad;
    if (ratio > worst_ratio || (bad == 1 && ratio > 1)) worst_ratio = ratio, worst = i;
  }
  if (!bad) return "";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%zu of %zu elements wrong; worst [%zu]: %g vs %g", bad, ref.size(), worst,
                double(out[worst]), ref[worst]);
  return buf;
}

// sum_k a[k sa] b[k sb] and sum_k |a[k sa] b[k sb]| in float64: a reference
// value and the scale its rounding error is judged against.
template <class A, class B>
std::pair<double, double> dot(const A* a, int64_t sa, const B* b, int64_t sb, int64_t n) {
  double s = 0, abs_sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double p = double(a[k * sa]) * double(b[k * sb]);
    s += p, abs_sum += std::fabs(p);
  }
  return {s, abs_sum};
}

// ------------------------------------------------------------------ gemm --
std::string gemm_case(st::Half16 dt, int64_t M, int64_t N, int64_t K) {
  const int64_t lda = (K + 7) / 8 * 8, ldb = (N + 7) / 8 * 8, ldc = N;
  Buffer<uint16_t> a(size_t(M * lda)), b(size_t(K * ldb));
  Buffer<float> c(size_t(M * ldc));
  std::vector<float> af(size_t(M * K)), bf(size_t(K * N));
  auto to_bits = [&](float f) {
    return dt == st::Half16::BF16 ? emu::float_to_bf16_bits(f) : emu::float_to_half_bits(f);
  };
  auto to_float = [&](uint16_t h) {
    return dt == st::Half16::BF16 ? emu::bf16_bits_to_float(h) : emu::half_bits_to_float(h);
  };
  for (int64_t i = 0; i < M * lda; ++i) a[size_t(i)] = to_bits(normal());
  for (int64_t i = 0; i < K * ldb; ++i) b[size_t(i)] = to_bits(normal());
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) af[size_t(i * K + k)] = to_float(a[size_t(i * lda + k)]);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) bf[size_t(k * N + j)] = to_float(b[size_t(k * ldb + j)]);
  poison(c.data(), c.n);
  st::gemm({a.data(), b.data(), c.data(), M, N, K, lda, ldb, ldc, dt, nullptr});
  std::vector<double> ref(size_t(M * N)), scale(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      std::tie(ref[size_t(i * N + j)], scale[size_t(i * N + j)]) = dot(&af[size_t(i * K)], 1, &bf[size_t(j)], N, K);
  return compare(c.data(), ref, scale, 1e-5);
}

void gemm_checks() {
  struct Shape {
    int64_t M, N, K;
  };
  // Whole tiles, then tails in each of M, N and K, and all three at once.
  for (const auto& s : {Shape{64, 64, 128}, Shape{128, 64, 96}, Shape{37, 64, 96}, Shape{64, 40, 128},
                        Shape{64, 64, 100}, Shape{77, 53, 131}, Shape{5, 9, 3}})
    for (auto dt : {st::Half16::BF16, st::Half16::FP16}) {
      const std::string name = std::string("gemm ") + (dt == st::Half16::BF16 ? "bf16" : "fp16") + " M=" +
                               std::to_string(s.M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K);
      check(name, [&] { return gemm_case(dt, s.M, s.N, s.K); });
    }
}

// --------------------------------------------------------------- softmax --
std::string softmax_case(int64_t rows, int64_t cols) {
  Buffer<float> x(size_t(rows * cols)), y(size_t(rows * cols));
  for (size_t i = 0; i < x.n; ++i) x[i] = 3.0f * normal();
  poison(y.data(), y.n);
  st::row_softmax({x.data(), y.data(), rows, cols, cols, cols, nullptr});
  std::vector<double> ref(x.n), scale(x.n);
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < cols; ++c) m = std::max(m, double(x[size_t(r * cols + c)]));
    for (int64_t c = 0; c < cols; ++c) s += std::exp(double(x[size_t(r * cols + c)]) - m);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = size_t(r * cols + c);
      ref[i] = std::exp(double(x[i]) - m) / s;
      scale[i] = ref[i] + 1e-3 / double(cols);
    }
  }
  return compare(y.data(), ref, scale, 1e-5);
}

void softmax_checks() {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{3, 128}, {4, 1000}, {2, 77}, {5, 1}, {1, 4099}})
    check("softmax rows=" + std::to_string(rows) + " cols=" + std::to_string(cols),
          [&] { return softmax_case(rows, cols); });
}

// ------------------------------------------------------------------- rnn --
std::string rnn_case(int64_t B, int64_t H, int64_t steps) {
  Buffer<float> w(size_t(H * H)), h0(size_t(B * H)), out(size_t(steps * B * H));
  Buffer<unsigned> counter(1);
  counter[0] = 0;
  for (size_t i = 0; i < w.n; ++i) w[i] = 1.5f * normal() / std::sqrt(float(H));
  for (size_t i = 0; i < h0.n; ++i) h0[i] = normal();
  poison(out.data(), out.n);
  st::persistent_rnn({w.data(), h0.data(), out.data(), counter.data(), B, H, steps, st::kPersistentRnnBlocks, nullptr});
  std::vector<double> h(h0.data(), h0.data() + h0.n), ref, scale;
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<double> next(size_t(B * H));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < H; ++i) {
        const auto [s, sa] = dot(&w[size_t(i * H)], 1, &h[size_t(b * H)], 1, H);
        next[size_t(b * H + i)] = std::tanh(s);
        ref.push_back(std::tanh(s));
        scale.push_back(sa + 1.0);
      }
    h = next;
  }
  const std::string bad = compare(out.data(), ref, scale, 1e-4);
  if (!bad.empty()) return bad;
  if (counter[0] != unsigned(st::kPersistentRnnBlocks * steps))
    return "grid barrier counter " + std::to_string(counter[0]) + ", expected " +
           std::to_string(st::kPersistentRnnBlocks * steps);
  return "";
}

void rnn_checks() {
  for (auto [B, H, steps] : {std::tuple<int64_t, int64_t, int64_t>{2, 64, 5}, {3, 128, 4}, {1, 256, 3}})
    check("persistent_rnn B=" + std::to_string(B) + " H=" + std::to_string(H) + " steps=" + std::to_string(steps),
          [&] { return rnn_case(B, H, steps); });
}

// ------------------------------------------------------------- fragments --
void fragment_checks() {
  for (int count : {1, 2, 4})
    for (bool trans : {false, true})
      check("ldmatrix_probe x" + std::to_string(count) + (trans ? ".trans" : ""), [&]() -> std::string {
        Buffer<int32_t> out(32 * 8);
        st::ldmatrix_probe({out.data(), count, trans, nullptr});
        for (int lane = 0; lane < 32; ++lane)
          for (int reg = 0; reg < 4; ++reg)
            for (int h = 0; h < 2; ++h) {
              const auto rc = fusedseq::fragments::ldmatrix(lane, h, trans);
              const int want = reg < count ? reg * 64 + rc.row * 8 + rc.col : -1;
              if (out[size_t(lane * 8 + reg * 2 + h)] != want)
                return "lane " + std::to_string(lane) + " reg " + std::to_string(reg) + " half " + std::to_string(h) +
                       ": got code " + std::to_string(out[size_t(lane * 8 + reg * 2 + h)]) + ", expected " +
                       std::to_string(want);
            }
        return "";
      });
  for (auto dt : {st::Half16::BF16, st::Half16::FP16})
    check(std::string("mma_probe ") + (dt == st::Half16::BF16 ? "bf16" : "fp16"), [&] {
      Buffer<uint16_t> a(256), b(128);
      Buffer<float> c(128), d(128);
      std::vector<double> af(256), bf(128), ref(128), scale(128);
      for (int i = 0; i < 256; ++i) {
        const float f = normal();
        a[size_t(i)] = dt == st::Half16::BF16 ? emu::float_to_bf16_bits(f) : emu::float_to_half_bits(f);
        af[size_t(i)] = dt == st::Half16::BF16 ? emu::bf16_bits_to_float(a[size_t(i)]) : emu::half_bits_to_float(a[size_t(i)]);
      }
      for (int i = 0; i < 128; ++i) {
        const float f = normal();
        b[size_t(i)] = dt == st::Half16::BF16 ? emu::float_to_bf16_bits(f) : emu::float_to_half_bits(f);
        bf[size_t(i)] = dt == st::Half16::BF16 ? emu::bf16_bits_to_float(b[size_t(i)]) : emu::half_bits_to_float(b[size_t(i)]);
        c[size_t(i)] = normal();
      }
      poison(d.data(), d.n);
      st::mma_probe({a.data(), b.data(), c.data(), d.data(), dt, nullptr});
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
          const auto [s, sa] = dot(&af[size_t(m * 16)], 1, &bf[size_t(n)], 8, 16);
          ref[size_t(m * 8 + n)] = s + c[size_t(m * 8 + n)];
          scale[size_t(m * 8 + n)] = sa + std::fabs(c[size_t(m * 8 + n)]);
        }
      return compare(d.data(), ref, scale, 1e-5);
    });
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  if (what == "gemm" || what == "all") gemm_checks();
  if (what == "softmax" || what == "all") softmax_checks();
  if (what == "rnn" || what == "all") rnn_checks();
  if (what == "fragments" || what == "all") fragment_checks();
  std::printf("%d failed, %d errors\n", failures, errors);
  return errors ? 2 : failures ? 1 : 0;
}
