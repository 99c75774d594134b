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

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

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

constexpr int kLanes = 16;  // scores per vector
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));  // GCC/Clang vector extension
typedef int32_t Mask __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Lanes Fill(float x) {
  Lanes v;
  for (int l = 0; l < kLanes; ++l) v[l] = x;
  return v;
}

inline Lanes Load(const float* p) {
  Lanes x;
  std::memcpy(&x, p, sizeof(Lanes));
  return x;
}

// Bit l set where !(x[l] < t[l]): x >= t, or x is NaN (a NaN key goes to Insert, which ranks it as -inf).
inline uint32_t NotBelow(Lanes x, Lanes t) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask((__m512)x, (__m512)t, _CMP_NLT_UQ);
#elif defined(__AVX2__)
  const __m256* xs = reinterpret_cast<const __m256*>(&x);
  const __m256* ts = reinterpret_cast<const __m256*>(&t);
  return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(xs[0], ts[0], _CMP_NLT_UQ))) |
         uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(xs[1], ts[1], _CMP_NLT_UQ))) << 8;
#else
  const Mask below = x < t;
  uint32_t bits = 0;
  for (int l = 0; l < kLanes; ++l) bits |= uint32_t(below[l] == 0) << l;
  return bits;
#endif
}

// The k-th largest of the kLanes * n values of g (none NaN; -inf if k > kLanes * n): the largest value that k of
// the values reach.
inline float KthLargest(const Lanes* g, int n, int k) {
  float kth = -std::numeric_limits<float>::infinity();
  if (k > n * kLanes) return kth;
  for (int a = 0; a < n; ++a)
    for (int l = 0; l < kLanes; ++l) {
      const float x = g[a][l];
      if (!(x > kth)) continue;
      int reach = 0;
      for (int c = 0; c < n; ++c) reach += __builtin_popcount(NotBelow(g[c], Fill(x)));
      if (reach >= k) kth = x;
    }
  return kth;
}

constexpr int kChunk = 64;    // queries per work unit: their column-side keys are 256 contiguous bytes a row
constexpr int kAhead = 8;     // rows of a column slab prefetched ahead (the rows are far apart: no hardware stream)

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

    // One unit is up to kChunk queries s0 .. s0 + n - 1 of frame t; each score is read once from memory per side.
    // Row side (keys of later frames): query s's keys are one contiguous row, (T - 1 - t) * S scores (<= 22 KB at
    // T=8, S=784: it stays in L1 between the two steps). Step 1 cuts the row's vectors into A segments and takes
    // the element-wise maximum of each segment's vectors: 16 * A >= 2k maxima of disjoint groups of keys (lane l of
    // segment a). Their k-th largest, `bound`, is a valid threshold: k distinct groups reach it, and each group's
    // maximum is one of its keys' scores, so k keys score >= bound, hence the k-th best score is >= bound and no key
    // below bound is among the k best. Step 2 passes the row's scores through that threshold (one vector compare
    // per 16 keys) and ranks only those that pass (Insert). Column side (keys of earlier frames u < t, down column s
    // of block (u, t)): the rows of the block, each 256 contiguous bytes of the unit's n queries, stream once;
    // each query keeps a running threshold, the k-th score of its list once full (-inf before): a key below it
    // cannot enter, the rest are ranked. That is every key of a query either ranked or provably outside its k
    // best, so the lists are the exact top k; Insert settles ties to the lower key index, whatever the order keys
    // arrive in. NaN scores rank as -inf: the comparisons let NaN through (`NotBelow`) and Insert places it; a
    // bound of -inf (fewer than k groups above -inf) passes every key. The column side visits the nearest earlier
    // frame first (u = t - 1 down to 0: in a video the nearest keys are often in the adjacent frames, so the
    // thresholds rise early). Against the former two passes (group maxima of both sides, the k-th largest of ~400
    // maxima per query, then a second read of the chosen groups): 35 -> 16 ms CPU at T=8, S=784, k=12.
    const int A = (k + 7) / 8;
    auto work = [&](int64_t begin, int64_t end) {
      const float lowest = -std::numeric_limits<float>::infinity();
      std::vector<float> vals(kChunk * k), threshold(kChunk);
      std::vector<int32_t> idx(kChunk * k), count(kChunk);
      std::vector<Lanes> maxima(A);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / (T * chunks);
        const int t = int((unit / chunks) % T);
        const int64_t s0 = (unit % chunks) * kChunk;
        const int n = int(std::min<int64_t>(kChunk, S - s0));
        const int64_t length = int64_t(T - 1 - t) * S;  // keys on the row side
        const int32_t row_key0 = int32_t((t + 1) * S);
        for (int q = 0; q < n; ++q) {
          float* v = &vals[q * k];
          int32_t* ix = &idx[q * k];
          int32_t c = 0;
          if (length > 0) {
            const float* row = origin(b, t, t + 1) + (s0 + q) * stride(t);
            const int64_t vectors = length / kLanes;
            for (int a = 0; a < A; ++a) {
              Lanes m = Fill(lowest);
              for (int64_t i = vectors * a / A; i < vectors * (a + 1) / A; ++i) {
                const Lanes x = Load(row + i * kLanes);
                m = x > m ? x : m;
              }
              maxima[a] = m;
            }
            for (int64_t p = vectors * kLanes; p < length; ++p) {  // the tail joins the last segment's groups
              float& m = maxima[A - 1][p % kLanes];
              m = row[p] > m ? row[p] : m;
            }
            const float bound = KthLargest(maxima.data(), A, k);
            const Lanes above = Fill(bound);
            int64_t p = 0;
            for (; p + kLanes <= length; p += kLanes)
              for (uint32_t bits = NotBelow(Load(row + p), above); bits != 0; bits &= bits - 1) {
                const int l = __builtin_ctz(bits);
                Insert(v, ix, c, k, row[p + l], row_key0 + int32_t(p + l));
              }
            for (; p < length; ++p)
              if (!(row[p] < bound)) Insert(v, ix, c, k, row[p], row_key0 + int32_t(p));
          }
          count[q] = c;
          threshold[q] = c == k ? v[k - 1] : lowest;
        }
        const int full = n / kLanes * kLanes;
        for (int u = t - 1; u >= 0; --u) {
          const float* base = origin(b, u, t) + s0;
          const int64_t down = stride(u);
          const int32_t key0 = int32_t(u * S);
          auto rank = [&](int q, float x, int64_t r) {
            Insert(&vals[q * k], &idx[q * k], count[q], k, x, key0 + int32_t(r));
            if (count[q] == k) threshold[q] = vals[q * k + k - 1];
          };
          for (int64_t r = 0; r < S; ++r) {
            const float* x = base + r * down;
            if (r + kAhead < S)
              for (int o = 0; o < n; o += 64 / int(sizeof(float))) __builtin_prefetch(x + kAhead * down + o);
            int q = 0;
            for (; q < full; q += kLanes)
              for (uint32_t bits = NotBelow(Load(x + q), Load(&threshold[q])); bits != 0; bits &= bits - 1) {
                const int l = __builtin_ctz(bits);
                rank(q + l, x[q + l], r);
              }
            for (; q < n; ++q)
              if (!(x[q] < threshold[q])) rank(q, x[q], r);
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
