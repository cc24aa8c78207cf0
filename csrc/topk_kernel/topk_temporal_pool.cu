// TopKTemporalPool CUDA kernel: one thread per (n, c, h*w) column, selection by per-thread
// radix select (topk_select.h explains the choice). Reads along T are strided by hw, so the
// threads of a warp, which own neighbouring columns, read neighbouring addresses: coalesced.
#include "topk_temporal_pool.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "topk_select.h"

namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Column view of x: element i is x[base + i * stride], converted to float for ranking only
// (half -> float is exact, so ranks and ties are those of the half values).
template <typename T>
struct ColumnLoad {
  const T* __restrict__ p;
  int64_t stride;
  __device__ __forceinline__ float operator()(int64_t i) const {
    return to_float(__ldg(p + i * stride));
  }
};

// Copies the kept input element itself (not its float image) to the output column.
template <typename T>
struct ColumnEmit {
  const T* __restrict__ src;
  T* __restrict__ dst;
  int64_t stride;
  __device__ __forceinline__ void operator()(int64_t j, int64_t i) {
    dst[j * stride] = src[i * stride];
  }
};

template <typename T>
__global__ void topk_temporal_pool_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          int64_t columns, int64_t t, int64_t hw, int64_t k) {
  for (int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; col < columns;
       col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t nc = col / hw;
    const int64_t s = col - nc * hw;
    const T* src = x + nc * t * hw + s;
    T* dst = y + nc * k * hw + s;
    ColumnLoad<T> load{src, hw};
    ColumnEmit<T> emit{src, dst, hw};
    sfc::topk::select_in_time_order(load, t, k, emit);
  }
}

template <typename T>
cudaError_t launch(const void* x, void* y, int64_t columns, int64_t t, int64_t hw, int64_t k,
                   cudaStream_t stream) {
  constexpr int kThreads = 256;
  // Grid-stride loop: cap the grid well inside the 2^31-1 limit; each thread loops if needed.
  const int64_t wanted = (columns + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < (1 << 20) ? wanted : (1 << 20));
  topk_temporal_pool_kernel<T><<<blocks, kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(y), columns, t, hw, k);
  return cudaGetLastError();
}

}  // namespace

extern "C" int sfc_topk_temporal_pool_launch(const void* x, void* y, int dtype, int64_t n,
                                             int64_t c, int64_t t, int64_t hw, int64_t k,
                                             void* stream) {
  if (n < 0 || c < 0 || t < 1 || hw < 0 || k < 1 || k > t) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (dtype != SFC_TOPK_DTYPE_FLOAT32 && dtype != SFC_TOPK_DTYPE_FLOAT16) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const int64_t columns = n * c * hw;
  if (columns == 0) return static_cast<int>(cudaSuccess);
  if (x == nullptr || y == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaError_t err = (dtype == SFC_TOPK_DTYPE_FLOAT32) ? launch<float>(x, y, columns, t, hw, k, s)
                                                      : launch<__half>(x, y, columns, t, hw, k, s);
  return static_cast<int>(err);
}

extern "C" const char* sfc_topk_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
