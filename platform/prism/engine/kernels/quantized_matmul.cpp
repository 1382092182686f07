// Products of fp32 activations with a weight matrix in Prism's quantized layout
// (prism/models/quantized.py): y[M, N] = x[M, K] @ W[N, K]^T (+ bias), W stored as 8-bit
// or 4-bit integers with an fp32 scale and optional offset per group of columns.
//
// Each thread takes four rows of W at a time, widens them into an fp32 panel that stays in
// its cache (q * scale + offset), and multiplies every row of x by that panel in tiles of
// 3 x 4 dot products held in registers. The panel is widened once per call and reused by all
// M rows, so a decode batch reads each weight byte once and a single row reads 4x (int8) or
// 8x (int4) fewer bytes than fp32.
//
// GCC vector extensions keep the code portable: they map to AVX2/AVX-512 on x86 and NEON on
// ARM, for the CPU the library is built on.

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int kLanes = 8;
constexpr int kPanelRows = 4;  // rows of W widened together
constexpr int kTileRows = 3;   // rows of x per register tile
constexpr int kNibbleRun = 32;

typedef float Floats __attribute__((vector_size(32)));
typedef float FloatsAt __attribute__((vector_size(32), aligned(4)));
typedef int32_t Ints __attribute__((vector_size(32)));
typedef int8_t Bytes8 __attribute__((vector_size(8)));
typedef int8_t Bytes8At __attribute__((vector_size(8), aligned(1)));
typedef uint8_t Nibbles8 __attribute__((vector_size(8)));
typedef uint8_t Nibbles16 __attribute__((vector_size(16)));
typedef uint8_t Nibbles16At __attribute__((vector_size(16), aligned(1)));

inline Floats load(const float* at) { return *reinterpret_cast<const FloatsAt*>(at); }
inline void store(float* at, Floats value) { *reinterpret_cast<FloatsAt*>(at) = value; }
inline Floats splat(float value) { return Floats{} + value; }

// Eight small integers widened to floats (through int32, which every SIMD set converts).
template <typename Small>
inline Floats to_floats(Small values) {
  return __builtin_convertvector(__builtin_convertvector(values, Ints), Floats);
}

inline float sum_lanes(Floats value) {
  float total = 0.0f;
  for (int lane = 0; lane < kLanes; ++lane) total += value[lane];
  return total;
}

struct Matrix {
  const void* data;
  const float* scales;
  const float* offsets;  // null: symmetric
  int64_t rows;
  int64_t cols;
  int64_t group;
  int bits;
};

// Eight int8 weights widened to floats.
inline Floats widen8(const int8_t* q) {
#if defined(__AVX2__)
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q));
  return reinterpret_cast<Floats>(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)));
#else
  return to_floats(*reinterpret_cast<const Bytes8At*>(q));
#endif
}

// A run of 32 4-bit weights (16 bytes) widened to floats: out[0..15] from the low nibbles,
// out[16..31] from the high ones.
inline void widen_nibbles(const uint8_t* q, Floats scale, Floats offset, float* out) {
#if defined(__AVX2__)
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i halves[2] = {_mm_and_si128(bytes, mask),
                             _mm_and_si128(_mm_srli_epi16(bytes, 4), mask)};
  for (int half = 0; half < 2; ++half) {
    const __m128i parts[2] = {halves[half], _mm_srli_si128(halves[half], 8)};
    for (int part = 0; part < 2; ++part) {
      const __m256 values = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[part]));
      store(out + (2 * half + part) * kLanes, reinterpret_cast<Floats>(values) * scale + offset);
    }
  }
#else
  const Nibbles16 bytes = *reinterpret_cast<const Nibbles16At*>(q);
  const Nibbles16 low = bytes & 0xF;
  const Nibbles16 high = bytes >> 4;
  const Nibbles8 parts[4] = {
      __builtin_shufflevector(low, low, 0, 1, 2, 3, 4, 5, 6, 7),
      __builtin_shufflevector(low, low, 8, 9, 10, 11, 12, 13, 14, 15),
      __builtin_shufflevector(high, high, 0, 1, 2, 3, 4, 5, 6, 7),
      __builtin_shufflevector(high, high, 8, 9, 10, 11, 12, 13, 14, 15),
  };
  for (int part = 0; part < 4; ++part) {
    store(out + part * kLanes, to_floats(parts[part]) * scale + offset);
  }
#endif
}

// Row `row` of W widened to fp32 into `out` [cols].
void widen_row(const Matrix& w, int64_t row, float* out) {
  const int64_t groups = w.cols / w.group;
  const float* scales = w.scales + row * groups;
  const float* offsets = w.offsets ? w.offsets + row * groups : nullptr;
  if (w.bits == 8) {
    const int8_t* q = static_cast<const int8_t*>(w.data) + row * w.cols;
    for (int64_t g = 0; g < groups; ++g) {
      const Floats scale = splat(scales[g]);
      const Floats offset = splat(offsets ? offsets[g] : 0.0f);
      for (int64_t k = g * w.group; k < (g + 1) * w.group; k += kLanes) {
        store(out + k, widen8(q + k) * scale + offset);
      }
    }
    return;
  }
  const uint8_t* q = static_cast<const uint8_t*>(w.data) + row * (w.cols / 2);
  for (int64_t k = 0; k < w.cols; k += kNibbleRun) {
    const int64_t g = k / w.group;
    widen_nibbles(q + k / 2, splat(scales[g]), splat(offsets ? offsets[g] : 0.0f), out + k);
  }
}

// Dot products of ROWS rows of x with COLS panel rows, written to y (+ bias).
template <int ROWS, int COLS>
void multiply_tile(const float* x, const float* panel, int64_t depth, const float* bias,
                   float* y, int64_t y_stride) {
  Floats acc[ROWS][COLS] = {};
  for (int64_t k = 0; k < depth; k += kLanes) {
    Floats xs[ROWS];
    for (int i = 0; i < ROWS; ++i) xs[i] = load(x + i * depth + k);
    for (int j = 0; j < COLS; ++j) {
      const Floats w = load(panel + j * depth + k);
      for (int i = 0; i < ROWS; ++i) acc[i][j] += xs[i] * w;
    }
  }
  for (int i = 0; i < ROWS; ++i) {
    for (int j = 0; j < COLS; ++j) {
      y[i * y_stride + j] = sum_lanes(acc[i][j]) + (bias ? bias[j] : 0.0f);
    }
  }
}

using TileFunction = void (*)(const float*, const float*, int64_t, const float*, float*, int64_t);

template <int ROWS>
TileFunction tile_for(int cols) {
  switch (cols) {
    case 1: return multiply_tile<ROWS, 1>;
    case 2: return multiply_tile<ROWS, 2>;
    case 3: return multiply_tile<ROWS, 3>;
    default: return multiply_tile<ROWS, 4>;
  }
}

TileFunction tile_for(int rows, int cols) {
  switch (rows) {
    case 1: return tile_for<1>(cols);
    case 2: return tile_for<2>(cols);
    default: return tile_for<3>(cols);
  }
}

bool valid(const Matrix& w) {
  if (w.bits != 8 && w.bits != 4) return false;
  if (w.group < kLanes || w.group % kLanes || w.cols % w.group) return false;
  return w.bits == 8 || (w.group % kNibbleRun == 0 && w.cols % kNibbleRun == 0);
}

}  // namespace

// x [m, k] fp32 row-major; data, scales, offsets as in prism/models/quantized.py for a
// matrix of n rows and k columns; bias [n] or null; y [m, n] fp32. Returns 0, or 1 for a
// layout the kernel cannot read.
extern "C" int prism_quantized_matmul(const float* x, int64_t m, int64_t k, const void* data,
                                      const float* scales, const float* offsets, int64_t n,
                                      int64_t group, int bits, const float* bias, float* y,
                                      int threads) {
  const Matrix w{data, scales, offsets, n, k, group, bits};
  if (!valid(w)) return 1;
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> panel(kPanelRows * k);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t first = p * kPanelRows;
      const int cols = static_cast<int>(std::min<int64_t>(kPanelRows, n - first));
      for (int j = 0; j < cols; ++j) widen_row(w, first + j, panel.data() + j * k);
      const float* panel_bias = bias ? bias + first : nullptr;
      for (int64_t row = 0; row < m; row += kTileRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, m - row));
        tile_for(rows, cols)(x + row * k, panel.data(), k, panel_bias, y + row * n + first, n);
      }
    }
  }
  return 0;
}

// The whole matrix (n rows, k columns) widened to fp32 into out [n, k]: for products with
// many rows, which a dense GEMM runs faster. Returns 0, or 1 for a layout it cannot read.
extern "C" int prism_dequantize(const void* data, const float* scales, const float* offsets,
                                int64_t n, int64_t k, int64_t group, int bits, float* out,
                                int threads) {
  const Matrix w{data, scales, offsets, n, k, group, bits};
  if (!valid(w)) return 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < n; ++row) widen_row(w, row, out + row * k);
  return 0;
}
