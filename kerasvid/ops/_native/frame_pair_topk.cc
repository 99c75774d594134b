// KerasvidFramePairTopK: the k nearest neighbours per query from the frame-pair score blocks of kerasvid's cp_knn.
//
// blocks[b, p] holds the scores -||f_i - f_j||^2 of frame pair p = (a, c), a < c (pairs in np.triu_indices order),
// row i a point of frame a, column j a point of frame c. Query i of frame t has as keys the points of every other
// frame u: along row i of block (t, u) if u > t, down column i of block (u, t) if u < t; key index u * S + j.
// Output [batch, T * S, k]: the k keys of largest score, nearest first, ties to the lower key index (NaN ranks as
// -inf): exactly what kerasvid.ops.knn's TF-ops selection returns on the same blocks. Built and loaded on first use by
// kerasvid/ops/native.py; CPU only.
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
    .Input("blocks: float")
    .Attr("num_frames: int >= 2")
    .Attr("k: int >= 1")
    .Output("indices: int32")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle blocks;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &blocks));
      int64_t frames, k;
      TF_RETURN_IF_ERROR(c->GetAttr("num_frames", &frames));
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      shape_inference::DimensionHandle points;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(blocks, 2), frames, &points));
      c->set_output(0, c->MakeShape({c->Dim(blocks, 0), points, k}));
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
    const Tensor& blocks = ctx->input(0);
    OP_REQUIRES(ctx, blocks.dims() == 4,
                absl::InvalidArgumentError(
                    absl::StrCat("blocks must be [batch, pairs, S, S], got shape ", blocks.shape().DebugString())));
    const int64_t batch = blocks.dim_size(0), pairs = blocks.dim_size(1), S = blocks.dim_size(2);
    const int T = frames_, k = k_;
    OP_REQUIRES(ctx, pairs == int64_t(T) * (T - 1) / 2 && blocks.dim_size(3) == S,
                absl::InvalidArgumentError(absl::StrCat("blocks of ", T, " frames must be [batch, ", T * (T - 1) / 2,
                                                        ", S, S], got shape ", blocks.shape().DebugString())));
    OP_REQUIRES(ctx, k <= (T - 1) * S,
                absl::InvalidArgumentError(
                    absl::StrCat("k=", k, " exceeds the ", (T - 1) * S, " points of other frames")));
    OP_REQUIRES(ctx, int64_t(T) * S < std::numeric_limits<int32_t>::max(),
                absl::InvalidArgumentError(absl::StrCat(T * S, " points do not fit int32 indices")));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, T * S, k}), &out));
    const float* data = blocks.flat<float>().data();
    int32_t* result = out->flat<int32_t>().data();
    const int64_t chunks = (S + kChunk - 1) / kChunk;
    auto pair_of = [T](int a, int b) { return int64_t(a) * T - int64_t(a) * (a + 1) / 2 + (b - a - 1); };

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
            const float* base = data + ((b * pairs + pair_of(t, u)) * S + s0) * S;
            for (int q = 0; q < n; ++q) {
              const float* row = base + q * S;
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
            const float* base = data + ((b * pairs + pair_of(u, t)) * S) * S + s0;
            for (int64_t start = 0, g = num_groups; start < S; start += kLanes, ++g) {
              std::fill(running.begin(), running.begin() + n, lowest);
              const int64_t stop = std::min<int64_t>(S, start + kLanes);
              for (int64_t r = start; r < stop; ++r) {
                const float* x = base + r * S;
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
              const float* row = data + ((b * pairs + pair_of(t, u)) * S + s0 + q) * S;
              for (int64_t start = 0; start < S; start += tile)
                for (int l = 0; l < kLanes; ++l, ++g) {
                  if (!(m[g] >= tau)) continue;
                  for (int64_t i = start + l; i < std::min<int64_t>(S, start + tile); i += kLanes)
                    if (all || row[i] >= tau) Insert(v, ix, c, k, row[i], key0 + int32_t(i));
                }
            } else {
              const float* col = data + ((b * pairs + pair_of(u, t)) * S) * S + s0 + q;
              for (int64_t start = 0; start < S; start += kLanes, ++g) {
                if (!(m[g] >= tau)) continue;
                for (int64_t r = start; r < std::min<int64_t>(S, start + kLanes); ++r)
                  if (all || col[r * S] >= tau) Insert(v, ix, c, k, col[r * S], key0 + int32_t(r));
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
