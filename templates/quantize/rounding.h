// Rounding of the aotc quantize family, shared by the kernel (device) and the CPU tests (host).
// One definition of every step, so the software path proven on the CPU is the code the GPU runs.
// Semantics follow torchao's reference quantizers (prototype/mx_formats: nvfp4_quantize, to_mx FLOOR).
#pragma once
#include <cstdint>
#include <cstring>
#include <cuda_fp8.h>

#if defined(__CUDACC__)
#define AOTC_QHD __host__ __device__ __forceinline__
#else
#define AOTC_QHD inline
#endif

namespace aotc_quant {

constexpr float kE2m1Max = 6.0f;
constexpr float kE4m3Max = 448.0f;
constexpr float kE4m3MinNormal = 0.015625f;        // 2^-6: torchao clamps NVFP4 block scales to >= this
constexpr float kF32MinNormal = 1.17549435e-38f;    // 2^-126: torchao's floor for MX scales
constexpr int kE4m3MaxPow2 = 8;                     // floor(log2(448))

AOTC_QHD uint32_t f32_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

AOTC_QHD float f32_from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

AOTC_QHD bool is_nan(float x) { return x != x; }

// e2m1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6) with round-to-nearest-even and saturation to +-6; NaN gives
// +6 (0x7). This is PTX cvt.rn.satfinite.e2m1x2.f32 for one value, written in software: every
// threshold is a midpoint between two neighbours, exact in fp32; ties go to the even code.
AOTC_QHD uint8_t e2m1_rn_satfinite(float x) {
  if (is_nan(x)) return 0x7;
  const uint8_t sign = static_cast<uint8_t>((f32_bits(x) >> 28) & 0x8);
  const float a = f32_from_bits(f32_bits(x) & 0x7fffffffu);
  uint8_t code;
  if (a <= 0.25f) code = 0;        // tie 0.25 -> 0 (even)
  else if (a < 0.75f) code = 1;    // tie 0.75 -> 1.0
  else if (a <= 1.25f) code = 2;   // tie 1.25 -> 1.0
  else if (a < 1.75f) code = 3;    // tie 1.75 -> 2.0
  else if (a <= 2.5f) code = 4;    // tie 2.5 -> 2.0
  else if (a < 3.5f) code = 5;     // tie 3.5 -> 4.0
  else if (a <= 5.0f) code = 6;    // tie 5.0 -> 4.0
  else code = 7;                   // saturate (inf included)
  return static_cast<uint8_t>(sign | code);
}

// e4m3 with round-to-nearest-even, saturating, NaN -> 0x7f: cvt.rn.satfinite.e4m3x2.f32 on sm_89+,
// CUDA's own software emulation of that instruction elsewhere (and on the host).
AOTC_QHD uint8_t e4m3_rn_satfinite(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

AOTC_QHD float e4m3_to_float(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80) << 24;
  const int exp = (v >> 3) & 0xf, man = v & 0x7;
  if (exp == 0xf && man == 0x7) return f32_from_bits(0x7fc00000u);
  if (exp == 0) return f32_from_bits(sign | f32_bits(static_cast<float>(man) * 0.001953125f));  // man x 2^-9
  return f32_from_bits(sign | (static_cast<uint32_t>(exp - 7 + 127) << 23) | (static_cast<uint32_t>(man) << 20));
}

// max |v| of a block with torch.amax's NaN propagation (fmaxf would drop a NaN).
template <int N>
AOTC_QHD float block_amax(const float* v) {
  float amax = 0.0f;
  bool nan = false;
  for (int i = 0; i < N; ++i) {
    const float a = f32_from_bits(f32_bits(v[i]) & 0x7fffffffu);
    nan = nan || is_nan(a);
    amax = a > amax ? a : amax;
  }
  return nan ? f32_from_bits(0x7fc00000u) : amax;
}

// NVFP4 block scale (torchao nvfp4_quantize, two-level): ue4m3(clamp(amax / 6 / global, 2^-6, 448)),
// NaN kept. `global_scale` is the per-tensor scale (tensor amax / (448 * 6)); 1 gives one-level scaling.
AOTC_QHD uint8_t nvfp4_scale_factor(float amax, float global_scale) {
  float s = (amax / kE2m1Max) / global_scale;
  if (!is_nan(s)) s = s < kE4m3MinNormal ? kE4m3MinNormal : (s > kE4m3Max ? kE4m3Max : s);
  return e4m3_rn_satfinite(s);
}

// What the elements of a block are multiplied by before rounding: (1 / global) / block scale.
AOTC_QHD float nvfp4_element_multiplier(uint8_t sf, float global_scale) {
  return (1.0f / global_scale) / e4m3_to_float(sf);
}

// MX block scale (torchao to_mx, ScaleCalculationMode.FLOOR, e4m3 elements): the biased ue8m0
// exponent floor(log2(amax)) - 8, clamped to the e8m0 range; NaN -> 0xff.
AOTC_QHD uint8_t mx_e4m3_scale_factor(float amax) {
  if (is_nan(amax)) return 0xff;
  int unbiased = static_cast<int>((f32_bits(amax) >> 23) & 0xff) - 127 - kE4m3MaxPow2;
  unbiased = unbiased < -127 ? -127 : (unbiased > 128 ? 128 : unbiased);
  return static_cast<uint8_t>(unbiased + 127);
}

// The divisor of an MX block: 2^(sf - 127), at least 2^-126 (torchao's floor for all-zero blocks).
AOTC_QHD float mx_scale_value(uint8_t sf) {
  const float s = f32_from_bits(static_cast<uint32_t>(sf) << 23);
  return s < kF32MinNormal ? kF32MinNormal : s;
}

// One MX element: x / scale, clamped to +-448 (NaN kept), to e4m3.
AOTC_QHD uint8_t mx_e4m3_element(float x, float scale) {
  float y = x / scale;
  if (!is_nan(y)) y = y < -kE4m3Max ? -kE4m3Max : (y > kE4m3Max ? kE4m3Max : y);
  return e4m3_rn_satfinite(y);
}

// Byte offset of scale factor (row, col) in CUTLASS's Sm1xxBlkScaledConfig layout (the same as
// cuBLAS's and torchao's to_blocked): 128 x 4 atoms of 512 B, atoms K-major within a 128-row band;
// inside an atom row r sits at (r % 32) * 16 + (r / 32) * 4 and column c at c.
AOTC_QHD int64_t sf_offset(int64_t row, int64_t col, int64_t sf_cols_padded) {
  return ((row / 128) * (sf_cols_padded / 4) + col / 4) * 512 + (row % 32) * 16 + ((row / 32) % 4) * 4 + col % 4;
}

}  // namespace aotc_quant
