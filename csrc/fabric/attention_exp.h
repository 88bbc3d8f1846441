// The exp both attention_kernels levels compute (Cephes' expf): x = n ln2 + r
// with n = round(x / ln2) and r split off in two steps (Cody-Waite), a
// degree-7 polynomial in r, scaled by 2^n through the exponent bits. The
// AVX2 twin does these operations in this order on 8 lanes; the scalar
// tail of either level calls this function.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tfmbs::fabric::attention_detail {

// The constants of the polynomial and of the range reduction.
struct ExpConstants {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                         kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
  // Below this the result is 0 (exp(-87) is the smallest normal float's order).
  static constexpr float kUnderflow = -87.0f;
  static constexpr float kOverflow = 88.0f;
};

// max/min with SSE's NaN rule (the second operand when either is NaN), so a
// NaN input stays NaN at every level.
inline float max_sse(float a, float b) { return a > b ? a : b; }
inline float min_sse(float a, float b) { return a < b ? a : b; }

inline float exp_poly(float x) {
  using C = ExpConstants;
  const float clamped = min_sse(C::kOverflow, max_sse(-88.0f, x));
  const float n = std::nearbyint(clamped * C::kLog2e);
  float r = clamped - n * C::kLn2Hi;
  r = r - n * C::kLn2Lo;
  const float r2 = r * r;
  float p = C::kP0;
  p = p * r + C::kP1;
  p = p * r + C::kP2;
  p = p * r + C::kP3;
  p = p * r + C::kP4;
  p = p * r + C::kP5;
  p = p * r2 + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float result = p * two_n;
  return x < C::kUnderflow ? 0.0f : result;
}

}  // namespace tfmbs::fabric::attention_detail
