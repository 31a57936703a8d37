// CPU execution of the data contract of aotc's SM120 block-scaled GEMMs: reads the exact bytes the
// runtime hands the kernel (the AotcArgs struct and, for grouped GEMM, the device block of problem sizes,
// pointer arrays and aotc_group_metadata's strides / SF layouts), with every device pointer replaced by
// an offset into one memory image, and computes D with CUTLASS's own host reference for block-scaled
// GEMM (cutlass::reference::host::Gemm3x + GettBlockScalingMainloopParams, as example 79a verifies).
//   blockscaled_gemm_reference sizes
//   blockscaled_gemm_reference MODE ARGS IMAGE IMAGE_OUT DEQUANT_OUT
//     MODE: dense_nvfp4 | grouped_nvfp4 | grouped_mxfp8_mxfp4. D is written into IMAGE_OUT where ptr_D
//     points; DEQUANT_OUT gets, per group, float32 A*SFA [M][K] then B*SFB [N][K] as the reference reads them.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/detail/layout.hpp"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "cutlass/util/reference/host/gett.hpp"

using namespace cute;

// Mirrors of AotcArgs in templates/gemm/blockscaled_sm120_types.j2 (the test checks the sizes).
struct DenseArgs {
  uint64_t ptr_A, ptr_B, ptr_SFA, ptr_SFB, ptr_D;
  int32_t m, n, k, batch;
  float alpha;
  int32_t sm_count;
};
struct GroupedArgs {
  int32_t num_groups, sm_count;
  uint64_t problem_sizes, host_problem_sizes, ptr_A, ptr_B, ptr_SFA, ptr_SFB, ptr_D;
  uint64_t stride_A, stride_B, stride_D, layout_SFA, layout_SFB, alpha_array;
  float alpha;
  int32_t reserved;
};

static std::vector<char> read_file(const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (!f) { std::perror(path); std::exit(2); }
  std::fseek(f, 0, SEEK_END);
  std::vector<char> v(std::ftell(f));
  std::fseek(f, 0, SEEK_SET);
  if (std::fread(v.data(), 1, v.size(), f) != v.size()) std::exit(2);
  std::fclose(f);
  return v;
}

static void write_file(const char* path, const void* data, size_t n) {
  FILE* f = std::fopen(path, "wb");
  if (!f || std::fwrite(data, 1, n, f) != n) { std::perror(path); std::exit(2); }
  std::fclose(f);
}

template <class T>
static T read_at(const std::vector<char>& image, uint64_t offset) {
  if (offset + sizeof(T) > image.size()) {
    std::fprintf(stderr, "offset %llu + %zu is outside the %zu-byte image\n", (unsigned long long)offset, sizeof(T),
                 image.size());
    std::exit(3);
  }
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}

template <class ElementA, class ElementB, class ElementSF, int SFVec>
struct Contract {
  using Config = cutlass::detail::Sm1xxBlockScaledConfig<SFVec>;
  using LayoutSFA = decltype(Config::deduce_layoutSFA());
  using LayoutSFB = decltype(Config::deduce_layoutSFB());
  // Per-group strides of the pointer-array kernels (CUTLASS's InternalStride*) and the dense ones.
  using GroupStrideA = cute::remove_pointer_t<cutlass::detail::TagToStrideA_t<cutlass::layout::RowMajor*>>;
  using GroupStrideB = cute::remove_pointer_t<cutlass::detail::TagToStrideB_t<cutlass::layout::ColumnMajor*>>;
  using GroupStrideD = cute::remove_pointer_t<cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor*>>;
  using DenseStrideA = cutlass::detail::TagToStrideA_t<cutlass::layout::RowMajor>;
  using DenseStrideB = cutlass::detail::TagToStrideB_t<cutlass::layout::ColumnMajor>;
  using DenseStrideD = cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor>;

  template <class SA, class SB, class SD>
  static void gemm(std::vector<char>& image, int M, int N, int K, uint64_t a, uint64_t b, uint64_t sfa, uint64_t sfb,
                   uint64_t d, SA stride_a, SB stride_b, SD stride_d, LayoutSFA layout_sfa, LayoutSFB layout_sfb,
                   float alpha, std::vector<float>& dequant) {
    char* base = image.data();
    auto tensor_A = make_tensor(recast_ptr<ElementA>(base + a), make_layout(make_shape(M, K, 1), stride_a));
    auto tensor_B = make_tensor(recast_ptr<ElementB>(base + b), make_layout(make_shape(N, K, 1), stride_b));
    auto tensor_SFA = make_tensor(reinterpret_cast<ElementSF*>(base + sfa), layout_sfa);
    auto tensor_SFB = make_tensor(reinterpret_cast<ElementSF*>(base + sfb), layout_sfb);
    auto tensor_D = make_tensor(reinterpret_cast<cutlass::bfloat16_t*>(base + d), make_layout(make_shape(M, N, 1), stride_d));
    std::vector<cutlass::bfloat16_t> zeros(size_t(M) * N);  // the kernels have no C: beta = 0
    auto tensor_C = make_tensor(zeros.data(), make_layout(make_shape(M, N, 1), make_stride(int64_t(N), _1{}, int64_t(0))));
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) dequant.push_back(float(ElementA(tensor_A(m, k, 0))) * float(ElementSF(tensor_SFA(m, k, 0))));
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) dequant.push_back(float(ElementB(tensor_B(n, k, 0))) * float(ElementSF(tensor_SFB(n, k, 0))));
    cutlass::reference::host::GettBlockScalingMainloopParams<float, decltype(tensor_A), decltype(tensor_SFA),
                                                             decltype(tensor_B), decltype(tensor_SFB)>
        mainloop{tensor_A, tensor_SFA, tensor_B, tensor_SFB};
    cutlass::reference::host::GettBlockScalingEpilogueParams<float, float, float, decltype(tensor_C), decltype(tensor_D)>
        epilogue{alpha, 0.0f, tensor_C, tensor_D};
    cutlass::reference::host::Gemm3x(mainloop, epilogue);
  }

  static void dense(const std::vector<char>& args_bytes, std::vector<char>& image, std::vector<float>& dequant) {
    if (args_bytes.size() != sizeof(DenseArgs)) std::exit(4);
    DenseArgs a;
    std::memcpy(&a, args_bytes.data(), sizeof a);
    const int L = a.batch > 0 ? a.batch : 1;
    if (L != 1) std::exit(5);
    // What the dense helper's make_arguments derives from (m, n, k): packed strides and SF layouts.
    auto sa = cutlass::make_cute_packed_stride(DenseStrideA{}, {a.m, a.k, 1});
    auto sb = cutlass::make_cute_packed_stride(DenseStrideB{}, {a.n, a.k, 1});
    auto sd = cutlass::make_cute_packed_stride(DenseStrideD{}, {a.m, a.n, 1});
    gemm(image, a.m, a.n, a.k, a.ptr_A, a.ptr_B, a.ptr_SFA, a.ptr_SFB, a.ptr_D, sa, sb, sd,
         Config::tile_atom_to_shape_SFA(make_shape(a.m, a.n, a.k, 1)),
         Config::tile_atom_to_shape_SFB(make_shape(a.m, a.n, a.k, 1)), a.alpha, dequant);
  }

  static void grouped(const std::vector<char>& args_bytes, std::vector<char>& image, std::vector<float>& dequant) {
    if (args_bytes.size() != sizeof(GroupedArgs)) std::exit(4);
    GroupedArgs a;
    std::memcpy(&a, args_bytes.data(), sizeof a);
    for (int g = 0; g < a.num_groups; ++g) {
      const int M = read_at<int32_t>(image, a.problem_sizes + 12 * g);
      const int N = read_at<int32_t>(image, a.problem_sizes + 12 * g + 4);
      const int K = read_at<int32_t>(image, a.problem_sizes + 12 * g + 8);
      float alpha = a.alpha;
      if (a.alpha_array) alpha = read_at<float>(image, read_at<uint64_t>(image, a.alpha_array + 8 * g));
      gemm(image, M, N, K, read_at<uint64_t>(image, a.ptr_A + 8 * g), read_at<uint64_t>(image, a.ptr_B + 8 * g),
           read_at<uint64_t>(image, a.ptr_SFA + 8 * g), read_at<uint64_t>(image, a.ptr_SFB + 8 * g),
           read_at<uint64_t>(image, a.ptr_D + 8 * g),
           read_at<GroupStrideA>(image, a.stride_A + sizeof(GroupStrideA) * g),
           read_at<GroupStrideB>(image, a.stride_B + sizeof(GroupStrideB) * g),
           read_at<GroupStrideD>(image, a.stride_D + sizeof(GroupStrideD) * g),
           read_at<LayoutSFA>(image, a.layout_SFA + sizeof(LayoutSFA) * g),
           read_at<LayoutSFB>(image, a.layout_SFB + sizeof(LayoutSFB) * g), alpha, dequant);
    }
  }
};

using Nvfp4 = Contract<cutlass::float_e2m1_t, cutlass::float_e2m1_t, cutlass::float_ue4m3_t, 16>;
using Mxfp8Mxfp4 = Contract<cutlass::float_e4m3_t, cutlass::float_e2m1_t, cutlass::float_ue8m0_t, 32>;

int main(int argc, char** argv) {
  if (argc == 2 && !std::strcmp(argv[1], "sizes")) {
    std::printf("{\"dense_args\": %zu, \"grouped_args\": %zu, \"stride\": [%zu, %zu, %zu], "
                "\"nvfp4_layout_sf\": [%zu, %zu], \"mx_layout_sf\": [%zu, %zu]}\n",
                sizeof(DenseArgs), sizeof(GroupedArgs), sizeof(Nvfp4::GroupStrideA), sizeof(Nvfp4::GroupStrideB),
                sizeof(Nvfp4::GroupStrideD), sizeof(Nvfp4::LayoutSFA), sizeof(Nvfp4::LayoutSFB),
                sizeof(Mxfp8Mxfp4::LayoutSFA), sizeof(Mxfp8Mxfp4::LayoutSFB));
    return 0;
  }
  if (argc != 6) return 2;
  const std::vector<char> args = read_file(argv[2]);
  std::vector<char> image = read_file(argv[3]);
  std::vector<float> dequant;
  if (!std::strcmp(argv[1], "dense_nvfp4")) Nvfp4::dense(args, image, dequant);
  else if (!std::strcmp(argv[1], "grouped_nvfp4")) Nvfp4::grouped(args, image, dequant);
  else if (!std::strcmp(argv[1], "grouped_mxfp8_mxfp4")) Mxfp8Mxfp4::grouped(args, image, dequant);
  else return 2;
  write_file(argv[4], image.data(), image.size());
  write_file(argv[5], dequant.data(), dequant.size() * sizeof(float));
  return 0;
}
