// kerasvid CP-module MLP kernels (CPU), built and loaded with cp_ops.cc by kerasvid/ops/native.py.
//
// The CP module's two-layer MLP on the [B, N, k] neighbour rows (kerasvid/ops/cp_mlp.py gives the formulas):
//   h[b, n, m] = P[b, idx[b, n, m]] + Q[b, n]                       (the first 1x1 conv, split per point)
//   x = relu(scale0 * (h - center0) + offset0)                        (its BatchNorm with batch statistics, ReLU)
//   z = x W                                                          (the second 1x1 conv, its bias in the norm)
// and the statistics and extremes over the k rows of a query that the second BatchNorm and the max over k need.
// The [B, N, k, U] tensors h, x and z are never formed: the rows of a block of kBlock queries (k * kBlock rows, a
// few hundred KB at most for the paper's widths) are computed from P, Q and W into scratch buffers that stay in
// cache, by register-tiled small matrix products (Gemm).
//
// Work is split into those blocks; the sums over all rows (statistics, weight gradients) are formed per block and
// added in block order after the parallel part, so the results do not depend on the threads. Statistics are centred
// (each block's sum of squared deviations from its own mean, in float64, merged exactly; gradients in terms of
// h - center0 and x - mean(x)), so their precision does not depend on how large a channel's mean is against its
// spread. A NaN or inf in the rows makes the statistics, hence every output, NaN.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

using namespace tensorflow;  // NOLINT

namespace {

constexpr int64_t kBlock = 32;  // queries per work block

// OP_REQUIRES for the helpers that return whether the inputs are valid.
#define KERASVID_REQUIRE(ctx, condition, status) \
  if (!(condition)) {                             \
    (ctx)->SetStatus(status);                     \
    return false;                                 \
  }

// The shapes all three kernels share: per_neighbour, per_query [B, N, U] float, indices [B, N, k] int32 in [0, N).
struct Rows {
  int64_t batch = 0, points = 0, units = 0, k = 0;
  const float* p = nullptr;
  const float* q = nullptr;
  const int32_t* idx = nullptr;
  int64_t blocks() const { return batch * ((points + kBlock - 1) / kBlock); }
  double count() const { return double(batch) * points * k; }
};

bool ReadRows(OpKernelContext* ctx, Rows* rows) {
  const Tensor& p = ctx->input(0);
  const Tensor& q = ctx->input(1);
  const Tensor& idx = ctx->input(2);
  KERASVID_REQUIRE(ctx, p.dims() == 3 && q.shape() == p.shape() && idx.dims() == 3 &&
                       idx.dim_size(0) == p.dim_size(0) && idx.dim_size(1) == p.dim_size(1),
              absl::InvalidArgumentError(absl::StrCat(
                  "per_neighbour and per_query must be [batch, N, U] and indices [batch, N, k], got ",
                  p.shape().DebugString(), ", ", q.shape().DebugString(), " and ", idx.shape().DebugString())));
  rows->batch = p.dim_size(0);
  rows->points = p.dim_size(1);
  rows->units = p.dim_size(2);
  rows->k = idx.dim_size(2);
  KERASVID_REQUIRE(ctx, rows->k >= 1, absl::InvalidArgumentError(absl::StrCat(
                                           "indices must hold k >= 1 proposals a query, got k=", rows->k)));
  rows->p = p.flat<float>().data();
  rows->q = q.flat<float>().data();
  rows->idx = idx.flat<int32_t>().data();
  const int64_t total = rows->batch * rows->points * rows->k;
  for (int64_t i = 0; i < total; ++i)
    KERASVID_REQUIRE(ctx, rows->idx[i] >= 0 && rows->idx[i] < rows->points,
                absl::InvalidArgumentError(absl::StrCat("index ", rows->idx[i], " outside [0, ", rows->points, ")")));
  return true;
}

bool CheckVector(OpKernelContext* ctx, int input, int64_t size, const char* name) {
  KERASVID_REQUIRE(ctx, ctx->input(input).dims() == 1 && ctx->input(input).dim_size(0) == size,
              absl::InvalidArgumentError(absl::StrCat(name, " must be [", size, "], got ",
                                                      ctx->input(input).shape().DebugString())));
  return true;
}

// Runs work(block) for every block on the CPU worker threads.
template <typename Work>
void ForBlocks(OpKernelContext* ctx, const Rows& rows, int64_t cost_per_block, Work work) {
  auto range = [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) work(block);
  };
  const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
  Shard(threads->num_threads, threads->workers, rows.blocks(), cost_per_block, range);
}

// The queries [begin, end) of block `block` of batch element b.
inline void BlockQueries(const Rows& rows, int64_t block, int64_t* b, int64_t* begin, int64_t* end) {
  const int64_t per_batch = (rows.points + kBlock - 1) / kBlock;
  *b = block / per_batch;
  *begin = (block % per_batch) * kBlock;
  *end = std::min(rows.points, *begin + kBlock);
}

typedef float Floats __attribute__((vector_size(16 * sizeof(float))));   // GCC/Clang vector extension
typedef int32_t Ints __attribute__((vector_size(16 * sizeof(int32_t))));
constexpr int64_t kLanes = 16;

inline Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Floats v) { std::memcpy(p, &v, sizeof(v)); }
inline Floats Splat(float x) { return Floats{} + x; }

// x = relu(scale * (p + q - center) + offset) of one row; h = p + q - center and y (before the ReLU) kept for the
// gradient. NaN passes the ReLU (as tf.nn.relu).
inline void FirstLayer(const float* p, const float* q, const float* scale, const float* center, const float* offset,
                       int64_t units, float* h, float* y, float* x) {
  int64_t c = 0;
  for (; c + kLanes <= units; c += kLanes) {
    const Floats hv = Load(p + c) + Load(q + c) - Load(center + c), yv = Load(scale + c) * hv + Load(offset + c);
    Store(h + c, hv);
    Store(y + c, yv);
    Store(x + c, yv < 0.0f ? Splat(0.0f) : yv);
  }
  for (; c < units; ++c) {
    h[c] = p[c] + q[c] - center[c];
    y[c] = scale[c] * h[c] + offset[c];
    x[c] = y[c] < 0.0f ? 0.0f : y[c];
  }
}

// C[i, j] (+)= sum_p A(i, p) B[p, j] for i < rows, j < cols, p < depth, where A(i, p) = A[i * a_row + p * a_col]
// (so A or its transpose) and B, C are row-major with leading dimensions ldb, ldc: tiles of 4 rows x 64 columns of
// C are held in registers while p runs (a small matrix product, the rows of a work block at a time).
inline void Gemm(int64_t rows, int64_t cols, int64_t depth, const float* A, int64_t a_row, int64_t a_col,
                 const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= cols; j += 4 * kLanes) {
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      Floats acc[4][4];
      for (int r = 0; r < 4; ++r)
        for (int l = 0; l < 4; ++l) acc[r][l] = accumulate ? Load(C + (i + r) * ldc + j + l * kLanes) : Splat(0.0f);
      for (int64_t p = 0; p < depth; ++p) {
        const float* b = B + p * ldb + j;
        const Floats b0 = Load(b), b1 = Load(b + kLanes), b2 = Load(b + 2 * kLanes), b3 = Load(b + 3 * kLanes);
        for (int r = 0; r < 4; ++r) {
          const Floats a = Splat(A[(i + r) * a_row + p * a_col]);
          acc[r][0] += a * b0;
          acc[r][1] += a * b1;
          acc[r][2] += a * b2;
          acc[r][3] += a * b3;
        }
      }
      for (int r = 0; r < 4; ++r)
        for (int l = 0; l < 4; ++l) Store(C + (i + r) * ldc + j + l * kLanes, acc[r][l]);
    }
    for (; i < rows; ++i) {
      Floats acc[4];
      for (int l = 0; l < 4; ++l) acc[l] = accumulate ? Load(C + i * ldc + j + l * kLanes) : Splat(0.0f);
      for (int64_t p = 0; p < depth; ++p) {
        const Floats a = Splat(A[i * a_row + p * a_col]);
        for (int l = 0; l < 4; ++l) acc[l] += a * Load(B + p * ldb + j + l * kLanes);
      }
      for (int l = 0; l < 4; ++l) Store(C + i * ldc + j + l * kLanes, acc[l]);
    }
  }
  for (; j + kLanes <= cols; j += kLanes) {
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      Floats acc[4];
      for (int r = 0; r < 4; ++r) acc[r] = accumulate ? Load(C + (i + r) * ldc + j) : Splat(0.0f);
      for (int64_t p = 0; p < depth; ++p) {
        const Floats b = Load(B + p * ldb + j);
        for (int r = 0; r < 4; ++r) acc[r] += Splat(A[(i + r) * a_row + p * a_col]) * b;
      }
      for (int r = 0; r < 4; ++r) Store(C + (i + r) * ldc + j, acc[r]);
    }
    for (; i < rows; ++i) {
      Floats acc = accumulate ? Load(C + i * ldc + j) : Splat(0.0f);
      for (int64_t p = 0; p < depth; ++p) acc += Splat(A[i * a_row + p * a_col]) * Load(B + p * ldb + j);
      Store(C + i * ldc + j, acc);
    }
  }
  for (; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) {
      float acc = accumulate ? C[i * ldc + j] : 0.0f;
      for (int64_t p = 0; p < depth; ++p) acc += A[i * a_row + p * a_col] * B[p * ldb + j];
      C[i * ldc + j] = acc;
    }
}

// Adds the column sums of the rows values[r * stride + c], r < n, c < units, to sums (float64), 16 rows at a time in
// float32 (vectorised) between float64 additions.
inline void AddColumnSums(const float* values, int64_t n, int64_t stride, int64_t units, double* sums,
                          const float* center = nullptr, bool squares = false) {
  std::vector<float> part(units);
  for (int64_t r0 = 0; r0 < n; r0 += 16) {
    std::fill(part.begin(), part.end(), 0.0f);
    for (int64_t r = r0; r < std::min(n, r0 + 16); ++r) {
      const float* v = values + r * stride;
      if (squares)
        for (int64_t c = 0; c < units; ++c) {
          const float e = v[c] - center[c];
          part[c] += e * e;
        }
      else
        for (int64_t c = 0; c < units; ++c) part[c] += v[c];
    }
    for (int64_t c = 0; c < units; ++c) sums[c] += part[c];
  }
}

// The sums over the blocks, in block order, of per-block float64 vectors partial[block * units + c].
std::vector<double> BlockTotals(const std::vector<double>& partial, int64_t units) {
  std::vector<double> total(units, 0.0);
  for (size_t i = 0; i < partial.size(); ++i) total[i % units] += partial[i];
  return total;
}

// FirstLayer for the rows of the queries [begin, end) of batch element b (row r: query begin + r / k, proposal
// r % k) into hs, ys, xs [(end - begin) * k, U].
void BlockFirstLayer(const Rows& rows, int64_t b, int64_t begin, int64_t end, const float* scale,
                     const float* center, const float* offset, float* hs, float* ys, float* xs) {
  const int64_t U = rows.units, N = rows.points, k = rows.k;
  for (int64_t r = 0; r < (end - begin) * k; ++r) {
    const int64_t row = b * N + begin + r / k;
    FirstLayer(rows.p + (b * N + rows.idx[row * k + r % k]) * U, rows.q + row * U, scale, center, offset, U,
               hs + r * U, ys + r * U, xs + r * U);
  }
}

// Per-block statistics of `units` channels: the block's row count, sums and sums of squared deviations from the
// block's own mean (float64), merged over the blocks in block order (Chan et al.'s pairwise update).
struct BlockMoments {
  int64_t units;
  std::vector<double> count, sums, deviations;  // [blocks], [blocks, units], [blocks, units]
  BlockMoments(int64_t blocks, int64_t units_)
      : units(units_), count(blocks, 0.0), sums(blocks * units_, 0.0), deviations(blocks * units_, 0.0) {}

  // Records the rows values[r * stride + c], r < n, of block `block` (two passes: its mean, then the deviations,
  // taken from the mean rounded to float32 and corrected: sum (v - m')^2 = sum (v - m)^2 + n (m' - m)^2).
  void Add(int64_t block, const float* values, int64_t n, int64_t stride) {
    double* s = &sums[block * units];
    double* d = &deviations[block * units];
    count[block] = double(n);
    if (n == 0) return;
    AddColumnSums(values, n, stride, units, s);
    std::vector<float> mean(units);
    for (int64_t c = 0; c < units; ++c) mean[c] = float(s[c] / n);
    AddColumnSums(values, n, stride, units, d, mean.data(), true);
    for (int64_t c = 0; c < units; ++c) {
      const double shift = double(mean[c]) - s[c] / n;
      d[c] -= n * shift * shift;
    }
  }

  // The mean and the biased variance over all rows (NaN for no rows). Variance clamped at 0 with NaN kept.
  void Merge(float* mean, float* variance) const {
    const int64_t blocks = int64_t(count.size());
    for (int64_t c = 0; c < units; ++c) {
      double n = 0.0, m = 0.0, m2 = 0.0;
      for (int64_t b = 0; b < blocks; ++b) {
        const double nb = count[b];
        if (nb == 0) continue;
        const double mb = sums[b * units + c] / nb, delta = mb - m;
        m += delta * nb / (n + nb);
        m2 += deviations[b * units + c] + delta * delta * n * nb / (n + nb);
        n += nb;
      }
      const double nan = std::numeric_limits<double>::quiet_NaN();
      mean[c] = float(n > 0 ? m : nan);
      const double v = n > 0 ? m2 / n : nan;
      variance[c] = float(v < 0.0 ? 0.0 : v);
    }
  }
};

}  // namespace

// KerasvidGatherMoments: over all rows h[b, n, m] = per_neighbour[b, indices[b, n, m]] + per_query[b, n] (per
// channel): mean, biased variance, and the means of the two parts (p_mean of the gathered per_neighbour rows,
// q_mean of per_query counted k times); gathered_centred[b, n] = sum_m (per_neighbour[b, indices[b, n, m]] - p_mean)
// for the statistics' gradient (kerasvid/ops/cp_mlp.py).
REGISTER_OP("KerasvidGatherMoments")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Output("mean: float")
    .Output("variance: float")
    .Output("p_mean: float")
    .Output("q_mean: float")
    .Output("gathered_centred: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle p;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &p));
      for (int i = 0; i < 4; ++i) c->set_output(i, c->Vector(c->Dim(p, 2)));
      c->set_output(4, p);
      return absl::OkStatus();
    });

namespace {

class GatherMomentsOp : public OpKernel {
 public:
  explicit GatherMomentsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Rows rows;
    if (!ReadRows(ctx, &rows)) return;
    const int64_t U = rows.units, N = rows.points, k = rows.k, blocks = rows.blocks();
    Tensor *mean = nullptr, *variance = nullptr, *p_mean = nullptr, *q_mean = nullptr, *gathered = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({U}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({U}), &variance));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({U}), &p_mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({U}), &q_mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, ctx->input(0).shape(), &gathered));
    float* centred = gathered->flat<float>().data();
    BlockMoments h_moments(blocks, U);
    std::vector<double> p_sums(blocks * U, 0.0), q_sums(blocks * U, 0.0);
    std::vector<float> p_block_means(blocks * U);
    ForBlocks(ctx, rows, kBlock * k * U * 6, [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      const int64_t block_rows = (end - begin) * k;
      std::vector<float> ps(block_rows * U), hs(block_rows * U);
      for (int64_t r = 0; r < block_rows; ++r) {
        const int64_t row = b * N + begin + r / k;
        const float* p = rows.p + (b * N + rows.idx[row * k + r % k]) * U;
        const float* q = rows.q + row * U;
        for (int64_t c = 0; c < U; ++c) ps[r * U + c] = p[c], hs[r * U + c] = p[c] + q[c];
      }
      h_moments.Add(block, hs.data(), block_rows, U);
      double* p_sum = &p_sums[block * U];
      AddColumnSums(ps.data(), block_rows, U, U, p_sum);
      AddColumnSums(rows.q + (b * N + begin) * U, end - begin, U, U, &q_sums[block * U]);  // each counted k times
      for (int64_t c = 0; c < U; ++c) q_sums[block * U + c] *= k;
      // Centred on the block's mean of the gathered rows here; the difference to the overall mean is added below.
      float* p_mean_used = &p_block_means[block * U];
      for (int64_t c = 0; c < U; ++c) p_mean_used[c] = float(p_sum[c] / block_rows);
      for (int64_t n = begin; n < end; ++n) {
        float* g = centred + (b * N + n) * U;
        std::fill(g, g + U, 0.0f);
        for (int64_t m = 0; m < k; ++m) {
          const float* pr = &ps[((n - begin) * k + m) * U];
          for (int64_t c = 0; c < U; ++c) g[c] += pr[c] - p_mean_used[c];
        }
      }
    });
    h_moments.Merge(mean->flat<float>().data(), variance->flat<float>().data());
    std::vector<double> p_all = BlockTotals(p_sums, U), q_all = BlockTotals(q_sums, U);
    const double count = rows.count();
    for (int64_t c = 0; c < U; ++c) {
      p_all[c] /= count, q_all[c] /= count;
      p_mean->flat<float>()(c) = float(p_all[c]);
      q_mean->flat<float>()(c) = float(q_all[c]);
    }
    for (int64_t block = 0; block < blocks; ++block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      for (int64_t c = 0; c < U; ++c) {
        const float shift = float(k * (double(p_block_means[block * U + c]) - p_all[c]));
        for (int64_t n = begin; n < end; ++n) centred[(b * N + n) * U + c] += shift;
      }
    }
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidGatherMoments").Device(DEVICE_CPU), GatherMomentsOp);

// KerasvidCpMlpForward: with x = relu(scale0 * (h - center0) + offset0) and z = x kernel for every row (see the
// top), z_max and z_min [B, N, U1] are the extremes of z over the k rows of each query, arg_max / arg_min the row m
// (0..k-1) that holds them (the first one on ties), mean / variance (biased) the statistics of z over all rows, and
// x_mean [U0] the mean of x over all rows (for the backward pass).
REGISTER_OP("KerasvidCpMlpForward")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Input("scale0: float")
    .Input("center0: float")
    .Input("offset0: float")
    .Input("kernel: float")
    .Output("z_max: float")
    .Output("z_min: float")
    .Output("arg_max: int32")
    .Output("arg_min: int32")
    .Output("mean: float")
    .Output("variance: float")
    .Output("x_mean: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle p, w;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &p));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 2, &w));
      auto extremes = c->MakeShape({c->Dim(p, 0), c->Dim(p, 1), c->Dim(w, 1)});
      for (int i = 0; i < 4; ++i) c->set_output(i, extremes);
      c->set_output(4, c->Vector(c->Dim(w, 1)));
      c->set_output(5, c->Vector(c->Dim(w, 1)));
      c->set_output(6, c->Vector(c->Dim(p, 2)));
      return absl::OkStatus();
    });

namespace {

// The first layer's parameters (inputs 3-5: scale0, center0, offset0 [U0]) and the kernel (input 6, [U0, U1]).
bool ReadLayers(OpKernelContext* ctx, const Rows& rows, int64_t* out_units) {
  if (!CheckVector(ctx, 3, rows.units, "scale0") || !CheckVector(ctx, 4, rows.units, "center0") ||
      !CheckVector(ctx, 5, rows.units, "offset0"))
    return false;
  const Tensor& w = ctx->input(6);
  KERASVID_REQUIRE(ctx, w.dims() == 2 && w.dim_size(0) == rows.units,
                   absl::InvalidArgumentError(absl::StrCat("kernel must be [", rows.units, ", units], got ",
                                                           w.shape().DebugString())));
  *out_units = w.dim_size(1);
  return true;
}

class CpMlpForwardOp : public OpKernel {
 public:
  explicit CpMlpForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Rows rows;
    int64_t V = 0;
    if (!ReadRows(ctx, &rows) || !ReadLayers(ctx, rows, &V)) return;
    const int64_t U = rows.units, N = rows.points, k = rows.k, blocks = rows.blocks();
    const float* scale = ctx->input(3).flat<float>().data();
    const float* center = ctx->input(4).flat<float>().data();
    const float* offset = ctx->input(5).flat<float>().data();
    const float* w = ctx->input(6).flat<float>().data();
    const TensorShape extremes({rows.batch, N, V});
    Tensor *z_max = nullptr, *z_min = nullptr, *arg_max = nullptr, *arg_min = nullptr, *mean = nullptr,
           *variance = nullptr, *x_mean = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, extremes, &z_max));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, extremes, &z_min));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, extremes, &arg_max));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, extremes, &arg_min));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({V}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({V}), &variance));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, TensorShape({U}), &x_mean));
    float* zmax = z_max->flat<float>().data();
    float* zmin = z_min->flat<float>().data();
    int32_t* amax = arg_max->flat<int32_t>().data();
    int32_t* amin = arg_min->flat<int32_t>().data();
    BlockMoments z_moments(blocks, V);
    std::vector<double> x_sums(blocks * U, 0.0);
    ForBlocks(ctx, rows, kBlock * k * U * V * 2, [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      const int64_t block_rows = (end - begin) * k;  // row r: query begin + r / k, proposal r % k
      std::vector<float> hs(block_rows * U), ys(block_rows * U), xs(block_rows * U), zs(block_rows * V);
      BlockFirstLayer(rows, b, begin, end, scale, center, offset, hs.data(), ys.data(), xs.data());
      AddColumnSums(xs.data(), block_rows, U, U, &x_sums[block * U]);
      Gemm(block_rows, V, U, xs.data(), U, 1, w, V, zs.data(), V, false);  // z = x W, every row of the block
      z_moments.Add(block, zs.data(), block_rows, V);
      for (int64_t n = begin; n < end; ++n) {
        const int64_t row = b * N + n;
        const float* z = &zs[(n - begin) * k * V];  // the query's k rows
        int64_t u = 0;
        for (; u + kLanes <= V; u += kLanes) {
          Floats mx = Load(z + u), mn = mx;
          Ints ax = Ints{}, an = Ints{};
          for (int64_t m = 1; m < k; ++m) {
            const Floats zv = Load(z + m * V + u);
            const Ints here = Ints{} + int32_t(m);
            const Ints above = zv > mx, below = zv < mn;  // the first of equal values is kept
            mx = above ? zv : mx;
            ax = above ? here : ax;
            mn = below ? zv : mn;
            an = below ? here : an;
          }
          Store(zmax + row * V + u, mx);
          Store(zmin + row * V + u, mn);
          std::memcpy(amax + row * V + u, &ax, sizeof(ax));
          std::memcpy(amin + row * V + u, &an, sizeof(an));
        }
        for (; u < V; ++u) {
          float mx = z[u], mn = z[u];
          int32_t ax = 0, an = 0;
          for (int64_t m = 1; m < k; ++m) {
            const float zv = z[m * V + u];
            if (zv > mx) mx = zv, ax = int32_t(m);
            if (zv < mn) mn = zv, an = int32_t(m);
          }
          zmax[row * V + u] = mx, zmin[row * V + u] = mn, amax[row * V + u] = ax, amin[row * V + u] = an;
        }
      }
    });
    z_moments.Merge(mean->flat<float>().data(), variance->flat<float>().data());
    const std::vector<double> x_total = BlockTotals(x_sums, U);
    for (int64_t c = 0; c < U; ++c) x_mean->flat<float>()(c) = float(x_total[c] / rows.count());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidCpMlpForward").Device(DEVICE_CPU), CpMlpForwardOp);

// KerasvidCpMlpBackward: the gradient of KerasvidCpMlpForward's z_max, z_min, mean and variance (arg_max, arg_min
// and x_mean are its outputs; the upstream gradients are grad_max, grad_min [B, N, U1], grad_mean, grad_variance
// [U1]). Each row's z gets dz = [m = arg_max] grad_max + [m = arg_min] grad_min + grad_mean / M
// + 2 grad_variance (z - mean(z)) / M (M = B N k rows). Outputs: grad_rows [B, N, k, U0], the gradient of each
// row's h (to be summed into per_neighbour by index: KerasvidScatterAddRows), grad_per_query [B, N, U0] (the sum of
// a query's rows), and the gradients of kernel, scale0 and offset0 (center0's is -scale0 * grad_offset0).
REGISTER_OP("KerasvidCpMlpBackward")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Input("scale0: float")
    .Input("center0: float")
    .Input("offset0: float")
    .Input("kernel: float")
    .Input("arg_max: int32")
    .Input("arg_min: int32")
    .Input("grad_max: float")
    .Input("grad_min: float")
    .Input("grad_mean: float")
    .Input("grad_variance: float")
    .Input("x_mean: float")
    .Output("grad_rows: float")
    .Output("grad_per_query: float")
    .Output("grad_kernel: float")
    .Output("grad_scale0: float")
    .Output("grad_offset0: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle p, idx;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &p));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &idx));
      c->set_output(0, c->MakeShape({c->Dim(p, 0), c->Dim(p, 1), c->Dim(idx, 2), c->Dim(p, 2)}));
      c->set_output(1, p);
      c->set_output(2, c->input(6));
      c->set_output(3, c->Vector(c->Dim(p, 2)));
      c->set_output(4, c->Vector(c->Dim(p, 2)));
      return absl::OkStatus();
    });

namespace {

class CpMlpBackwardOp : public OpKernel {
 public:
  explicit CpMlpBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Rows rows;
    int64_t V = 0;
    if (!ReadRows(ctx, &rows) || !ReadLayers(ctx, rows, &V)) return;
    const int64_t U = rows.units, N = rows.points, k = rows.k, blocks = rows.blocks();
    const TensorShape extremes({rows.batch, N, V});
    for (int i = 7; i < 11; ++i)
      OP_REQUIRES(ctx, ctx->input(i).shape() == extremes,
                  absl::InvalidArgumentError(absl::StrCat("input ", i, " must be ", extremes.DebugString(),
                                                          ", got ", ctx->input(i).shape().DebugString())));
    if (!CheckVector(ctx, 11, V, "grad_mean") || !CheckVector(ctx, 12, V, "grad_variance") ||
        !CheckVector(ctx, 13, U, "x_mean"))
      return;
    const float* scale = ctx->input(3).flat<float>().data();
    const float* center = ctx->input(4).flat<float>().data();
    const float* offset = ctx->input(5).flat<float>().data();
    const float* w = ctx->input(6).flat<float>().data();
    const int32_t* amax = ctx->input(7).flat<int32_t>().data();
    const int32_t* amin = ctx->input(8).flat<int32_t>().data();
    const float* gmax = ctx->input(9).flat<float>().data();
    const float* gmin = ctx->input(10).flat<float>().data();
    const float* gmean = ctx->input(11).flat<float>().data();
    const float* gvar = ctx->input(12).flat<float>().data();
    const float* x_mean = ctx->input(13).flat<float>().data();
    for (int64_t i = 0; i < extremes.num_elements(); ++i)
      OP_REQUIRES(ctx, amax[i] >= 0 && amax[i] < k && amin[i] >= 0 && amin[i] < k,
                  absl::InvalidArgumentError(absl::StrCat("arg_max / arg_min must lie in [0, ", k, "), got ",
                                                          amax[i], " and ", amin[i])));
    Tensor *grad_rows = nullptr, *grad_q = nullptr, *grad_w = nullptr, *grad_scale = nullptr,
           *grad_offset = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows.batch, N, k, U}), &grad_rows));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &grad_q));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(6).shape(), &grad_w));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({U}), &grad_scale));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({U}), &grad_offset));
    float* drows = grad_rows->flat<float>().data();
    float* dq_all = grad_q->flat<float>().data();
    // Each row's dz = sel + alpha + beta (z - mean(z)), with sel the row's share of grad_max / grad_min (nonzero for
    // the few channels whose extreme it holds), and z - mean(z) = (x - mean(x)) W = x~ W. So, without forming z:
    //   dx = W dz = W sel + W alpha + (W diag(beta) W^T) x~       (a U0 x U0 product and a few columns of W)
    //   dW = X^T dZ = X^T Sel + (X^T 1) alpha^T + (X~^T X~) W diag(beta)   (X^T X~ = X~^T X~)
    // in terms of centred x~, so that no large terms cancel when a channel's mean is large against its spread.
    const double count = rows.count();
    std::vector<float> alpha(V), beta(V), wt(V * U), wbw(U * U, 0.0f), walpha(U, 0.0f);
    for (int64_t u = 0; u < V; ++u) {
      beta[u] = float(2.0 * gvar[u] / count);
      alpha[u] = float(gmean[u] / count);
    }
    for (int64_t c = 0; c < U; ++c)
      for (int64_t u = 0; u < V; ++u) {
        wt[u * U + c] = w[c * V + u];
        walpha[c] += w[c * V + u] * alpha[u];
      }
    for (int64_t c = 0; c < U; ++c)
      for (int64_t d = 0; d < U; ++d) {
        float sum = 0.0f;
        for (int64_t u = 0; u < V; ++u) sum += w[c * V + u] * beta[u] * w[d * V + u];
        wbw[c * U + d] = sum;
      }
    // Per block: X^T Sel (transposed, [V, U]), X~^T X~ [U, U], and the scale / offset gradients. (X^T 1 is
    // M mean(x), from the forward pass.)
    const int64_t per_block = V * U + U * U + 2 * U;
    std::vector<float> partial(blocks * per_block, 0.0f);
    ForBlocks(ctx, rows, kBlock * k * U * (2 * U + 8), [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      const int64_t block_rows = (end - begin) * k;  // row r: query begin + r / k, proposal r % k
      std::vector<float> hs(block_rows * U), ys(block_rows * U), xs(block_rows * U), xcs(block_rows * U),
          dxs(block_rows * U);
      float* sel_t = &partial[block * per_block];
      float* gram = sel_t + V * U;
      float* ds = gram + U * U;
      float* doff = ds + U;
      BlockFirstLayer(rows, b, begin, end, scale, center, offset, hs.data(), ys.data(), xs.data());
      for (int64_t r = 0; r < block_rows; ++r)
        for (int64_t c = 0; c < U; ++c) xcs[r * U + c] = xs[r * U + c] - x_mean[c];
      Gemm(block_rows, U, U, xcs.data(), U, 1, wbw.data(), U, dxs.data(), U, false);  // (W diag(beta) W^T) x~
      Gemm(U, U, block_rows, xcs.data(), 1, U, xcs.data(), U, gram, U, true);          // X~^T X~
      // The extremes' gradients: row (n, arg_max[n, u]) gets grad_max[n, u] on channel u (likewise the minima):
      // dx += g W[:, u] and (X^T Sel)[:, u] += g x.
      for (int64_t n = begin; n < end; ++n) {
        const int64_t row = b * N + n;
        for (int side = 0; side < 2; ++side) {
          const int32_t* arg = (side == 0 ? amax : amin) + row * V;
          const float* grad = (side == 0 ? gmax : gmin) + row * V;
          for (int64_t u = 0; u < V; ++u) {
            const float g = grad[u];
            if (g == 0.0f) continue;
            const int64_t r = (n - begin) * k + arg[u];
            const float* wu = &wt[u * U];
            const float* x = &xs[r * U];
            float* dx = &dxs[r * U];
            float* st = sel_t + u * U;
            const Floats gv = Splat(g);
            int64_t c = 0;
            for (; c + kLanes <= U; c += kLanes) {
              Store(dx + c, Load(dx + c) + gv * Load(wu + c));
              Store(st + c, Load(st + c) + gv * Load(x + c));
            }
            for (; c < U; ++c) dx[c] += g * wu[c], st[c] += g * x[c];
          }
        }
      }
      for (int64_t r = 0; r < block_rows; ++r) {
        const int64_t row = b * N + begin + r / k;
        const float *h = &hs[r * U], *y = &ys[r * U], *dx = &dxs[r * U];
        float* dq = dq_all + row * U;
        if (r % k == 0) std::fill(dq, dq + U, 0.0f);
        float* dr = drows + (row * k + r % k) * U;
        int64_t c = 0;
        for (; c + kLanes <= U; c += kLanes) {
          const Floats yv = Load(y + c), dxv = Load(dx + c) + Load(&walpha[c]);
          const Floats dy = yv > 0.0f ? dxv : Splat(0.0f);
          const Floats dh = dy * Load(scale + c);
          Store(ds + c, Load(ds + c) + dy * Load(h + c));
          Store(doff + c, Load(doff + c) + dy);
          Store(dr + c, dh);
          Store(dq + c, Load(dq + c) + dh);
        }
        for (; c < U; ++c) {
          const float dy = y[c] > 0.0f ? dx[c] + walpha[c] : 0.0f;
          ds[c] += dy * h[c];
          doff[c] += dy;
          dr[c] = dy * scale[c];
          dq[c] += dr[c];
        }
      }
    });
    std::vector<float> total(per_block, 0.0f);
    for (int64_t block = 0; block < blocks; ++block)
      for (int64_t i = 0; i < per_block; ++i) total[i] += partial[block * per_block + i];
    const float* sel_t = total.data();
    const float* gram = sel_t + V * U;
    const float* ds = gram + U * U;
    float* gw = grad_w->flat<float>().data();
    for (int64_t c = 0; c < U; ++c) {
      const float sum_x = float(count * x_mean[c]);  // X^T 1
      for (int64_t u = 0; u < V; ++u) {
        float gram_w = 0.0f;  // (X~^T X~ W)[c, u]
        for (int64_t d = 0; d < U; ++d) gram_w += gram[c * U + d] * w[d * V + u];
        gw[c * V + u] = sel_t[u * U + c] + sum_x * alpha[u] + gram_w * beta[u];
      }
    }
    std::copy(ds, ds + U, grad_scale->flat<float>().data());
    std::copy(ds + U, ds + 2 * U, grad_offset->flat<float>().data());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidCpMlpBackward").Device(DEVICE_CPU), CpMlpBackwardOp);
