// Host twin of the CUDA entry point (libsfc_topk_host.so): the kernel's per-column loop and
// selection code (topk_select.h) run on the CPU, for float32 and float16, with the same
// argument checks. It exists so the exact selection code can be compared with the NumPy
// reference from Python (tests/csrc/test_topk_kernel.py) on machines without a GPU.
#include <cstdint>
#include <cstring>

#include "topk_select.h"
#include "topk_temporal_pool.h"

namespace {

// IEEE binary16 -> binary32, exact (every half is a float), including subnormals, inf, NaN.
float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0u) {
    if (mantissa == 0u) {
      bits = sign;  // signed zero
    } else {        // subnormal: renormalize into a float's normal range
      uint32_t e = 113u;  // biased float exponent of 2^-14
      while ((mantissa & 0x400u) == 0u) {
        mantissa <<= 1;
        --e;
      }
      bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float to_float(float v) { return v; }
float to_float(uint16_t v) { return half_bits_to_float(v); }

template <typename T>
struct ColumnLoad {
  const T* p;
  int64_t stride;
  SFC_HD float operator()(int64_t i) const { return to_float(p[i * stride]); }
};

template <typename T>
struct ColumnEmit {
  const T* src;
  T* dst;
  int64_t stride;
  SFC_HD void operator()(int64_t j, int64_t i) { dst[j * stride] = src[i * stride]; }
};

template <typename T>
void run(const T* x, T* y, int64_t columns, int64_t t, int64_t hw, int64_t k) {
  for (int64_t col = 0; col < columns; ++col) {  // the kernel's grid-stride loop, serialized
    const int64_t nc = col / hw;
    const int64_t s = col - nc * hw;
    const T* src = x + nc * t * hw + s;
    ColumnLoad<T> load{src, hw};
    ColumnEmit<T> emit{src, y + nc * k * hw + s, hw};
    sfc::topk::select_in_time_order(load, t, k, emit);
  }
}

}  // namespace

extern "C" int sfc_topk_temporal_pool_host(const void* x, void* y, int dtype, int64_t n,
                                           int64_t c, int64_t t, int64_t hw, int64_t k) {
  constexpr int kInvalidValue = 1;  // cudaErrorInvalidValue, as the CUDA entry point returns
  if (n < 0 || c < 0 || t < 1 || hw < 0 || k < 1 || k > t) return kInvalidValue;
  if (dtype != SFC_TOPK_DTYPE_FLOAT32 && dtype != SFC_TOPK_DTYPE_FLOAT16) return kInvalidValue;
  const int64_t columns = n * c * hw;
  if (columns == 0) return 0;
  if (x == nullptr || y == nullptr) return kInvalidValue;
  if (dtype == SFC_TOPK_DTYPE_FLOAT32) {
    run(static_cast<const float*>(x), static_cast<float*>(y), columns, t, hw, k);
  } else {
    run(static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y), columns, t, hw, k);
  }
  return 0;
}
