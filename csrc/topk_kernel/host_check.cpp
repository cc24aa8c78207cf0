// Host check of the TopKTemporalPool selection (topk_select.h), no GPU needed.
//
// Runs the same header the CUDA kernel runs, over whole (N, C, T, H*W) tensors laid out as the
// kernel sees them, and compares with a plain sort-based oracle written from the definition:
// stable-sort indices by value descending (ties keep index order), keep the first k, emit them
// sorted by index. Exits 1 on the first mismatch, 0 when every case agrees.
//
// Build: g++ -std=c++17 -O2 host_check.cpp -o host_check   (or the CMake target
// sfc_topk_host_check; tests/csrc/test_topk_kernel.py also compiles it with nvcc, so the
// __host__ __device__ spelling is checked too).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "topk_select.h"

namespace {

// SFC_HD so that, compiled by nvcc, the shared __host__ __device__ templates may call them.
struct ColumnLoad {
  const float* p;
  int64_t stride;
  SFC_HD float operator()(int64_t i) const { return p[i * stride]; }
};

struct ColumnEmit {
  const float* src;
  float* dst;
  int64_t stride;
  int64_t* indices;  // also record which input index was kept, for the tie checks
  SFC_HD void operator()(int64_t j, int64_t i) {
    dst[j * stride] = src[i * stride];
    indices[j] = i;
  }
};

// "a ranks before b" for the oracle: larger value first, NaN above everything, -0 == +0.
bool ranks_before(float a, float b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

std::vector<int64_t> oracle_indices(const std::vector<float>& col, int64_t k) {
  std::vector<int64_t> idx(col.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return ranks_before(col[a], col[b]); });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Runs the kernel's per-column loop on the host over a (n, c, t, hw) tensor and compares every
// column with the oracle. Returns false (after printing the first difference) on a mismatch.
bool check_tensor(const std::string& name, const std::vector<float>& x, int64_t n, int64_t c,
                  int64_t t, int64_t hw, int64_t k) {
  std::vector<float> y(static_cast<size_t>(n * c * k * hw), -12345.0f);
  std::vector<int64_t> kept(static_cast<size_t>(k));
  for (int64_t col = 0; col < n * c * hw; ++col) {
    const int64_t nc = col / hw, s = col % hw;
    const float* src = x.data() + nc * t * hw + s;
    float* dst = y.data() + nc * k * hw + s;
    ColumnLoad load{src, hw};
    ColumnEmit emit{src, dst, hw, kept.data()};
    const int64_t emitted = sfc::topk::select_in_time_order(load, t, k, emit);

    std::vector<float> column(static_cast<size_t>(t));
    for (int64_t i = 0; i < t; ++i) column[i] = src[i * hw];
    const std::vector<int64_t> want = oracle_indices(column, k);
    bool ok = emitted == k;
    for (int64_t j = 0; ok && j < k; ++j) {
      const float got = dst[j * hw], expected = column[want[j]];
      const bool same = (std::isnan(got) && std::isnan(expected)) || got == expected;
      ok = same && kept[j] == want[j];
    }
    if (!ok) {
      std::printf("MISMATCH %s: n=%lld c=%lld t=%lld hw=%lld k=%lld column=%lld emitted=%lld\n",
                  name.c_str(), (long long)n, (long long)c, (long long)t, (long long)hw,
                  (long long)k, (long long)col, (long long)emitted);
      std::printf("  input   :");
      for (float v : column) std::printf(" %g", v);
      std::printf("\n  expected:");
      for (int64_t i : want) std::printf(" %lld", (long long)i);
      std::printf("\n  got     :");
      for (int64_t j = 0; j < emitted; ++j) std::printf(" %lld", (long long)kept[j]);
      std::printf("\n");
      return false;
    }
  }
  return true;
}

// The key map must order every pair of floats exactly as the comparison does.
bool check_order_key() {
  const float inf = std::numeric_limits<float>::infinity();
  const float denorm = std::numeric_limits<float>::denorm_min();
  std::vector<float> v = {-inf, -3.0e38f, -2.0f, -1.0f, -denorm, -0.0f, 0.0f, denorm,
                          1e-30f, 1.0f, 1.5f, 3.0e38f, inf, std::nanf(""), -std::nanf("")};
  for (float a : v) {
    for (float b : v) {
      const uint32_t ka = sfc::topk::order_key(a), kb = sfc::topk::order_key(b);
      const bool want_gt = ranks_before(a, b);
      const bool want_eq = !ranks_before(a, b) && !ranks_before(b, a);
      if ((ka > kb) != want_gt || (ka == kb) != want_eq) {
        std::printf("MISMATCH order_key: a=%g b=%g keys %08x %08x\n", a, b, ka, kb);
        return false;
      }
    }
  }
  return true;
}

}  // namespace

int main() {
  std::mt19937_64 rng(20210611);
  int cases = 0;
  if (!check_order_key()) return 1;
  ++cases;

  struct Shape {
    int64_t n, c, t, hw;
  };
  const Shape shapes[] = {{1, 1, 1, 1},  {1, 1, 2, 1},  {2, 3, 5, 4},   {1, 2, 8, 3},
                          {2, 2, 36, 6}, {1, 1, 37, 5}, {1, 2, 64, 2},  {1, 1, 257, 2},
                          {1, 1, 2048, 1}};
  // Value generators: continuous (few ties), heavily tied (3 levels), all equal, fp16-like grid
  // (multiples of 1/8 in [-4, 4], exactly representable in half), signed zeros, sorted runs.
  const char* kinds[] = {"normal", "three_levels", "all_equal", "half_grid",
                         "signed_zeros", "ascending", "descending"};
  for (const Shape& sh : shapes) {
    for (const char* kind : kinds) {
      const int64_t total = sh.n * sh.c * sh.t * sh.hw;
      std::vector<float> x(static_cast<size_t>(total));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::uniform_int_distribution<int> level(0, 2), grid(-32, 32), coin(0, 1);
      for (int64_t i = 0; i < total; ++i) {
        const int64_t ti = (i / sh.hw) % sh.t;
        const std::string kd = kind;
        if (kd == "normal") x[i] = normal(rng);
        else if (kd == "three_levels") x[i] = static_cast<float>(level(rng)) - 1.0f;
        else if (kd == "all_equal") x[i] = 0.25f;
        else if (kd == "half_grid") x[i] = static_cast<float>(grid(rng)) / 8.0f;
        else if (kd == "signed_zeros") x[i] = coin(rng) ? 0.0f : -0.0f;
        else if (kd == "ascending") x[i] = static_cast<float>(ti);
        else x[i] = -static_cast<float>(ti);
      }
      std::vector<int64_t> ks = {1, sh.t};
      if (sh.t > 2) ks.push_back(sh.t / 2);
      if (sh.t > 3) ks.push_back((sh.t + 1) / 3);
      if (sh.t > 1) ks.push_back(sh.t - 1);
      for (int64_t k : ks) {
        if (!check_tensor(kind, x, sh.n, sh.c, sh.t, sh.hw, k)) return 1;
        ++cases;
      }
    }
  }

  // NaN and infinities: outside the cross-implementation contract, but the kernel's own
  // convention (NaN above +inf, NaNs tie) is pinned here.
  {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
    const std::vector<float> x = {1.0f, nan, -inf, inf, nan, 2.0f, -0.0f, 0.0f, inf, -1.0f};
    for (int64_t k = 1; k <= 10; ++k) {
      if (!check_tensor("nan_inf", x, 1, 1, 10, 1, k)) return 1;
      ++cases;
    }
  }

  // Random shapes, random k, mixed tie density.
  for (int trial = 0; trial < 300; ++trial) {
    std::uniform_int_distribution<int64_t> dn(1, 2), dc(1, 3), dt(1, 80), dhw(1, 7);
    const int64_t n = dn(rng), c = dc(rng), t = dt(rng), hw = dhw(rng);
    std::uniform_int_distribution<int64_t> dk(1, t);
    std::uniform_int_distribution<int> levels(1, 6);
    const int nlev = levels(rng);
    std::uniform_int_distribution<int> lv(0, nlev);
    std::vector<float> x(static_cast<size_t>(n * c * t * hw));
    for (float& v : x) v = static_cast<float>(lv(rng)) * 0.5f - 1.0f;
    if (!check_tensor("random", x, n, c, t, hw, dk(rng))) return 1;
    ++cases;
  }

  std::printf("topk host check: %d cases passed\n", cases);
  return 0;
}
