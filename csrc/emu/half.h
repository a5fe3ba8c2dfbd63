// bfloat16 and IEEE half on the host: bit conversions (round to nearest even),
// used by the emulated mma and by the host stand-ins for __nv_bfloat16/__half.
#pragma once
#include <bit>
#include <cstdint>

namespace fusedseq::emu {

inline float bf16_bits_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                         // round to nearest even
  return uint16_t(u >> 16);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp == 0) {
    if (man == 0) return std::bit_cast<float>(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 0x1p-24f;
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to inf (>= 65520)
  if (abs < 0x38800000u) {                                   // subnormal or zero in half
    // value / 2^-24, rounded to nearest even, is the subnormal mantissa
    const float a = std::bit_cast<float>(abs) * 0x1p24f;
    uint32_t m = uint32_t(a);
    const float rem = a - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return uint16_t(sign | m);
  }
  uint32_t r = abs - 0x38000000u;           // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);           // round to nearest even at bit 13
  return uint16_t(sign | (r >> 13));
}

}  // namespace fusedseq::emu
