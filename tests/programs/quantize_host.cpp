// Host build of the quantize family's rounding (templates/quantize/rounding.h): the code the sm_90a /
// sm_80 kernels run, executed on the CPU for tests/test_quantize_rounding.py.
//   quantize_host e2m1 IN OUT        float32[n] -> [n] aotc codes, then [n] codes of CUDA's own
//                                    __nv_cvt_float_to_fp4 (its host emulation of cvt.rn.satfinite.e2m1x2)
//   quantize_host e4m3 IN OUT        float32[n] -> [n] e4m3 bytes
//   quantize_host nvfp4 IN ROWS COLS GLOBAL OUT_Q OUT_SF   float32 rows -> the kernel's q and sf bytes
//   quantize_host mxfp8 IN ROWS COLS OUT_Q OUT_SF
#include <cuda_fp4.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "quantize/rounding.h"

static std::vector<float> read_floats(const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (!f) { std::perror(path); std::exit(2); }
  std::fseek(f, 0, SEEK_END);
  long bytes = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  std::vector<float> v(bytes / 4);
  if (std::fread(v.data(), 4, v.size(), f) != v.size()) std::exit(2);
  std::fclose(f);
  return v;
}

static void write_bytes(const char* path, const std::vector<uint8_t>& v) {
  FILE* f = std::fopen(path, "wb");
  if (!f || std::fwrite(v.data(), 1, v.size(), f) != v.size()) { std::perror(path); std::exit(2); }
  std::fclose(f);
}

// The kernel's per-block body (blockscaled_quantize.cu.j2), one block per (row, sf column).
template <int kVec, bool kNvfp4>
static void quantize(const std::vector<float>& x, long rows, long cols, float global_scale, const char* out_q,
                     const char* out_sf) {
  const long sf_cols_padded = (cols / kVec + 3) / 4 * 4;
  const long padded_rows = (rows + 127) / 128 * 128;
  std::vector<uint8_t> q(rows * (kNvfp4 ? cols / 2 : cols)), sf(padded_rows * sf_cols_padded, 0xAB);
  for (long row = 0; row < padded_rows; ++row) {
    for (long col = 0; col < sf_cols_padded; ++col) {
      uint8_t s = 0;
      if (row < rows && col * kVec < cols) {
        const float* v = x.data() + row * cols + col * kVec;
        const float amax = aotc_quant::block_amax<kVec>(v);
        if (kNvfp4) {
          s = aotc_quant::nvfp4_scale_factor(amax, global_scale);
          const float mul = aotc_quant::nvfp4_element_multiplier(s, global_scale);
          for (int j = 0; j < kVec / 2; ++j)
            q[row * (cols / 2) + col * (kVec / 2) + j] = static_cast<uint8_t>(
                aotc_quant::e2m1_rn_satfinite(v[2 * j] * mul) | (aotc_quant::e2m1_rn_satfinite(v[2 * j + 1] * mul) << 4));
        } else {
          s = aotc_quant::mx_e4m3_scale_factor(amax);
          const float scale = aotc_quant::mx_scale_value(s);
          for (int j = 0; j < kVec; ++j) q[row * cols + col * kVec + j] = aotc_quant::mx_e4m3_element(v[j], scale);
        }
      }
      sf[aotc_quant::sf_offset(row, col, sf_cols_padded)] = s;
    }
  }
  write_bytes(out_q, q);
  write_bytes(out_sf, sf);
}

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  const std::vector<float> x = read_floats(argv[2]);
  if (!std::strcmp(argv[1], "e2m1")) {
    std::vector<uint8_t> out(2 * x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      out[i] = aotc_quant::e2m1_rn_satfinite(x[i]);
      out[x.size() + i] = static_cast<uint8_t>(__nv_cvt_float_to_fp4(x[i], __NV_E2M1, cudaRoundNearest));
    }
    write_bytes(argv[3], out);
  } else if (!std::strcmp(argv[1], "e4m3")) {
    std::vector<uint8_t> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = aotc_quant::e4m3_rn_satfinite(x[i]);
    write_bytes(argv[3], out);
  } else if (!std::strcmp(argv[1], "nvfp4") && argc == 8) {
    quantize<16, true>(x, std::atol(argv[3]), std::atol(argv[4]), std::strtof(argv[5], nullptr), argv[6], argv[7]);
  } else if (!std::strcmp(argv[1], "mxfp8") && argc == 7) {
    quantize<32, false>(x, std::atol(argv[3]), std::atol(argv[4]), 1.0f, argv[5], argv[6]);
  } else {
    return 2;
  }
  return 0;
}
