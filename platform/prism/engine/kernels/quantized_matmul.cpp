// Products of fp32 activations with a quantized weight matrix laid out in panels
// (prism/engine/quantized_panels.py): y[M, N] = x[M, K] @ W[N, K]^T (+ bias).
//
// A panel holds 16 output features (rows of W) interleaved column by column: for each input
// feature k, the 16 weights W[n0..n0+15, k] lie together (int8: 16 bytes; 4-bit: 16 bytes
// for k and k+1, k in the low nibbles), followed by nothing else, and per group of columns
// 16 scales and 16 offsets. A thread widens one panel into fp32 (q * scale + offset), which
// stays in its cache, then accumulates x's rows against it in register tiles of
// kTileRows x 16 outputs: one vector load and kTileRows broadcast multiply-adds per column.
// Rows of x go in blocks of kRowBlock, so a long prefill's activations stay in cache too.
// A product of at most kTileRows rows (a decode step) skips the fp32 panel: it multiplies
// the integers as they are read and applies each group's scale and offset once.
//
// GCC vector extensions keep the arithmetic portable (AVX-512, AVX2, NEON); the integer
// widening has an x86 path where the compiler's generic code is slow.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int kPanel = 16;
#if defined(__AVX512F__)
constexpr int kTileRows = 8;  // 8 of 32 vector registers accumulate
#else
constexpr int kTileRows = 6;  // 12 of 16 (two 8-lane halves per accumulator)
#endif
constexpr int64_t kRowBlock = 120;

typedef float Floats __attribute__((vector_size(64)));
typedef float FloatsAt __attribute__((vector_size(64), aligned(4)));
typedef int32_t Ints __attribute__((vector_size(64)));
typedef int8_t Bytes __attribute__((vector_size(16)));
typedef uint8_t UBytes __attribute__((vector_size(16)));
typedef uint8_t UBytesAt __attribute__((vector_size(16), aligned(1)));

inline Floats load(const float* at) { return *reinterpret_cast<const FloatsAt*>(at); }
inline void store(float* at, Floats value) { *reinterpret_cast<FloatsAt*>(at) = value; }
inline UBytes load_bytes(const uint8_t* at) { return *reinterpret_cast<const UBytesAt*>(at); }

// The first `count` of 16 floats (a last, partial panel's bias), the rest zero.
inline Floats load_first(const float* at, int count) {
  alignas(64) float values[kPanel] = {};
  std::memcpy(values, at, count * sizeof(float));
  return load(values);
}

// Sixteen 8-bit integers (signed or not) as floats.
template <bool Signed>
inline Floats widen(UBytes bytes) {
#if defined(__AVX512F__)
  const __m128i packed = reinterpret_cast<__m128i>(bytes);
  const __m512i ints = Signed ? _mm512_cvtepi8_epi32(packed) : _mm512_cvtepu8_epi32(packed);
  return reinterpret_cast<Floats>(_mm512_cvtepi32_ps(ints));
#elif defined(__AVX2__)
  const __m128i packed = reinterpret_cast<__m128i>(bytes);
  const __m128i high = _mm_srli_si128(packed, 8);
  const __m256i low_ints = Signed ? _mm256_cvtepi8_epi32(packed) : _mm256_cvtepu8_epi32(packed);
  const __m256i high_ints = Signed ? _mm256_cvtepi8_epi32(high) : _mm256_cvtepu8_epi32(high);
  const __m256 halves[2] = {_mm256_cvtepi32_ps(low_ints), _mm256_cvtepi32_ps(high_ints)};
  Floats out;
  std::memcpy(&out, halves, sizeof(out));
  return out;
#else
  if constexpr (Signed) {
    return __builtin_convertvector(__builtin_convertvector(reinterpret_cast<Bytes>(bytes), Ints),
                                   Floats);
  } else {
    return __builtin_convertvector(__builtin_convertvector(bytes, Ints), Floats);
  }
#endif
}

struct Panels {
  const uint8_t* data;
  const float* scales;
  const float* offsets;  // null: symmetric
  int64_t cols;
  int64_t group;
  int bits;
};

// Panel `p` widened to fp32: out[k * 16 + j] = W[16 p + j, k].
void widen_panel(const Panels& w, int64_t p, float* out) {
  const int64_t groups = w.cols / w.group;
  const float* scales = w.scales + p * groups * kPanel;
  const float* offsets = w.offsets ? w.offsets + p * groups * kPanel : nullptr;
  const int64_t bytes_per_column = w.bits == 8 ? kPanel : kPanel / 2;
  const uint8_t* data = w.data + p * w.cols * bytes_per_column;
  for (int64_t g = 0; g < groups; ++g) {
    const Floats scale = load(scales + g * kPanel);
    const Floats offset = offsets ? load(offsets + g * kPanel) : Floats{};
    const int64_t end = (g + 1) * w.group;
    if (w.bits == 8) {
      for (int64_t k = g * w.group; k < end; ++k) {
        store(out + k * kPanel, widen<true>(load_bytes(data + k * kPanel)) * scale + offset);
      }
    } else {
      for (int64_t k = g * w.group; k < end; k += 2) {
        const UBytes pair = load_bytes(data + k / 2 * kPanel);
        store(out + k * kPanel, widen<false>(pair & 0xF) * scale + offset);
        store(out + (k + 1) * kPanel, widen<false>(pair >> 4) * scale + offset);
      }
    }
  }
}

// ROWS rows of x against a widened panel; `outputs` of its 16 columns are written to y.
template <int ROWS>
void multiply_tile(const float* x, int64_t depth, const float* panel, const float* bias,
                   int outputs, float* y, int64_t y_stride) {
  Floats acc[ROWS] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const Floats w = load(panel + k * kPanel);
    for (int i = 0; i < ROWS; ++i) acc[i] += x[i * depth + k] * w;
  }
  for (int i = 0; i < ROWS; ++i) {
    alignas(64) float row[kPanel];
    store(row, bias ? acc[i] + load_first(bias, outputs) : acc[i]);
    std::memcpy(y + i * y_stride, row, outputs * sizeof(float));
  }
}

// Few rows (a decode step): ROWS rows of x against panel `p` read straight from its integers,
// scaled once per group: sum_g scale_g * (q . x)_g + offset_g * sum_g(x), where `sums`
// holds each row's sum of x over each group.
template <int ROWS>
void multiply_direct(const Panels& w, int64_t p, const float* x, const float* sums,
                     const float* bias, int outputs, float* y, int64_t y_stride) {
  const int64_t groups = w.cols / w.group;
  const float* scales = w.scales + p * groups * kPanel;
  const float* offsets = w.offsets ? w.offsets + p * groups * kPanel : nullptr;
  const int64_t bytes_per_column = w.bits == 8 ? kPanel : kPanel / 2;
  const uint8_t* data = w.data + p * w.cols * bytes_per_column;
  Floats acc[ROWS] = {};
  for (int64_t g = 0; g < groups; ++g) {
    Floats part[ROWS] = {};
    const int64_t end = (g + 1) * w.group;
    if (w.bits == 8) {
      for (int64_t k = g * w.group; k < end; ++k) {
        const Floats q = widen<true>(load_bytes(data + k * kPanel));
        for (int i = 0; i < ROWS; ++i) part[i] += x[i * w.cols + k] * q;
      }
    } else {
      for (int64_t k = g * w.group; k < end; k += 2) {
        const UBytes pair = load_bytes(data + k / 2 * kPanel);
        const Floats even = widen<false>(pair & 0xF);
        const Floats odd = widen<false>(pair >> 4);
        for (int i = 0; i < ROWS; ++i) {
          part[i] += x[i * w.cols + k] * even + x[i * w.cols + k + 1] * odd;
        }
      }
    }
    const Floats scale = load(scales + g * kPanel);
    for (int i = 0; i < ROWS; ++i) acc[i] += part[i] * scale;
    if (offsets) {
      const Floats offset = load(offsets + g * kPanel);
      for (int i = 0; i < ROWS; ++i) acc[i] += offset * sums[i * groups + g];
    }
  }
  for (int i = 0; i < ROWS; ++i) {
    alignas(64) float row[kPanel];
    store(row, bias ? acc[i] + load_first(bias, outputs) : acc[i]);
    std::memcpy(y + i * y_stride, row, outputs * sizeof(float));
  }
}

template <int... Rows>
constexpr auto make_tiles(std::integer_sequence<int, Rows...>) {
  using Tile = void (*)(const float*, int64_t, const float*, const float*, int, float*, int64_t);
  return std::array<Tile, sizeof...(Rows)>{multiply_tile<Rows + 1>...};
}

template <int... Rows>
constexpr auto make_direct(std::integer_sequence<int, Rows...>) {
  using Direct = void (*)(const Panels&, int64_t, const float*, const float*, const float*, int,
                          float*, int64_t);
  return std::array<Direct, sizeof...(Rows)>{multiply_direct<Rows + 1>...};
}

const auto kTiles = make_tiles(std::make_integer_sequence<int, kTileRows>{});
const auto kDirect = make_direct(std::make_integer_sequence<int, kTileRows>{});

// Products of at most kTileRows rows, each panel read once straight from its integers.
void multiply_few_rows(const Panels& w, const float* x, int64_t m, int64_t n, const float* bias,
                       float* y, int threads) {
  const int64_t groups = w.cols / w.group;
  std::vector<float> sums(w.offsets ? m * groups : 0);
  for (int64_t i = 0; i < static_cast<int64_t>(sums.size()); ++i) {
    const float* start = x + (i / groups) * w.cols + (i % groups) * w.group;
    sums[i] = std::accumulate(start, start + w.group, 0.0f);
  }
  const int64_t panels = (n + kPanel - 1) / kPanel;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    const int outputs = static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel));
    kDirect[m - 1](w, p, x, sums.data(), bias ? bias + p * kPanel : nullptr, outputs,
                   y + p * kPanel, n);
  }
}

bool valid(const Panels& w) {
  if (w.bits != 8 && w.bits != 4) return false;
  if (w.group < 2 || w.cols % w.group) return false;
  return w.bits == 8 || w.group % 2 == 0;
}

}  // namespace

// x [m, k] fp32 row-major; data, scales, offsets in panels (see above) for n outputs padded
// to whole panels; bias [n] or null; y [m, n] fp32. Returns 0, or 1 for a
// layout the kernel cannot read.
extern "C" int prism_quantized_matmul(const float* x, int64_t m, int64_t k, const uint8_t* data,
                                      const float* scales, const float* offsets, int64_t n,
                                      int64_t group, int bits, const float* bias, float* y,
                                      int threads) {
  const Panels w{data, scales, offsets, k, group, bits};
  if (!valid(w)) return 1;
  if (m == 0) return 0;
  if (m <= kTileRows) {
    multiply_few_rows(w, x, m, n, bias, y, threads);
    return 0;
  }
  const int64_t panels = (n + kPanel - 1) / kPanel;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> wide(kPanel * k);
    for (int64_t first_row = 0; first_row < m; first_row += kRowBlock) {
      const int64_t block_rows = std::min(kRowBlock, m - first_row);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < panels; ++p) {
        widen_panel(w, p, wide.data());
        const int outputs = static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel));
        const float* panel_bias = bias ? bias + p * kPanel : nullptr;
        for (int64_t row = 0; row < block_rows; row += kTileRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kTileRows, block_rows - row));
          const int64_t at = first_row + row;
          kTiles[rows - 1](x + at * k, k, wide.data(), panel_bias, outputs,
                           y + at * n + p * kPanel, n);
        }
      }
    }
  }
  return 0;
}
