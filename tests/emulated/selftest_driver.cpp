// Torch-free driver of the self-test kernels (csrc/cuda/selftest/), of the
// persistent RNN kernels of csrc/cuda/rnn.cu (group cuda_rnn) and of the
// persistent LSTM kernels of csrc/cuda/gated_rnn.cu (group cuda_lstm), built with
// g++ against the emulator. It is what the mutation tests build once per
// planted bug, and what CI builds with ASan+UBSan: every check runs the CUDA
// source on fresh random inputs against a float64 CPU reference, with outputs
// poisoned (NaN) beforehand and inputs allocated to their exact size (so that
// ASan sees a read past the end).
//
//   selftest_driver [gemm|softmax|rnn|cuda_rnn|cuda_lstm|fragments|all]
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

#include "cuda/gated_rnn.h"
#include "cuda/rnn.h"
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

// -------------------------------------------------------------- cuda_rnn --
// csrc/cuda/rnn.cu's persistent recurrence, forward then BPTT, fp32 tanh with
// both biases, against a float64 reference: out[t] = tanh(P[t] + b + h_{t-1} Wᵀ)
// and dz_t = (G[t] + [t = T-1] g_n + dz_{t+1} W) ∘ (1 - out[t]²), grad_h0 = dz_0 W.
std::string cuda_rnn_case(int64_t T, int64_t B, int64_t H) {
  namespace cu = fusedseq::cuda;
  const size_t BH = size_t(B * H), TBH = size_t(T) * BH;
  Buffer<float> w(size_t(H * H)), wt(size_t(H * H)), h0(BH), b_ih{size_t(H)}, b_hh{size_t(H)}, out(TBH),
      proj(TBH), state(2 * BH), go(TBH), gn(BH), dz(TBH), dh0(BH);
  Buffer<unsigned> counter(1);
  for (int64_t i = 0; i < H; ++i)
    for (int64_t k = 0; k < H; ++k) w[size_t(i * H + k)] = 0.7f * normal() / std::sqrt(float(H));
  for (int64_t i = 0; i < H; ++i)
    for (int64_t k = 0; k < H; ++k) wt[size_t(k * H + i)] = w[size_t(i * H + k)];
  for (size_t i = 0; i < BH; ++i) h0[i] = normal(), gn[i] = normal();
  for (int64_t i = 0; i < H; ++i) b_ih[size_t(i)] = 0.5f * normal(), b_hh[size_t(i)] = 0.5f * normal();
  for (size_t i = 0; i < TBH; ++i) proj[i] = normal(), go[i] = normal();
  poison(out.data(), out.n);
  poison(state.data(), state.n);
  poison(dz.data(), dz.n);
  poison(dh0.data(), dh0.n);
  counter[0] = 0;
  const auto fwd = cu::rnn_seq_forward({h0.data(), H, w.data(), H, b_ih.data(), b_hh.data(), proj.data(), out.data(),
                                        state.data(),
                                        counter.data(), T, B, H, fusedseq::Activation::Tanh, cu::RnnDtype::F32,
                                        cu::RnnPath::Persistent, nullptr});
  if (fwd != cu::RnnPath::Persistent) return "the forward did not take the persistent path";
  std::vector<double> h(h0.data(), h0.data() + BH), ys, ref, scale;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> next(BH);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < H; ++i) {
        const auto [s, sa] = dot(&w[size_t(i * H)], 1, &h[size_t(b * H)], 1, H);
        const size_t at = size_t(t) * BH + size_t(b * H + i);
        next[size_t(b * H + i)] = std::tanh(s + proj[at] + b_ih[size_t(i)] + b_hh[size_t(i)]);
        ref.push_back(next[size_t(b * H + i)]);
        scale.push_back(sa + std::fabs(proj[at]) + 2.0);
      }
    h = next;
  }
  std::string bad = compare(out.data(), ref, scale, 1e-5);
  if (!bad.empty()) return "forward: " + bad;
  // BPTT from the forward's own (float) outputs.
  poison(state.data(), state.n);
  counter[0] = 0;
  const auto bwd = cu::rnn_seq_backward({go.data(), gn.data(), H, out.data(), wt.data(), H, dz.data(), dh0.data(),
                                         state.data(), counter.data(), T, B, H, fusedseq::Activation::Tanh,
                                         cu::RnnDtype::F32, cu::RnnPath::Persistent, nullptr});
  if (bwd != cu::RnnPath::Persistent) return "the backward did not take the persistent path";
  std::vector<double> dzr(TBH), dz_scale(TBH), dh0r(BH), dh0_scale(BH);
  for (int64_t t = T - 1; t >= 0; --t)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) {
        const size_t at = size_t(t) * BH + size_t(b * H + j);
        double g = go[at] + (t == T - 1 ? gn[size_t(b * H + j)] : 0.0), ga = std::fabs(g);
        if (t < T - 1)
          for (int64_t i = 0; i < H; ++i) {
            const double term = dzr[at + BH - size_t(j) + size_t(i)] * w[size_t(i * H + j)];
            g += term, ga += std::fabs(term);
          }
        const double y = out[at];
        dzr[at] = g * (1.0 - y * y), dz_scale[at] = ga + 1.0;
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      double g = 0, ga = 0;
      for (int64_t i = 0; i < H; ++i) {
        const double term = dzr[size_t(b * H + i)] * w[size_t(i * H + j)];
        g += term, ga += std::fabs(term);
      }
      dh0r[size_t(b * H + j)] = g, dh0_scale[size_t(b * H + j)] = ga + 1.0;
    }
  bad = compare(dz.data(), dzr, dz_scale, 1e-5);
  if (!bad.empty()) return "backward dz: " + bad;
  bad = compare(dh0.data(), dh0r, dh0_scale, 1e-5);
  return bad.empty() ? "" : "backward grad_h0: " + bad;
}

void cuda_rnn_checks() {
  for (auto [T, B, H] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 64}, {4, 2, 33}, {2, 1, 9}})
    check("cuda rnn persistent T=" + std::to_string(T) + " B=" + std::to_string(B) + " H=" + std::to_string(H),
          [&] { return cuda_rnn_case(T, B, H); });
}

// ------------------------------------------------------------- cuda_lstm --
// csrc/cuda/gated_rnn.cu's persistent LSTM recurrence, forward then BPTT,
// fp32 with both biases, against a float64 reference (gates i, f, g, o):
//   z = P[t] + h_{t-1} Wᵀ + b,  c_t = σ(z_f) c_{t-1} + σ(z_i) tanh(z_g),  h_t = σ(z_o) tanh(c_t);
// BPTT from the forward's own (float) gates and cell states, the formulas of csrc/cpu/gates.h.
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

std::string cuda_lstm_case(int64_t T, int64_t B, int64_t H) {
  namespace cu = fusedseq::cuda;
  const int64_t G = 4, GH = G * H;
  const size_t BH = size_t(B * H), TBH = size_t(T) * BH, TBG = TBH * G;
  Buffer<float> w(size_t(GH * H)), wt(size_t(GH * H)), h0(BH), c0(BH), b_ih{size_t(GH)}, b_hh{size_t(GH)},
      proj(TBG), gates(TBG), out(TBH), cell(TBH), state(2 * BH), go(TBH), gc(TBH), dz(TBG), dh0(BH), dc0(BH),
      bstate(2 * size_t(B * GH)), carry(BH);
  Buffer<unsigned> counter(1);
  for (int64_t r = 0; r < GH; ++r)
    for (int64_t k = 0; k < H; ++k) w[size_t(r * H + k)] = 0.7f * normal() / std::sqrt(float(H));
  for (int64_t r = 0; r < GH; ++r)
    for (int64_t k = 0; k < H; ++k) wt[size_t(k * GH + r)] = w[size_t(r * H + k)];
  for (size_t i = 0; i < BH; ++i) h0[i] = normal(), c0[i] = normal();
  for (int64_t r = 0; r < GH; ++r) b_ih[size_t(r)] = 0.5f * normal(), b_hh[size_t(r)] = 0.5f * normal();
  for (size_t i = 0; i < TBG; ++i) gates[i] = proj[i] = normal();
  for (size_t i = 0; i < TBH; ++i) go[i] = normal(), gc[i] = normal();
  for (auto* b : {&out, &cell, &state, &dz, &dh0, &dc0, &bstate, &carry}) poison(b->data(), b->n);
  counter[0] = 0;
  const auto fwd = cu::gated_seq_forward({cu::GatedKind::Lstm, h0.data(), H, c0.data(), H, w.data(), H, b_ih.data(),
                                          b_hh.data(), gates.data(), out.data(), cell.data(), state.data(),
                                          counter.data(), T, B, H, cu::RnnDtype::F32, cu::RnnPath::Persistent,
                                          nullptr});
  if (fwd != cu::RnnPath::Persistent) return "the forward did not take the persistent path";
  std::vector<double> h(h0.data(), h0.data() + BH), c(c0.data(), c0.data() + BH), hs, hs_scale, cs, cs_scale;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> hn(BH), cn(BH);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) {
        double act[4], scale = 0;
        for (int64_t q = 0; q < G; ++q) {
          const int64_t r = q * H + j;
          const auto [s, sa] = dot(&w[size_t(r * H)], 1, &h[size_t(b * H)], 1, H);
          const double z = s + proj[size_t((t * B + b) * GH + r)] + b_ih[size_t(r)] + b_hh[size_t(r)];
          act[q] = q == 2 ? std::tanh(z) : sigmoid(z);
          scale += sa + 2.0;
        }
        const size_t at = size_t(b * H + j);
        cn[at] = act[1] * c[at] + act[0] * act[2], hn[at] = act[3] * std::tanh(cn[at]);
        cs.push_back(cn[at]), cs_scale.push_back(scale + std::fabs(c[at]) + 1.0);
        hs.push_back(hn[at]), hs_scale.push_back(scale + std::fabs(c[at]) + 1.0);
      }
    h = hn, c = cn;
  }
  std::string bad = compare(out.data(), hs, hs_scale, 1e-5);
  if (!bad.empty()) return "forward h: " + bad;
  bad = compare(cell.data(), cs, cs_scale, 1e-5);
  if (!bad.empty()) return "forward c: " + bad;
  counter[0] = 0;
  const auto bwd = cu::gated_seq_backward({cu::GatedKind::Lstm, go.data(), gc.data(), gates.data(), cell.data(),
                                           nullptr, c0.data(), H, wt.data(), GH, dz.data(), dh0.data(), dc0.data(),
                                           bstate.data(), carry.data(), counter.data(), T, B, H, cu::RnnDtype::F32,
                                           cu::RnnPath::Persistent, nullptr});
  if (bwd != cu::RnnPath::Persistent) return "the backward did not take the persistent path";
  std::vector<double> dzr(TBG), dz_scale(TBG), dcr(BH, 0.0), dc_scale(BH, 0.0), dh0r(BH), dh0_scale(BH);
  for (int64_t t = T - 1; t >= 0; --t)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) {
        const size_t at = size_t(b * H + j), tat = size_t(t) * BH + at, row = size_t((t * B + b) * GH);
        double dh = go[tat], da = std::fabs(dh) + 1.0;
        if (t < T - 1)
          for (int64_t r = 0; r < GH; ++r) {
            const double term = dzr[row + size_t(B * GH) + size_t(r)] * w[size_t(r * H + j)];
            dh += term, da += std::fabs(term);
          }
        const double i = gates[row + size_t(j)], f = gates[row + size_t(H + j)], g = gates[row + size_t(2 * H + j)],
                     o = gates[row + size_t(3 * H + j)];
        const double cp = t == 0 ? c0[at] : cell[tat - BH], tc = std::tanh(f * cp + i * g);
        const double dc = gc[tat] + (t < T - 1 ? dcr[at] : 0.0) + dh * o * (1 - tc * tc);
        const double sc = da + std::fabs(gc[tat]) + dc_scale[at];
        dcr[at] = dc * f, dc_scale[at] = sc;
        const double d[4] = {dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)};
        for (int q = 0; q < 4; ++q) dzr[row + size_t(q * H + j)] = d[q], dz_scale[row + size_t(q * H + j)] = sc;
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      const auto [s, sa] = dot(&dzr[size_t(b * GH)], 1, &w[size_t(j)], H, GH);
      dh0r[size_t(b * H + j)] = s, dh0_scale[size_t(b * H + j)] = sa + 1.0;
    }
  bad = compare(dz.data(), dzr, dz_scale, 1e-5);
  if (!bad.empty()) return "backward dz: " + bad;
  bad = compare(dh0.data(), dh0r, dh0_scale, 1e-5);
  if (!bad.empty()) return "backward grad_h0: " + bad;
  bad = compare(dc0.data(), dcr, dc_scale, 1e-5);
  return bad.empty() ? "" : "backward grad_c0: " + bad;
}

void cuda_lstm_checks() {
  for (auto [T, B, H] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 40}, {3, 2, 17}})
    check("cuda lstm persistent T=" + std::to_string(T) + " B=" + std::to_string(B) + " H=" + std::to_string(H),
          [&] { return cuda_lstm_case(T, B, H); });
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
  if (what == "cuda_rnn" || what == "all") cuda_rnn_checks();
  if (what == "cuda_lstm" || what == "all") cuda_lstm_checks();
  if (what == "fragments" || what == "all") fragment_checks();
  std::printf("%d failed, %d errors\n", failures, errors);
  return errors ? 2 : failures ? 1 : 0;
}
