// kerasvid CP-module kernels (CPU), built and loaded on first use by kerasvid/ops/native.py.
//
// KerasvidFramePairTopK: the k nearest neighbours per query of kerasvid's cp_knn from the frame-pair scores.
// rows[a], a < T - 1, is [batch, S, (T - 1 - a) * S]: the scores -||f_i - f_j||^2 of point i of frame a against the
// points j of the later frames c = a + 1 .. T - 1, side by side (block (a, c) = columns (c - a - 1) * S ...). Query i
// of frame t has as keys the points of every other frame u: along row i of block (t, u) if u > t, down column i of
// block (u, t) if u < t; key index u * S + j. Output [batch, T * S, k]: the k keys of largest score, nearest first,
// ties to the lower key index (NaN ranks as -inf): what kerasvid.ops.knn's TF-ops selection returns on the same
// scores.
#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

using namespace tensorflow;  // NOLINT

REGISTER_OP("KerasvidFramePairTopK")
    .Input("rows: N * float")
    .Attr("N: int >= 1")
    .Attr("num_frames: int >= 2")
    .Attr("k: int >= 1")
    .Output("indices: int32")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &rows));
      int64_t frames, k;
      TF_RETURN_IF_ERROR(c->GetAttr("num_frames", &frames));
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      shape_inference::DimensionHandle points;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(rows, 1), frames, &points));
      c->set_output(0, c->MakeShape({c->Dim(rows, 0), points, k}));
      return absl::OkStatus();
    });

namespace {

// Before(x, j, y, i): (x, j) ranks before (y, i): larger score, or the same score and a lower key index.
inline bool Before(float x, int32_t j, float y, int32_t i) { return x > y || (x == y && j < i); }

// Inserts (x, j) into the list v/ix of `count` <= k entries kept in rank order (`Before`), keeping the k first.
// NaN ranks as -inf.
inline void Insert(float* v, int32_t* ix, int32_t& count, int k, float x, int32_t j) {
  if (std::isnan(x)) x = -std::numeric_limits<float>::infinity();
  int pos;
  if (count < k) {
    pos = count++;
  } else {
    if (!Before(x, j, v[k - 1], ix[k - 1])) return;
    pos = k - 1;
  }
  while (pos > 0 && Before(x, j, v[pos - 1], ix[pos - 1])) {
    v[pos] = v[pos - 1];
    ix[pos] = ix[pos - 1];
    --pos;
  }
  v[pos] = x;
  ix[pos] = j;
}

constexpr int kLanes = 16;  // keys per group of pass 1
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));  // GCC/Clang vector extension

typedef int32_t Mask __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline bool Any(Mask mask) {
  int32_t any = 0;
  for (int l = 0; l < kLanes; ++l) any |= mask[l];
  return any != 0;
}

inline Lanes Fill(float x) {
  Lanes v;
  for (int l = 0; l < kLanes; ++l) v[l] = x;
  return v;
}

constexpr int kChunk = 64;  // queries per work unit

class FramePairTopKOp : public OpKernel {
 public:
  explicit FramePairTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_frames", &frames_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
  }

  void Compute(OpKernelContext* ctx) override {
    OpInputList rows;
    OP_REQUIRES_OK(ctx, ctx->input_list("rows", &rows));
    const int T = frames_, k = k_;
    OP_REQUIRES(ctx, rows.size() == T - 1,
                absl::InvalidArgumentError(absl::StrCat(T, " frames need ", T - 1, " score rows, got ", rows.size())));
    const bool ranked = rows[0].dims() == 3;
    const int64_t batch = ranked ? rows[0].dim_size(0) : 0, S = ranked ? rows[0].dim_size(1) : 0;
    for (int a = 0; a < T - 1; ++a)
      OP_REQUIRES(ctx, rows[a].dims() == 3 && rows[a].dim_size(0) == batch && rows[a].dim_size(1) == S &&
                           rows[a].dim_size(2) == (T - 1 - a) * S,
                  absl::InvalidArgumentError(absl::StrCat("rows[", a, "] of ", T, " frames of ", S, " points must be [",
                                                          batch, ", ", S, ", ", (T - 1 - a) * S, "], got shape ",
                                                          rows[a].shape().DebugString())));
    OP_REQUIRES(ctx, k <= (T - 1) * S,
                absl::InvalidArgumentError(
                    absl::StrCat("k=", k, " exceeds the ", (T - 1) * S, " points of other frames")));
    OP_REQUIRES(ctx, int64_t(T) * S < std::numeric_limits<int32_t>::max(),
                absl::InvalidArgumentError(absl::StrCat(T * S, " points do not fit int32 indices")));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, T * S, k}), &out));
    int32_t* result = out->flat<int32_t>().data();
    const int64_t chunks = (S + kChunk - 1) / kChunk;
    // Block (a, c) of clip b: element (i, j) at origin(b, a, c)[i * stride(a) + j].
    std::vector<const float*> starts(T - 1);
    for (int a = 0; a < T - 1; ++a) starts[a] = rows[a].flat<float>().data();
    auto stride = [T, S](int a) { return int64_t(T - 1 - a) * S; };
    auto origin = [&](int64_t b, int a, int c) { return starts[a] + b * S * stride(a) + int64_t(c - a - 1) * S; };

    // Two passes per unit of up to kChunk queries of one frame. Pass 1: the maximum of every group of keys. On the
    // column side of a block a group is kLanes consecutive keys (rows) of the query's column; on the row side, where
    // a query's keys lie along its row, a tile of kLanes x kLanes keys gives kLanes groups, group l holding every
    // kLanes-th key from l, so that the maxima are element-wise maxima of rows (vectorised, no horizontal step).
    // The k-th largest maximum of a query, tau, bounds its k-th best score from below (k groups reach tau), so its
    // k best all lie in groups whose maximum is >= tau: pass 2 ranks the scores of those groups only.
    const int64_t tile = int64_t(kLanes) * kLanes;
    const int64_t row_groups = ((S + tile - 1) / tile) * kLanes;  // per other frame, row side (tail padded)
    const int64_t col_groups = (S + kLanes - 1) / kLanes;          // per other frame, column side
    auto work = [&](int64_t begin, int64_t end) {
      const float lowest = -std::numeric_limits<float>::infinity();
      const int64_t max_groups = (T - 1) * std::max(row_groups, col_groups);
      std::vector<float> maxima(max_groups * kChunk), vals(kChunk * k), tops(k), running(kChunk);
      std::vector<int32_t> idx(kChunk * k);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / (T * chunks);
        const int t = int((unit / chunks) % T);
        const int64_t s0 = (unit % chunks) * kChunk;
        const int n = int(std::min<int64_t>(kChunk, S - s0));
        int64_t num_groups = 0;  // maxima[q * max_groups + g]
        for (int u = 0; u < T; ++u) {
          if (u == t) continue;
          if (u > t) {  // row side of block (t, u): query s reads row s
            const float* base = origin(b, t, u) + s0 * stride(t);
            for (int q = 0; q < n; ++q) {
              const float* row = base + q * stride(t);
              float* m = &maxima[q * max_groups + num_groups];
              for (int64_t start = 0; start < S; start += tile, m += kLanes) {
                const int64_t stop = std::min<int64_t>(S, start + tile);
                Lanes part = Fill(lowest);
                int64_t i = start;
                for (; i + kLanes <= stop; i += kLanes) {
                  Lanes x;
                  std::memcpy(&x, row + i, sizeof(Lanes));
                  part = x > part ? x : part;
                }
                float tail[kLanes];
                std::memcpy(tail, &part, sizeof(Lanes));
                for (int l = 0; i + l < stop; ++l) tail[l] = row[i + l] > tail[l] ? row[i + l] : tail[l];
                std::copy(tail, tail + kLanes, m);
              }
            }
            num_groups += row_groups;
          } else {  // column side of block (u, t): query s reads column s, rows are the keys
            const float* base = origin(b, u, t) + s0;
            for (int64_t start = 0, g = num_groups; start < S; start += kLanes, ++g) {
              std::fill(running.begin(), running.begin() + n, lowest);
              const int64_t stop = std::min<int64_t>(S, start + kLanes);
              for (int64_t r = start; r < stop; ++r) {
                const float* x = base + r * stride(u);
                for (int q = 0; q < n; ++q) running[q] = x[q] > running[q] ? x[q] : running[q];
              }
              for (int q = 0; q < n; ++q) maxima[q * max_groups + g] = running[q];
            }
            num_groups += col_groups;
          }
        }
        for (int q = 0; q < n; ++q) {
          const float* m = &maxima[q * max_groups];
          // tau: the k-th largest group maximum (values only; a maximum equal to the current k-th changes nothing).
          for (int i = 0; i < k; ++i) tops[i] = lowest;
          for (int64_t g0 = 0; g0 < num_groups; g0 += kLanes) {
            const int len = int(std::min<int64_t>(kLanes, num_groups - g0));
            if (len == kLanes) {  // most blocks of maxima hold nothing above the current k-th: one vector test
              Lanes x;
              std::memcpy(&x, m + g0, sizeof(Lanes));
              if (!Any(x > Fill(tops[k - 1]))) continue;
            }
            for (int l = 0; l < len; ++l) {
              const float x = m[g0 + l];
              if (!(x > tops[k - 1])) continue;
              int pos = k - 1;
              while (pos > 0 && tops[pos - 1] < x) {
                tops[pos] = tops[pos - 1];
                --pos;
              }
              tops[pos] = x;
            }
          }
          const float tau = tops[k - 1];
          float* v = &vals[q * k];
          int32_t* ix = &idx[q * k];
          int32_t c = 0;
          int64_t g = 0;
          // Scores below tau cannot be among the k best (k group maxima reach tau); the rest are ranked. If tau is
          // -inf (NaN or -inf scores), every score of the visited groups is ranked.
          const bool all = !(tau > lowest);
          for (int u = 0; u < T; ++u) {
            if (u == t) continue;
            const int32_t key0 = int32_t(u * S);
            if (u > t) {
              const float* row = origin(b, t, u) + (s0 + q) * stride(t);
              for (int64_t start = 0; start < S; start += tile)
                for (int l = 0; l < kLanes; ++l, ++g) {
                  if (!(m[g] >= tau)) continue;
                  for (int64_t i = start + l; i < std::min<int64_t>(S, start + tile); i += kLanes)
                    if (all || row[i] >= tau) Insert(v, ix, c, k, row[i], key0 + int32_t(i));
                }
            } else {
              const float* col = origin(b, u, t) + s0 + q;
              const int64_t down = stride(u);
              for (int64_t start = 0; start < S; start += kLanes, ++g) {
                if (!(m[g] >= tau)) continue;
                for (int64_t r = start; r < std::min<int64_t>(S, start + kLanes); ++r)
                  if (all || col[r * down] >= tau) Insert(v, ix, c, k, col[r * down], key0 + int32_t(r));
              }
            }
          }
        }
        int32_t* dst = result + ((b * T + t) * S + s0) * k;
        std::copy(idx.begin(), idx.begin() + n * k, dst);
      }
    };
    const int64_t cost = int64_t(kChunk) * (T - 1) * S * 2;
    Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
          ctx->device()->tensorflow_cpu_worker_threads()->workers, batch * T * chunks, cost, work);
  }

 private:
  int frames_, k_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidFramePairTopK").Device(DEVICE_CPU), FramePairTopKOp);

// KerasvidScatterAddRows: out[b, j] = the sum of updates[b, i, m] over every (i, m) with indices[b, i, m] = j, for
// j < num_rows: the gradient of the CP module's neighbour gather (`tf.gather(values, indices, batch_dims=1)`), in
// one pass over the updates instead of TF's generic ScatterNd. Indices outside [0, num_rows) are an error. Updates
// [batch, N, 1, U] stand for the same row at every m (each row added once per use).
REGISTER_OP("KerasvidScatterAddRows")
    .Input("updates: float")
    .Input("indices: int32")
    .Attr("num_rows: int >= 1")
    .Output("summed: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle updates;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &updates));
      int64_t rows;
      TF_RETURN_IF_ERROR(c->GetAttr("num_rows", &rows));
      c->set_output(0, c->MakeShape({c->Dim(updates, 0), rows, c->Dim(updates, 3)}));
      return absl::OkStatus();
    });

namespace {

class ScatterAddRowsOp : public OpKernel {
 public:
  explicit ScatterAddRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_rows", &rows_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& updates = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    OP_REQUIRES(ctx, updates.dims() == 4 && indices.dims() == 3 && indices.dim_size(0) == updates.dim_size(0) &&
                         indices.dim_size(1) == updates.dim_size(1) &&
                         (indices.dim_size(2) == updates.dim_size(2) || updates.dim_size(2) == 1),
                absl::InvalidArgumentError(absl::StrCat("updates must be [batch, N, k or 1, U] and indices [batch, "
                                                        "N, k], got ", updates.shape().DebugString(), " and ",
                                                        indices.shape().DebugString())));
    const int64_t batch = updates.dim_size(0), sources = indices.dim_size(1) * indices.dim_size(2);
    const int64_t repeat = updates.dim_size(2) == indices.dim_size(2) ? 1 : std::max<int64_t>(1, indices.dim_size(2));  // uses a row
    const int64_t units = updates.dim_size(3), rows = rows_;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, rows, units}), &out));
    const float* upd = updates.flat<float>().data();
    const int32_t* idx = indices.flat<int32_t>().data();
    float* sum = out->flat<float>().data();
    std::fill(sum, sum + batch * rows * units, 0.0f);
    for (int64_t i = 0; i < batch * sources; ++i)
      OP_REQUIRES(ctx, idx[i] >= 0 && idx[i] < rows,
                  absl::InvalidArgumentError(absl::StrCat("index ", idx[i], " outside [0, ", rows, ")")));
    // Each shard owns a range of output rows and adds the sources that land in it: no two threads write a row.
    const int shards = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t piece = begin; piece < end; ++piece) {
        const int64_t b = piece / shards, part = piece % shards;
        const int64_t lo = rows * part / shards, hi = rows * (part + 1) / shards;
        const int32_t* bi = idx + b * sources;
        const float* bu = upd + b * (sources / repeat) * units;
        float* bs = sum + b * rows * units;
        for (int64_t i = 0; i < sources; ++i) {
          const int64_t j = bi[i];
          if (j < lo || j >= hi) continue;
          float* dst = bs + j * units;
          const float* src = bu + (i / repeat) * units;
          for (int64_t u = 0; u < units; ++u) dst[u] += src[u];
        }
      }
    };
    Shard(shards, ctx->device()->tensorflow_cpu_worker_threads()->workers, batch * shards,
          sources * units / shards + sources, work);
  }

 private:
  int64_t rows_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("KerasvidScatterAddRows").Device(DEVICE_CPU), ScatterAddRowsOp);
