// The CPU backend's fused float32 kernels. Each replaces several PyTorch ops whose per-call
// dispatch cost, not arithmetic, dominates a batch-1 decode step.
// paged_decode: one query token per sequence attends over its context straight from the
// block-paged KV cache, so no K/V gather copy is made per layer.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// The cache slot of position t of a sequence whose block table row is `table`.
inline int64_t slot_of(const int64_t* table, int64_t t, int64_t block_size) {
  return table[t / block_size] * block_size + t % block_size;
}

// In place: each of `rows` consecutive rows of `length` scores becomes its softmax.
inline void softmax_rows(float* scores, int64_t rows, int64_t length) {
  for (int64_t j = 0; j < rows; ++j) {
    float* row = scores + j * length;
    const float peak = *std::max_element(row, row + length);
    float total = 0.f;
    for (int64_t t = 0; t < length; ++t) total += (row[t] = std::exp(row[t] - peak));
    const float inverse = 1.f / total;
    for (int64_t t = 0; t < length; ++t) row[t] *= inverse;
  }
}

}  // namespace

// q: [B, H, D]; k_cache, v_cache: [blocks, block_size, KH, D]; block_tables: [B, max_blocks];
// context_lens: [B]. Returns [B, H, D]. The H query heads of KV head h are h*g .. h*g+g-1.
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                           torch::Tensor block_tables, torch::Tensor context_lens, double scale) {
  TORCH_CHECK(q.scalar_type() == torch::kFloat && k_cache.scalar_type() == torch::kFloat,
              "paged_decode takes float32 q and cache");
  q = q.contiguous();
  block_tables = block_tables.contiguous();
  context_lens = context_lens.contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = k_cache.size(1), kv_heads = k_cache.size(2);
  const int64_t group = heads / kv_heads, max_blocks = block_tables.size(1);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "the KV cache must be contiguous");
  auto out = torch::zeros_like(q);
  const float* q_ptr = q.data_ptr<float>();
  const float* k_ptr = k_cache.data_ptr<float>();
  const float* v_ptr = v_cache.data_ptr<float>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = context_lens.data_ptr<int64_t>();
  float* out_ptr = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);
  const int64_t token_stride = kv_heads * head_dim;  // between consecutive slots

  at::parallel_for(0, batch * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / kv_heads, h = item % kv_heads, length = lens[b];
      scores.assign(group * length, 0.f);
      const float* q_head = q_ptr + (b * heads + h * group) * head_dim;
      for (int64_t t = 0; t < length; ++t) {
        const int64_t slot = slot_of(tables + b * max_blocks, t, block_size);
        const float* key = k_ptr + slot * token_stride + h * head_dim;
        for (int64_t j = 0; j < group; ++j) scores[j * length + t] = dot(q_head + j * head_dim, key, head_dim) * fscale;
      }
      softmax_rows(scores.data(), group, length);
      for (int64_t t = 0; t < length; ++t) {
        const int64_t slot = slot_of(tables + b * max_blocks, t, block_size);
        const float* value = v_ptr + slot * token_stride + h * head_dim;
        for (int64_t j = 0; j < group; ++j)
          axpy(scores[j * length + t], value, out_ptr + (b * heads + h * group + j) * head_dim, head_dim);
      }
    }
  });
  return out;
}

// The same over an int8/int4 cache, dequantized inside the loops: values [2 (K, V), blocks,
// block_size, KH, D * bits / 8] uint8 and scales [2, blocks, block_size, KH, 2 (scale, zero)],
// x = q * scale + zero per token and head. A key row enters as scale * (query . q) + zero * sum(query)
// and a value row as (p * scale) * q, with sum(p * zero) added once per head. new_k, new_v: [B, KH, D],
// this step's rows (the last position of each sequence), used at full precision as stored above them.
torch::Tensor paged_decode_quantized(torch::Tensor q, torch::Tensor values, torch::Tensor scales,
                                     torch::Tensor block_tables, torch::Tensor context_lens, double scale,
                                     int64_t bits, torch::Tensor new_k, torch::Tensor new_v) {
  TORCH_CHECK(q.scalar_type() == torch::kFloat && new_k.scalar_type() == torch::kFloat,
              "paged_decode_quantized takes float32 queries and new rows");
  TORCH_CHECK(bits == 8 || bits == 4, "KV bits must be 8 or 4, got ", bits);
  TORCH_CHECK(values.is_contiguous() && scales.is_contiguous(), "the KV cache must be contiguous");
  q = q.contiguous();
  new_k = new_k.contiguous();
  new_v = new_v.contiguous();
  block_tables = block_tables.contiguous();
  context_lens = context_lens.contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = values.size(2), kv_heads = values.size(3), packed_dim = values.size(4);
  const int64_t group = heads / kv_heads, max_blocks = block_tables.size(1);
  const int64_t rows_per_side = values.size(1) * block_size * kv_heads;  // K rows, then V rows
  auto out = torch::zeros_like(q);
  const float* q_ptr = q.data_ptr<float>();
  const uint8_t* k_rows = values.data_ptr<uint8_t>();
  const uint8_t* v_rows = k_rows + rows_per_side * packed_dim;
  const float* k_scales = scales.data_ptr<float>();
  const float* v_scales = k_scales + rows_per_side * 2;
  const float* new_k_ptr = new_k.data_ptr<float>();
  const float* new_v_ptr = new_v.data_ptr<float>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = context_lens.data_ptr<int64_t>();
  float* out_ptr = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);

  auto unpack = [&](const uint8_t* src, float* dst) {
    if (bits == 8) {
#pragma omp simd
      for (int64_t d = 0; d < head_dim; ++d) dst[d] = static_cast<float>(src[d]);
    } else {
      for (int64_t i = 0; i < head_dim / 2; ++i) {
        dst[2 * i] = static_cast<float>(src[i] & 15);
        dst[2 * i + 1] = static_cast<float>(src[i] >> 4);
      }
    }
  };

  at::parallel_for(0, batch * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, row(head_dim), query_sums(group), zero_terms(group);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / kv_heads, h = item % kv_heads, length = lens[b], stored = length - 1;
      scores.assign(group * length, 0.f);
      const float* q_head = q_ptr + (b * heads + h * group) * head_dim;
      for (int64_t j = 0; j < group; ++j) {
        float sum = 0.f;
        for (int64_t d = 0; d < head_dim; ++d) sum += q_head[j * head_dim + d];
        query_sums[j] = sum;
      }
      auto cache_row = [&](int64_t t) {  // index of position t's row of head h, on either side
        const int64_t slot = slot_of(tables + b * max_blocks, t, block_size);
        return slot * kv_heads + h;
      };
      for (int64_t t = 0; t < stored; ++t) {
        const int64_t r = cache_row(t);
        unpack(k_rows + r * packed_dim, row.data());
        const float s = k_scales[2 * r], z = k_scales[2 * r + 1];
        for (int64_t j = 0; j < group; ++j)
          scores[j * length + t] = (s * dot(q_head + j * head_dim, row.data(), head_dim) + z * query_sums[j]) * fscale;
      }
      const float* key = new_k_ptr + (b * kv_heads + h) * head_dim;
      for (int64_t j = 0; j < group; ++j) scores[j * length + stored] = dot(q_head + j * head_dim, key, head_dim) * fscale;
      softmax_rows(scores.data(), group, length);
      std::fill(zero_terms.begin(), zero_terms.end(), 0.f);
      float* out_head = out_ptr + (b * heads + h * group) * head_dim;
      for (int64_t t = 0; t < stored; ++t) {
        const int64_t r = cache_row(t);
        unpack(v_rows + r * packed_dim, row.data());
        const float s = v_scales[2 * r], z = v_scales[2 * r + 1];
        for (int64_t j = 0; j < group; ++j) {
          axpy(scores[j * length + t] * s, row.data(), out_head + j * head_dim, head_dim);
          zero_terms[j] += scores[j * length + t] * z;
        }
      }
      const float* value = new_v_ptr + (b * kv_heads + h) * head_dim;
      for (int64_t j = 0; j < group; ++j) {
        float* o = out_head + j * head_dim;
        axpy(scores[j * length + stored], value, o, head_dim);
        for (int64_t d = 0; d < head_dim; ++d) o[d] += zero_terms[j];
      }
    }
  });
  return out;
}

namespace {

inline void normalize_row(const float* x, const float* weight, float* out, int64_t n, float eps) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += x[i] * x[i];
  const float inverse_rms = 1.f / std::sqrt(squares / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inverse_rms);
}

}  // namespace

// x: [..., n] float32 -> weight * x / rms(x)
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  x = x.contiguous();
  auto out = torch::empty_like(x);
  const int64_t n = x.size(-1), rows = x.numel() / n;
  const float* x_ptr = x.data_ptr<float>();
  const float* w_ptr = weight.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) normalize_row(x_ptr + r * n, w_ptr, out_ptr + r * n, n, eps);
  });
  return out;
}

// Returns (rms_norm(x + residual), x + residual): the sum is the next residual stream.
std::vector<torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps) {
  x = x.contiguous();
  residual = residual.contiguous();
  auto sum = torch::empty_like(x);
  auto out = torch::empty_like(x);
  const int64_t n = x.size(-1), rows = x.numel() / n;
  const float* x_ptr = x.data_ptr<float>();
  const float* r_ptr = residual.data_ptr<float>();
  const float* w_ptr = weight.data_ptr<float>();
  float* sum_ptr = sum.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* s = sum_ptr + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) s[i] = x_ptr[r * n + i] + r_ptr[r * n + i];
      normalize_row(s, w_ptr, out_ptr + r * n, n, eps);
    }
  });
  return {out, sum};
}

// x: [..., 2n] = [gate | up] -> silu(gate) * up: [..., n]
torch::Tensor silu_and_mul(torch::Tensor x) {
  x = x.contiguous();
  const int64_t n = x.size(-1) / 2, rows = x.numel() / (2 * n);
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  auto out = torch::empty(sizes, x.options());
  const float* x_ptr = x.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = x_ptr + r * 2 * n;
      const float* up = gate + n;
      float* o = out_ptr + r * n;
      for (int64_t i = 0; i < n; ++i) o[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "paged decode attention over a block-paged KV cache");
  m.def("paged_decode_quantized", &paged_decode_quantized,
        "paged decode attention over an int8/int4 KV cache, dequantized on the fly");
  m.def("rms_norm", &rms_norm, "RMSNorm of the last dim");
  m.def("add_rms_norm", &add_rms_norm, "residual add then RMSNorm; returns (normed, sum)");
  m.def("silu_and_mul", &silu_and_mul, "SiLU of the first half times the second half");
}
