// Selection logic of TopKTemporalPool, shared by the CUDA kernel and the host check.
//
// The op (SPEC.md section 4): for each (n, c, h, w) of an (N, C, T, H, W) tensor, keep the k
// largest values along T and emit them in their original temporal order. Ties: the lower time
// index wins, i.e. selection order is (value descending, index ascending).
//
// Everything here is header-only and `SFC_HD` (= __host__ __device__ under nvcc, plain inline
// under a host compiler), so host_check.cpp compiles and checks the very code the kernel runs.
//
// Algorithm: per-thread radix select, no storage.
//   1. Map each value to a 32-bit key whose unsigned order is the float order (order_key).
//   2. Find the key of the k-th element in selection order one bit at a time, MSB first: 32
//      counting passes over the T values, O(32*T) reads and O(1) registers (kth_key).
//   3. One more pass in time order emits every element with a larger key, plus the first
//      `ties_to_keep` elements whose key equals the k-th key (lower index wins).
// Rank counting (element t kept iff #{s ranked before t} < k) would also need no storage but
// costs O(T^2); radix select is O(33*T), equal at T~33 (the paper's T=36) and ~100x cheaper at
// T=4096, and its memory traffic stays coalesced across threads the same way. A per-thread
// buffer (sort in registers/local memory) would need a compile-time bound on T or spill to
// local memory for large T; this needs neither.
//
// Floating-point corner cases: -0.0 and +0.0 are one value (they tie, lower index wins), as in
// a comparison-based reference. NaN is ranked above +inf and all NaNs tie (torch.topk's
// convention); the NumPy reference does not define NaN ordering, so NaN is not part of the
// cross-implementation contract.
#pragma once

#include <stdint.h>
#if !defined(__CUDA_ARCH__)
#include <string.h>
#endif

#if defined(__CUDACC__)
#define SFC_HD __host__ __device__ __forceinline__
#else
#define SFC_HD inline
#endif

namespace sfc {
namespace topk {

SFC_HD uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
#endif
}

// Order-preserving map from float to uint32: a > b (as floats) <=> order_key(a) > order_key(b),
// a == b <=> keys equal; with -0.0 == +0.0 and NaN above +inf (see the file comment).
SFC_HD uint32_t order_key(float v) {
  uint32_t u = float_bits(v);
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude == 0u) {
    u = 0u;  // -0.0 ties with +0.0
  } else if (magnitude > 0x7f800000u) {
    u = 0x7fc00000u;  // one canonical NaN, above +inf
  }
  // Positive floats: set the sign bit so they sort above every negative one.
  // Negative floats: flip all bits so a larger magnitude gives a smaller key.
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Key of the k-th element (1-based) in selection order, and how many elements carrying exactly
// that key are kept (the earliest ones in time). `load(i)` returns element i as float.
// Preconditions: 1 <= k <= t.
template <class Load>
SFC_HD void kth_key(const Load& load, int64_t t, int64_t k, uint32_t* key_out,
                    int64_t* ties_to_keep_out) {
  uint32_t prefix = 0u;  // bits of the k-th key decided so far
  uint32_t mask = 0u;    // which bits are decided
  int64_t remaining = k; // rank of the target among the elements that match `prefix`
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t b = 1u << bit;
    const uint32_t want = prefix | b;
    const uint32_t m = mask | b;
    int64_t ones = 0;  // elements matching the prefix whose next bit is 1 (the larger half)
    for (int64_t i = 0; i < t; ++i) {
      ones += ((order_key(load(i)) & m) == want) ? 1 : 0;
    }
    if (ones >= remaining) {
      prefix = want;  // the target lies in the larger half
    } else {
      remaining -= ones;  // skip every element of the larger half
    }
    mask = m;
  }
  *key_out = prefix;
  *ties_to_keep_out = remaining;  // k - #{elements with a larger key}
}

// Emit the kept indices in ascending time order: emit(j, i) is called for j = 0..k-1 with the
// input index i of the j-th kept element. Returns the number emitted (always k).
template <class Load, class Emit>
SFC_HD int64_t select_in_time_order(const Load& load, int64_t t, int64_t k, Emit& emit) {
  uint32_t kth = 0u;
  int64_t ties_left = 0;
  kth_key(load, t, k, &kth, &ties_left);
  int64_t j = 0;
  for (int64_t i = 0; i < t && j < k; ++i) {
    const uint32_t key = order_key(load(i));
    if (key > kth || (key == kth && ties_left > 0)) {
      if (key == kth) --ties_left;
      emit(j, i);
      ++j;
    }
  }
  return j;
}

}  // namespace topk
}  // namespace sfc
