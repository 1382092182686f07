// Decode attention over Prism's paged KV cache on CPU: one query token per sequence, its
// keys and values read where they lie in the cache blocks instead of gathered into a copy.
//
// Built by prism/engine/cpu_kernels.py with the system C++ compiler and loaded with ctypes.
// Plain C++ loops, vectorised by the compiler for the CPU it builds on; OpenMP threads are
// the ones torch already runs (the process loads one libgomp).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline float widen(float value) { return value; }

// bf16 is the upper half of an fp32: widening is a shift.
inline float widen(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

struct Shape {
  int64_t num_seqs;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t num_blocks;
  int64_t block_size;
  int64_t table_width;
};

// Calls visit(t, row) for each of a sequence's cached rows `first`..`end - 1`, in order,
// following its block table; t counts from 0 at row `first`.
template <typename Cache, typename Visit>
void for_each_row(const Cache* cache, const int64_t* table, int64_t first, int64_t end,
                  const Shape& shape, Visit visit) {
  const int64_t block_size = shape.block_size;
  for (int64_t start = first - first % block_size; start < end; start += block_size) {
    const Cache* block = cache + table[start / block_size] * block_size * shape.head_dim;
    const int64_t begin = std::max(first - start, int64_t{0});
    const int64_t rows = std::min(block_size, end - start);
    for (int64_t row = begin; row < rows; ++row) {
      visit(start + row - first, block + row * shape.head_dim);
    }
  }
}

// Attention of one sequence's query heads that share one KV head, whose cache rows start at
// `keys` and `values`, over the sequence's rows `first`..`end - 1`.
// `scores` holds [group, end - first] floats.
template <typename Cache>
void attend(const float* query, const Cache* keys, const Cache* values, const int64_t* table,
            int64_t first, int64_t end, const Shape& shape, float scale, float* scores,
            float* out) {
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  const int64_t dim = shape.head_dim;
  const int64_t length = end - first;
  for_each_row(keys, table, first, end, shape, [&](int64_t t, const Cache* key) {
    for (int64_t head = 0; head < group; ++head) {
      const float* q = query + head * dim;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < dim; ++d) dot += q[d] * widen(key[d]);
      scores[head * length + t] = dot * scale;
    }
  });
  for (int64_t head = 0; head < group; ++head) {
    float* row = scores + head * length;
    float peak = row[0];
    for (int64_t t = 1; t < length; ++t) peak = std::max(peak, row[t]);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < length; ++t) {
      row[t] = std::exp(row[t] - peak);
      total += row[t];
    }
    const float inverse = 1.0f / total;
#pragma omp simd
    for (int64_t t = 0; t < length; ++t) row[t] *= inverse;
  }
  std::memset(out, 0, sizeof(float) * group * dim);
  for_each_row(values, table, first, end, shape, [&](int64_t t, const Cache* value) {
    for (int64_t head = 0; head < group; ++head) {
      const float weight = scores[head * length + t];
      float* o = out + head * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) o[d] += weight * widen(value[d]);
    }
  });
}

// Whether every sequence reads a non-empty run of rows whose blocks are all inside the cache:
// 0 if so, else -1. Blocks before a sequence's first row are never read, nor checked.
int check_tables(const int64_t* tables, const int64_t* context_starts,
                 const int64_t* context_lens, const Shape& shape) {
  for (int64_t seq = 0; seq < shape.num_seqs; ++seq) {
    const int64_t first = context_starts[seq];
    const int64_t length = context_lens[seq];
    if (first < 0 || length <= first || length > shape.table_width * shape.block_size) return -1;
    const int64_t used = (length + shape.block_size - 1) / shape.block_size;
    for (int64_t i = first / shape.block_size; i < used; ++i) {
      const int64_t block = tables[seq * shape.table_width + i];
      if (block < 0 || block >= shape.num_blocks) return -1;
    }
  }
  return 0;
}

template <typename Cache>
int decode_attention(const float* query, const Cache* k_cache, const Cache* v_cache,
                     const int64_t* tables, const int64_t* context_starts,
                     const int64_t* context_lens, float* out, const Shape& shape, float scale,
                     int num_threads) {
  if (shape.num_kv_heads < 1 || shape.num_heads % shape.num_kv_heads != 0) return -1;
  if (check_tables(tables, context_starts, context_lens, shape) != 0) return -1;
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  const int64_t dim = shape.head_dim;
  const int64_t head_stride = shape.num_blocks * shape.block_size * dim;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t seq = 0; seq < shape.num_seqs; ++seq) {
      for (int64_t kv_head = 0; kv_head < shape.num_kv_heads; ++kv_head) {
        const int64_t first = context_starts[seq];
        const int64_t end = context_lens[seq];
        const int64_t length = end - first;
        if (static_cast<int64_t>(scores.size()) < group * length) scores.resize(group * length);
        const int64_t first_head = seq * shape.num_heads + kv_head * group;
        attend(query + first_head * dim, k_cache + kv_head * head_stride,
               v_cache + kv_head * head_stride, tables + seq * shape.table_width, first, end,
               shape, scale, scores.data(), out + first_head * dim);
      }
    }
  }
  return 0;
}

}  // namespace

extern "C" {

// query, out: [seqs, heads, dim] fp32. k_cache, v_cache: [kv_heads, blocks, block_size, dim],
// fp32 (`*_f32`) or bf16 (`*_bf16`). tables: [seqs, table_width] block ids. Sequence i
// attends to its rows context_starts[i]..context_lens[i] - 1 (a sliding window starts past
// row 0). All contiguous. Returns 0, or -1 on a bad shape, range or block id (nothing is read
// out of bounds).
int prism_decode_attention_f32(const float* query, const float* k_cache, const float* v_cache,
                               const int64_t* tables, const int64_t* context_starts,
                               const int64_t* context_lens, float* out, int64_t num_seqs,
                               int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                               int64_t num_blocks, int64_t block_size, int64_t table_width,
                               float scale, int num_threads) {
  const Shape shape{num_seqs, num_heads, num_kv_heads, head_dim, num_blocks, block_size,
                    table_width};
  return decode_attention(query, k_cache, v_cache, tables, context_starts, context_lens, out,
                          shape, scale, num_threads);
}

int prism_decode_attention_bf16(const float* query, const uint16_t* k_cache,
                                const uint16_t* v_cache, const int64_t* tables,
                                const int64_t* context_starts, const int64_t* context_lens,
                                float* out, int64_t num_seqs, int64_t num_heads,
                                int64_t num_kv_heads, int64_t head_dim, int64_t num_blocks,
                                int64_t block_size, int64_t table_width, float scale,
                                int num_threads) {
  const Shape shape{num_seqs, num_heads, num_kv_heads, head_dim, num_blocks, block_size,
                    table_width};
  return decode_attention(query, k_cache, v_cache, tables, context_starts, context_lens, out,
                          shape, scale, num_threads);
}

}  // extern "C"
