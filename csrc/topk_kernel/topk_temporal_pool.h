// C entry point of the TopKTemporalPool CUDA kernel (libsfc_topk_kernel.so).
//
// Plain C so that ctypes (sfc_deploy/ops/cuda_kernel.py), the TensorRT plugin and the C++
// runner can all call it without sharing a C++ ABI or a CUDA header. The selection rule lives
// in topk_select.h; this header needs neither CUDA nor TensorRT.
#ifndef SFC_TOPK_TEMPORAL_POOL_H_
#define SFC_TOPK_TEMPORAL_POOL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Values of the `dtype` argument.
#define SFC_TOPK_DTYPE_FLOAT32 0
#define SFC_TOPK_DTYPE_FLOAT16 1

// y[n, c, j, s] = the j-th kept x[n, c, :, s] in time order, for contiguous x of shape
// (n, c, t, hw) and y of shape (n, c, k, hw); hw = H * W. Both are device pointers.
// Enqueues on `stream` (a cudaStream_t; NULL = legacy default stream) and does not synchronize.
// Returns a cudaError_t value: 0 on success, cudaErrorInvalidValue (1) for bad arguments
// (dtype unknown, negative sizes, k outside [1, t], null pointers with a non-empty tensor),
// else the launch error.
int sfc_topk_temporal_pool_launch(const void* x, void* y, int dtype, int64_t n, int64_t c,
                                  int64_t t, int64_t hw, int64_t k, void* stream);

// cudaGetErrorString for a code returned above (so callers need no CUDA runtime of their own).
const char* sfc_topk_error_string(int code);

// Host twin in libsfc_topk_host.so (always built, no CUDA): same contract and argument checks
// on host pointers, same selection code, serial over columns. float16 data is passed as raw
// IEEE binary16 bits. Returns 0, or 1 (cudaErrorInvalidValue's value) for bad arguments.
int sfc_topk_temporal_pool_host(const void* x, void* y, int dtype, int64_t n, int64_t c,
                                int64_t t, int64_t hw, int64_t k);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // SFC_TOPK_TEMPORAL_POOL_H_
