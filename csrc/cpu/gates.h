// The element-wise halves of the LSTM and GRU steps: what the fused kernels
// run on a row chunk of gate pre-activations right after the recurrent
// product, while that chunk is still in L1.
//
// Layout. A "gate row" is one batch row of a (·, G·H) gate buffer in torch's
// gate order (LSTM: i, f, g, o; GRU: r, z, n); every function here works on
// units [j0, j0 + n) of such a row and is handed a pointer to gate 0 of unit
// j0 plus the gate stride `gs` (= H), so gate q of that unit is at q·gs.
//
// Forward (LSTM), per unit:          Forward (GRU), per unit:
//   i, f, o = σ(z_i), σ(z_f), σ(z_o)   r = σ(z_r)   z = σ(z_z)
//   g = tanh(z_g)                      a = W_hn h + b_hn     (kept: the backward needs it)
//   c' = f c + i g                     n = tanh(z_n + r a)
//   h' = o tanh(c')                    h' = n + z (h - n)    (= (1 - z) n + z h)
//
// Backward (LSTM), given dh (= dL/dh' from the output and the future) and the
// carried dc (= dL/dc' from the future):
//   c' is recomputed as f c + i g: the very expression of the forward on the
//   very same saved operands, so it is bit-identical and never stored twice.
//   dc  = dc_carry + dh o (1 - tanh²c')     carried on: dc f
//   dz_i = dc g i(1-i)   dz_f = dc c f(1-f)   dz_g = dc i (1-g²)   dz_o = dh tanh(c') o(1-o)
// Backward (GRU), given dh:
//   dz_n = dh (1-z)(1-n²)   dz_z = dh (h - n) z(1-z)   dz_r = dz_n a r(1-r)
//   and dz_n r, the gradient of a = W_hn h + b_hn; the carried dh is dh z.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu/microkernels.h"

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

#if FUSEDSEQ_AVX2
// e^x to ~1 ulp: x = n ln2 + r with n = round(x log2 e) and r reduced with ln2
// split in two parts (Cody-Waite), so r carries no rounding error of the
// product x log2 e (folding that product into exp2_ps costs 17 ulp at
// |x| = 20); e^r on |r| <= ln2/2 by its Taylor series to degree 7
// (truncation < 3e-9). x is clamped to [-87, 89]: 2^n stays a normal number
// at the low end and becomes +inf at the top (n = 128); NaN propagates.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln2 high part: 12 bits, n·hi exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);     // ln2 - hi
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// σ(x) = 1 / (1 + e^-x): exactly 1 and 0 at the ends (e^-x saturates to 0
// and +inf), NaN stays NaN; a few ulp everywhere.
inline __m256 sigmoid_ps(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// Lanes [0, n) of 8: full loads and stores when n == 8, masked ones on a tail.
struct Lanes {
  __m256i m;
  bool full;
  explicit Lanes(int64_t n) : m(n >= 8 ? __m256i{} : tail_mask(n)), full(n >= 8) {}
  __m256 load(const float* p) const { return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); }
  void store(float* p, __m256 v) const {
    if (full)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, m, v);
  }
};
#endif

// ------------------------------------------------------------------ LSTM --
// z: gate row (in: pre-activations without `bias`, out: i, f, g, o);
// bias: combined b_ih + b_hh at the same offsets as z (gate stride gs), or
// null; c: c_{t-1}; c_out, h_out: c_t, h_t.
template <typename T>
inline void lstm_forward_row(T* z, int64_t gs, const T* bias, const T* c, T* c_out, T* h_out, int64_t n) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; j < n; j += 8) {
      const Lanes L(n - j);
      __m256 zi = L.load(z + j), zf = L.load(z + gs + j), zg = L.load(z + 2 * gs + j), zo = L.load(z + 3 * gs + j);
      if (bias) {
        zi = _mm256_add_ps(zi, L.load(bias + j));
        zf = _mm256_add_ps(zf, L.load(bias + gs + j));
        zg = _mm256_add_ps(zg, L.load(bias + 2 * gs + j));
        zo = _mm256_add_ps(zo, L.load(bias + 3 * gs + j));
      }
      const __m256 i = sigmoid_ps(zi), f = sigmoid_ps(zf), g = tanh_ps(zg), o = sigmoid_ps(zo);
      const __m256 cn = _mm256_fmadd_ps(f, L.load(c + j), _mm256_mul_ps(i, g));
      L.store(z + j, i);
      L.store(z + gs + j, f);
      L.store(z + 2 * gs + j, g);
      L.store(z + 3 * gs + j, o);
      L.store(c_out + j, cn);
      L.store(h_out + j, _mm256_mul_ps(o, tanh_ps(cn)));
    }
    return;
  }
#endif
  for (; j < n; ++j) {
    auto b = [&](int q) { return bias ? bias[q * gs + j] : T(0); };
    const T i = sigmoid(z[j] + b(0)), f = sigmoid(z[gs + j] + b(1));
    const T g = std::tanh(z[2 * gs + j] + b(2)), o = sigmoid(z[3 * gs + j] + b(3));
    const T cn = f * c[j] + i * g;
    z[j] = i, z[gs + j] = f, z[2 * gs + j] = g, z[3 * gs + j] = o;
    c_out[j] = cn;
    h_out[j] = o * std::tanh(cn);
  }
}

// gates: i, f, g, o of the step; c: c_{t-1}; dh: dL/dh_t; dc: in dL/dc_t from
// the future (and any direct gradient of c_t), out dL/dc_{t-1} through this
// step; dz: out, gradients of the four pre-activations (gate stride gs).
template <typename T>
inline void lstm_backward_row(const T* gates, int64_t gs, const T* c, const T* dh, T* dc, T* dz, int64_t n) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; j < n; j += 8) {
      const Lanes L(n - j);
      const __m256 i = L.load(gates + j), f = L.load(gates + gs + j), g = L.load(gates + 2 * gs + j),
                   o = L.load(gates + 3 * gs + j), cp = L.load(c + j), d = L.load(dh + j);
      const __m256 tc = tanh_ps(_mm256_fmadd_ps(f, cp, _mm256_mul_ps(i, g)));
      // dc = dc_carry + dh o (1 - tc²)
      const __m256 dct = _mm256_fmadd_ps(_mm256_mul_ps(d, o), _mm256_fnmadd_ps(tc, tc, one), L.load(dc + j));
      L.store(dc + j, _mm256_mul_ps(dct, f));
      const __m256 si = _mm256_mul_ps(i, _mm256_sub_ps(one, i));  // σ' = σ(1-σ)
      const __m256 sf = _mm256_mul_ps(f, _mm256_sub_ps(one, f));
      const __m256 so = _mm256_mul_ps(o, _mm256_sub_ps(one, o));
      L.store(dz + j, _mm256_mul_ps(_mm256_mul_ps(dct, g), si));
      L.store(dz + gs + j, _mm256_mul_ps(_mm256_mul_ps(dct, cp), sf));
      L.store(dz + 2 * gs + j, _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_fnmadd_ps(g, g, one)));
      L.store(dz + 3 * gs + j, _mm256_mul_ps(_mm256_mul_ps(d, tc), so));
    }
    return;
  }
#endif
  for (; j < n; ++j) {
    const T i = gates[j], f = gates[gs + j], g = gates[2 * gs + j], o = gates[3 * gs + j], cp = c[j];
    const T tc = std::tanh(f * cp + i * g);
    const T dct = dc[j] + dh[j] * o * (T(1) - tc * tc);
    dc[j] = dct * f;
    dz[j] = dct * g * (i * (T(1) - i));
    dz[gs + j] = dct * cp * (f * (T(1) - f));
    dz[2 * gs + j] = dct * i * (T(1) - g * g);
    dz[3 * gs + j] = dh[j] * tc * (o * (T(1) - o));
  }
}

// ------------------------------------------------------------------- GRU --
// z: a (·, 4H) gate row, gate stride gs: in, z_r, z_z (both products and
// their biases summed, except `bias_rz`), z_n = x W_inᵀ (+ b_in unless in
// `bias_in`) and slot 3 = W_hn h (without b_hn); out, r, z, n and
// a = W_hn h + b_hn. bias_rz: b_ir + b_hr, b_iz + b_hz at gate offsets 0 and
// gs (or null); bias_in, b_hn: (n,) at unit offsets (or null). h: h_{t-1}.
template <typename T>
inline void gru_forward_row(T* z, int64_t gs, const T* bias_rz, const T* bias_in, const T* b_hn, const T* h,
                            T* h_out, int64_t n) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; j < n; j += 8) {
      const Lanes L(n - j);
      __m256 zr = L.load(z + j), zz = L.load(z + gs + j), zn = L.load(z + 2 * gs + j), a = L.load(z + 3 * gs + j);
      if (bias_rz) {
        zr = _mm256_add_ps(zr, L.load(bias_rz + j));
        zz = _mm256_add_ps(zz, L.load(bias_rz + gs + j));
      }
      if (bias_in) zn = _mm256_add_ps(zn, L.load(bias_in + j));
      if (b_hn) a = _mm256_add_ps(a, L.load(b_hn + j));
      const __m256 r = sigmoid_ps(zr), u = sigmoid_ps(zz);
      const __m256 nn = tanh_ps(_mm256_fmadd_ps(r, a, zn));
      L.store(z + j, r);
      L.store(z + gs + j, u);
      L.store(z + 2 * gs + j, nn);
      L.store(z + 3 * gs + j, a);
      L.store(h_out + j, _mm256_fmadd_ps(u, _mm256_sub_ps(L.load(h + j), nn), nn));
    }
    return;
  }
#endif
  for (; j < n; ++j) {
    const T r = sigmoid(z[j] + (bias_rz ? bias_rz[j] : T(0)));
    const T u = sigmoid(z[gs + j] + (bias_rz ? bias_rz[gs + j] : T(0)));
    const T a = z[3 * gs + j] + (b_hn ? b_hn[j] : T(0));
    const T nn = std::tanh(z[2 * gs + j] + (bias_in ? bias_in[j] : T(0)) + r * a);
    z[j] = r, z[gs + j] = u, z[2 * gs + j] = nn, z[3 * gs + j] = a;
    h_out[j] = nn + u * (h[j] - nn);
  }
}

// gates: r, z, n, a of the step (gate stride gs); h: h_{t-1}; dh: dL/dh_t.
// dz: out, at gate offsets 0..3 of a (·, 4H) row: dz_r, dz_z, dz_n (the
// input side, = dL/d(x W_inᵀ + b_in)) and dz_n r (the hidden side,
// = dL/d(W_hn h + b_hn)).
template <typename T>
inline void gru_backward_row(const T* gates, int64_t gs, const T* h, const T* dh, T* dz, int64_t n) {
  int64_t j = 0;
#if FUSEDSEQ_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; j < n; j += 8) {
      const Lanes L(n - j);
      const __m256 r = L.load(gates + j), u = L.load(gates + gs + j), nn = L.load(gates + 2 * gs + j),
                   a = L.load(gates + 3 * gs + j), d = L.load(dh + j);
      const __m256 dzn = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(one, u)), _mm256_fnmadd_ps(nn, nn, one));
      const __m256 dzz = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(L.load(h + j), nn)),
                                       _mm256_mul_ps(u, _mm256_sub_ps(one, u)));
      const __m256 dzr = _mm256_mul_ps(_mm256_mul_ps(dzn, a), _mm256_mul_ps(r, _mm256_sub_ps(one, r)));
      L.store(dz + j, dzr);
      L.store(dz + gs + j, dzz);
      L.store(dz + 2 * gs + j, dzn);
      L.store(dz + 3 * gs + j, _mm256_mul_ps(dzn, r));
    }
    return;
  }
#endif
  for (; j < n; ++j) {
    const T r = gates[j], u = gates[gs + j], nn = gates[2 * gs + j], a = gates[3 * gs + j], d = dh[j];
    const T dzn = d * (T(1) - u) * (T(1) - nn * nn);
    dz[j] = dzn * a * (r * (T(1) - r));
    dz[gs + j] = d * (h[j] - nn) * (u * (T(1) - u));
    dz[2 * gs + j] = dzn;
    dz[3 * gs + j] = dzn * r;
  }
}

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
