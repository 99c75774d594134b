// kerasvid CP-module MLP kernels (CPU), built and loaded with cp_ops.cc by kerasvid/ops/native.py.
//
// The CP module's two-layer MLP on the [B, N, k] neighbour rows (kerasvid/ops/cp_mlp.py gives the formulas):
//   h[b, n, m] = P[b, idx[b, n, m]] + Q[b, n]                       (the first 1x1 conv, split per point)
//   x = relu(scale0 * h + offset0)                                   (its BatchNorm with batch statistics, ReLU)
//   z = x W                                                          (the second 1x1 conv, its bias in the norm)
// and the statistics and extremes over the k rows of a query that the second BatchNorm and the max over k need.
// The [B, N, k, U] tensors h, x and z are never formed: the rows of a block of kBlock queries (k * kBlock rows, a
// few hundred KB at most for the paper's widths) are computed from P, Q and W into scratch buffers that stay in
// cache, by register-tiled small matrix products (Gemm).
//
// Work is split into those blocks; the sums over all rows (statistics, weight gradients) are formed per block and
// added in block order after the parallel part, so the results do not depend on the threads.
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

// x = relu(scale * (p + q) + offset) of one row; h = p + q and y (before the ReLU) kept for the gradient.
inline void FirstLayer(const float* p, const float* q, const float* scale, const float* offset, int64_t units,
                       float* h, float* y, float* x) {
  int64_t c = 0;
  for (; c + kLanes <= units; c += kLanes) {
    const Floats hv = Load(p + c) + Load(q + c), yv = Load(scale + c) * hv + Load(offset + c);
    Store(h + c, hv);
    Store(y + c, yv);
    Store(x + c, yv > 0.0f ? yv : Splat(0.0f));
  }
  for (; c < units; ++c) {
    h[c] = p[c] + q[c];
    y[c] = scale[c] * h[c] + offset[c];
    x[c] = y[c] > 0.0f ? y[c] : 0.0f;
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

// Adds a query's float sums and sums of squares to its block's float64 ones.
inline void AddToBlock(const std::vector<float>& s, const std::vector<float>& ss, double* block_sums,
                       double* block_squares) {
  for (size_t c = 0; c < s.size(); ++c) {
    block_sums[c] += s[c];
    block_squares[c] += ss[c];
  }
}

// Mean and biased variance from per-block sums and sums of squares (double), added in block order.
void Moments(const std::vector<double>& sums, const std::vector<double>& squares, int64_t blocks, int64_t units,
             double count, float* mean, float* variance) {
  for (int64_t u = 0; u < units; ++u) {
    double s = 0.0, ss = 0.0;
    for (int64_t block = 0; block < blocks; ++block) {
      s += sums[block * units + u];
      ss += squares[block * units + u];
    }
    const double m = count > 0 ? s / count : std::numeric_limits<double>::quiet_NaN();
    mean[u] = float(m);
    variance[u] = float(std::max(0.0, ss / count - m * m));
    if (!(count > 0)) variance[u] = std::numeric_limits<float>::quiet_NaN();
  }
}

}  // namespace

// KerasvidGatherMoments: mean and biased variance over all rows h[b, n, m] = per_neighbour[b, indices[b, n, m]] +
// per_query[b, n] (per channel), and gathered_sum[b, n] = sum_m per_neighbour[b, indices[b, n, m]].
REGISTER_OP("KerasvidGatherMoments")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Output("mean: float")
    .Output("variance: float")
    .Output("gathered_sum: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle p;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &p));
      c->set_output(0, c->Vector(c->Dim(p, 2)));
      c->set_output(1, c->Vector(c->Dim(p, 2)));
      c->set_output(2, p);
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
    Tensor *mean = nullptr, *variance = nullptr, *gathered = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({U}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({U}), &variance));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(0).shape(), &gathered));
    float* gsum = gathered->flat<float>().data();
    std::vector<double> sums(blocks * U, 0.0), squares(blocks * U, 0.0);
    ForBlocks(ctx, rows, kBlock * k * U * 4, [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      std::vector<float> s(U, 0.0f), ss(U, 0.0f);
      double* bs = &sums[block * U];
      double* bss = &squares[block * U];
      for (int64_t n = begin; n < end; ++n) {
        const float* q = rows.q + (b * N + n) * U;
        float* g = gsum + (b * N + n) * U;
        std::fill(g, g + U, 0.0f);
        std::fill(s.begin(), s.end(), 0.0f);
        std::fill(ss.begin(), ss.end(), 0.0f);
        for (int64_t m = 0; m < k; ++m) {
          const float* p = rows.p + (b * N + rows.idx[(b * N + n) * k + m]) * U;
          for (int64_t c = 0; c < U; ++c) {
            const float h = p[c] + q[c];
            g[c] += p[c];
            s[c] += h;
            ss[c] += h * h;
          }
        }
        AddToBlock(s, ss, bs, bss);
      }
    });
    Moments(sums, squares, blocks, U, rows.count(), mean->flat<float>().data(), variance->flat<float>().data());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidGatherMoments").Device(DEVICE_CPU), GatherMomentsOp);

// KerasvidCpMlpForward: with x = relu(scale0 * h + offset0) and z = x kernel for every row (see the top), z_max and
// z_min [B, N, U1] are the extremes of z over the k rows of each query, arg_max / arg_min the row m (0..k-1) that
// holds them (the first one on ties), and mean / variance (biased) the statistics of z over all rows.
REGISTER_OP("KerasvidCpMlpForward")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Input("scale0: float")
    .Input("offset0: float")
    .Input("kernel: float")
    .Output("z_max: float")
    .Output("z_min: float")
    .Output("arg_max: int32")
    .Output("arg_min: int32")
    .Output("mean: float")
    .Output("variance: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle p, w;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &p));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 2, &w));
      auto extremes = c->MakeShape({c->Dim(p, 0), c->Dim(p, 1), c->Dim(w, 1)});
      for (int i = 0; i < 4; ++i) c->set_output(i, extremes);
      c->set_output(4, c->Vector(c->Dim(w, 1)));
      c->set_output(5, c->Vector(c->Dim(w, 1)));
      return absl::OkStatus();
    });

namespace {

bool ReadLayers(OpKernelContext* ctx, const Rows& rows, int64_t* out_units) {
  if (!CheckVector(ctx, 3, rows.units, "scale0") || !CheckVector(ctx, 4, rows.units, "offset0")) return false;
  const Tensor& w = ctx->input(5);
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
    const float* offset = ctx->input(4).flat<float>().data();
    const float* w = ctx->input(5).flat<float>().data();
    const TensorShape extremes({rows.batch, N, V});
    Tensor *z_max = nullptr, *z_min = nullptr, *arg_max = nullptr, *arg_min = nullptr, *mean = nullptr,
           *variance = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, extremes, &z_max));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, extremes, &z_min));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, extremes, &arg_max));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, extremes, &arg_min));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({V}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({V}), &variance));
    float* zmax = z_max->flat<float>().data();
    float* zmin = z_min->flat<float>().data();
    int32_t* amax = arg_max->flat<int32_t>().data();
    int32_t* amin = arg_min->flat<int32_t>().data();
    std::vector<double> sums(blocks * V, 0.0), squares(blocks * V, 0.0);
    ForBlocks(ctx, rows, kBlock * k * U * V * 2, [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      const int64_t block_rows = (end - begin) * k;  // row r: query begin + r / k, proposal r % k
      std::vector<float> h(U), y(U), xs(block_rows * U), zs(block_rows * V), s(V), ss(V);
      for (int64_t r = 0; r < block_rows; ++r) {
        const int64_t row = b * N + begin + r / k;
        FirstLayer(rows.p + (b * N + rows.idx[row * k + r % k]) * U, rows.q + row * U, scale, offset, U, h.data(),
                   y.data(), &xs[r * U]);
      }
      Gemm(block_rows, V, U, xs.data(), U, 1, w, V, zs.data(), V, false);  // z = x W, every row of the block
      double* bs = &sums[block * V];
      double* bss = &squares[block * V];
      for (int64_t n = begin; n < end; ++n) {
        const int64_t row = b * N + n;
        const float* z = &zs[(n - begin) * k * V];  // the query's k rows
        int64_t u = 0;
        for (; u + kLanes <= V; u += kLanes) {
          Floats mx = Load(z + u), mn = mx, sv = mx, ssv = mx * mx;
          Ints ax = Ints{}, an = Ints{};
          for (int64_t m = 1; m < k; ++m) {
            const Floats zv = Load(z + m * V + u);
            const Ints here = Ints{} + int32_t(m);
            const Ints above = zv > mx, below = zv < mn;  // the first of equal values is kept
            mx = above ? zv : mx;
            ax = above ? here : ax;
            mn = below ? zv : mn;
            an = below ? here : an;
            sv += zv;
            ssv += zv * zv;
          }
          Store(zmax + row * V + u, mx);
          Store(zmin + row * V + u, mn);
          std::memcpy(amax + row * V + u, &ax, sizeof(ax));
          std::memcpy(amin + row * V + u, &an, sizeof(an));
          Store(&s[u], sv);
          Store(&ss[u], ssv);
        }
        for (; u < V; ++u) {
          float mx = z[u], mn = z[u], sv = 0.0f, ssv = 0.0f;
          int32_t ax = 0, an = 0;
          for (int64_t m = 0; m < k; ++m) {
            const float zv = z[m * V + u];
            if (zv > mx) mx = zv, ax = int32_t(m);
            if (zv < mn) mn = zv, an = int32_t(m);
            sv += zv;
            ssv += zv * zv;
          }
          zmax[row * V + u] = mx, zmin[row * V + u] = mn, amax[row * V + u] = ax, amin[row * V + u] = an;
          s[u] = sv, ss[u] = ssv;
        }
        AddToBlock(s, ss, bs, bss);
      }
    });
    Moments(sums, squares, blocks, V, rows.count(), mean->flat<float>().data(), variance->flat<float>().data());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidCpMlpForward").Device(DEVICE_CPU), CpMlpForwardOp);

// KerasvidCpMlpBackward: the gradient of KerasvidCpMlpForward's z_max, z_min, mean and variance (arg_max, arg_min
// and mean are its outputs; the upstream gradients are grad_max, grad_min [B, N, U1], grad_mean, grad_variance
// [U1]). Each row's z gets dz = [m = arg_max] grad_max + [m = arg_min] grad_min + grad_mean / M
// + 2 grad_variance (z - mean) / M (M = B N k rows). Outputs: grad_rows [B, N, k, U0], the gradient of each row's
// h (to be summed into per_neighbour by index: KerasvidScatterAddRows), grad_per_query [B, N, U0] (the sum of a
// query's rows), and the gradients of kernel, scale0 and offset0.
REGISTER_OP("KerasvidCpMlpBackward")
    .Input("per_neighbour: float")
    .Input("per_query: float")
    .Input("indices: int32")
    .Input("scale0: float")
    .Input("offset0: float")
    .Input("kernel: float")
    .Input("arg_max: int32")
    .Input("arg_min: int32")
    .Input("grad_max: float")
    .Input("grad_min: float")
    .Input("grad_mean: float")
    .Input("grad_variance: float")
    .Input("mean: float")
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
      c->set_output(2, c->input(5));
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
    for (int i = 6; i < 10; ++i)
      OP_REQUIRES(ctx, ctx->input(i).shape() == extremes,
                  absl::InvalidArgumentError(absl::StrCat("input ", i, " must be ", extremes.DebugString(),
                                                          ", got ", ctx->input(i).shape().DebugString())));
    for (int i = 10; i < 13; ++i)
      if (!CheckVector(ctx, i, V, "grad_mean, grad_variance and mean")) return;
    const float* scale = ctx->input(3).flat<float>().data();
    const float* offset = ctx->input(4).flat<float>().data();
    const float* w = ctx->input(5).flat<float>().data();
    const int32_t* amax = ctx->input(6).flat<int32_t>().data();
    const int32_t* amin = ctx->input(7).flat<int32_t>().data();
    const float* gmax = ctx->input(8).flat<float>().data();
    const float* gmin = ctx->input(9).flat<float>().data();
    const float* gmean = ctx->input(10).flat<float>().data();
    const float* gvar = ctx->input(11).flat<float>().data();
    const float* mean = ctx->input(12).flat<float>().data();
    Tensor *grad_rows = nullptr, *grad_q = nullptr, *grad_w = nullptr, *grad_scale = nullptr,
           *grad_offset = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows.batch, N, k, U}), &grad_rows));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &grad_q));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(5).shape(), &grad_w));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({U}), &grad_scale));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({U}), &grad_offset));
    float* drows = grad_rows->flat<float>().data();
    float* dq_all = grad_q->flat<float>().data();
    // Each row's dz = sel + alpha + beta z, with sel the row's share of grad_max / grad_min (nonzero for the few
    // channels whose extreme it holds) and the statistics' part affine in z = W^T x. So, without forming z:
    //   dx = W dz = W sel + W alpha + (W diag(beta) W^T) x        (a U0 x U0 product and a few columns of W)
    //   dW = X^T dZ = X^T Sel + (X^T 1) alpha^T + (X^T X) W diag(beta)   (X^T X and X^T 1 summed over the rows)
    const double count = rows.count();
    std::vector<float> alpha(V), beta(V), wt(V * U), wbw(U * U, 0.0f), walpha(U, 0.0f);
    for (int64_t u = 0; u < V; ++u) {
      beta[u] = float(2.0 * gvar[u] / count);
      alpha[u] = float(gmean[u] / count - 2.0 * gvar[u] * mean[u] / count);
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
    // Per block: X^T Sel (transposed, [V, U]), X^T X [U, U], X^T 1, and the scale / offset gradients.
    const int64_t per_block = V * U + U * U + 3 * U;
    std::vector<float> partial(blocks * per_block, 0.0f);
    ForBlocks(ctx, rows, kBlock * k * U * (2 * U + 8), [&](int64_t block) {
      int64_t b, begin, end;
      BlockQueries(rows, block, &b, &begin, &end);
      const int64_t block_rows = (end - begin) * k;  // row r: query begin + r / k, proposal r % k
      std::vector<float> hs(block_rows * U), ys(block_rows * U), xs(block_rows * U), dxs(block_rows * U);
      float* sel_t = &partial[block * per_block];
      float* gram = sel_t + V * U;
      float* sum_x = gram + U * U;
      float* ds = sum_x + U;
      float* doff = ds + U;
      for (int64_t r = 0; r < block_rows; ++r) {
        const int64_t row = b * N + begin + r / k;
        FirstLayer(rows.p + (b * N + rows.idx[row * k + r % k]) * U, rows.q + row * U, scale, offset, U,
                   &hs[r * U], &ys[r * U], &xs[r * U]);
      }
      Gemm(block_rows, U, U, xs.data(), U, 1, wbw.data(), U, dxs.data(), U, false);  // (W diag(beta) W^T) x
      Gemm(U, U, block_rows, xs.data(), 1, U, xs.data(), U, gram, U, true);          // X^T X
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
        const float *h = &hs[r * U], *y = &ys[r * U], *x = &xs[r * U], *dx = &dxs[r * U];
        float* dq = dq_all + row * U;
        if (r % k == 0) std::fill(dq, dq + U, 0.0f);
        float* dr = drows + (row * k + r % k) * U;
        int64_t c = 0;
        for (; c + kLanes <= U; c += kLanes) {
          const Floats yv = Load(y + c), dxv = Load(dx + c) + Load(&walpha[c]);
          const Floats dy = yv > 0.0f ? dxv : Splat(0.0f);
          const Floats dh = dy * Load(scale + c);
          Store(sum_x + c, Load(sum_x + c) + Load(x + c));
          Store(ds + c, Load(ds + c) + dy * Load(h + c));
          Store(doff + c, Load(doff + c) + dy);
          Store(dr + c, dh);
          Store(dq + c, Load(dq + c) + dh);
        }
        for (; c < U; ++c) {
          const float dy = y[c] > 0.0f ? dx[c] + walpha[c] : 0.0f;
          sum_x[c] += x[c];
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
    const float* sum_x = gram + U * U;
    float* gw = grad_w->flat<float>().data();
    for (int64_t c = 0; c < U; ++c)
      for (int64_t u = 0; u < V; ++u) {
        float gram_w = 0.0f;  // (X^T X W)[c, u]
        for (int64_t d = 0; d < U; ++d) gram_w += gram[c * U + d] * w[d * V + u];
        gw[c * V + u] = sel_t[u * U + c] + sum_x[c] * alpha[u] + gram_w * beta[u];
      }
    std::copy(sum_x + U, sum_x + 2 * U, grad_scale->flat<float>().data());
    std::copy(sum_x + 2 * U, sum_x + 3 * U, grad_offset->flat<float>().data());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidCpMlpBackward").Device(DEVICE_CPU), CpMlpBackwardOp);
