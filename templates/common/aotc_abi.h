// aotc launch ABI, shared by every rendered kernel. One rendered .cu is compiled twice:
//   device:  nvcc -cubin -gencode ...                        -> kernel.cubin  (entry: aotc_kernel)
//   helper:  nvcc -shared -Xcompiler -fPIC -DAOTC_HOST_HELPER  -> helper.so     (host code only)
// The runtime loads helper.so with ctypes, calls aotc_prepare() to turn the family's AotcArgs into
// the kernel's by-value Params (TMA descriptors, scheduler params, ...), then launches aotc_kernel
// from the cubin with cuLaunchKernel(kernelParams = {params}).
#pragma once
#include <cstdint>

#define AOTC_ABI_VERSION 1

struct AotcLaunch {
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t smem_bytes;          // dynamic shared memory to request (and opt into)
  uint32_t params_bytes;        // sizeof(Params) written to params_out
  uint64_t workspace_bytes;     // device workspace the caller must pass to aotc_prepare
};

#ifdef AOTC_HOST_HELPER
#include <cstdio>
#include <cstring>
#define AOTC_EXPORT extern "C" __attribute__((visibility("default")))
// Fill `err` and return non-zero; used by helpers for can_implement failures.
static inline int aotc_fail(char* err, int errlen, const char* msg) {
  if (err && errlen > 0) { std::snprintf(err, (size_t)errlen, "%s", msg); }
  return 1;
}
AOTC_EXPORT int aotc_abi_version() { return AOTC_ABI_VERSION; }
#endif
