"""Correspondence-proposal k-nearest neighbours (CPNet, Liu et al., CVPR 2019)."""
import functools
import math

import numpy as np
import tensorflow as tf

from kerasvid.ops import native

__all__ = ["cp_knn", "default_chunk_size"]

# Score memory per clip (bytes) above which `cp_knn` switches from the dense frame-pair blocks to chunked queries.
# 8 x 28 x 28 points (CPNet res3) need 2 x 28 blocks of 784 x 784 floats = 138 MB and stay dense.
DENSE_BUDGET_BYTES = 160 * 2**20

# Added (negated) to the score of every same-frame pair. Finite on purpose: the mask is folded into the
# distance matmul as `-penalty * onehot(t_i) . onehot(t_j)`, and `inf * 0` would give NaN.
_SAME_FRAME_PENALTY = 1e30

# Extra candidates the matmul stage proposes per query (k + RERANK_MARGIN), for the exact re-ranking.
RERANK_MARGIN = 2


def _score_matmul(a, b):
    """`a @ b^T` of the distance scores: the only matmul of `cp_knn` (and the one TF32 would round)."""
    return tf.matmul(a, b, transpose_b=True)


def _tf32_matmuls_possible():
    """Whether float32 matmuls may run as TF32 here (read when the graph is traced): TF32 enabled and a GPU visible.

    TF enables TF32 by default (`tf.config.experimental.enable_tensor_float_32_execution`); it takes effect on
    Ampere and newer GPUs only. A CPU never rounds float32 matmul inputs.
    """
    return tf.config.experimental.tensor_float_32_execution_enabled() and bool(tf.config.list_logical_devices("GPU"))


def _num_candidates(k, available, rerank):
    """Candidates the matmul stage keeps per query: `k + RERANK_MARGIN` for the exact re-ranking, else k."""
    return min(available, k + RERANK_MARGIN) if rerank else k


def _centred(points):
    """`points` minus their per-channel mean over the clip, the mean rounded to a coarse grid (distances unchanged).

    The score matmul's rounding error grows with `|f|^2`, not with the spread of the points, so removing the common
    offset (ReLU-fed features have positive means) shrinks it. The mean is rounded to a multiple of
    `2^(e - 8)`, `2^e >= max |f|`, so that points on a coarse grid (small integers) stay exact and their ties stay ties.
    """
    scale = tf.reduce_max(tf.abs(points), axis=[1, 2], keepdims=True)
    tiny = tf.constant(np.finfo(points.dtype.as_numpy_dtype).tiny, points.dtype)
    exponent = tf.math.ceil(tf.math.log(tf.maximum(scale, tiny)) / math.log(2.0))
    step = tf.pow(tf.constant(2.0, points.dtype), exponent - 8)
    return points - tf.round(tf.reduce_mean(points, axis=1, keepdims=True) / step) * step


def _exact_rerank(queries, points, candidates, k):
    """The k nearest of each query's candidates by squared distances computed directly, ties to the lower index.

    `queries` `[B, Q, C]`, `points` `[B, N, C]`, `candidates` `[B, Q, m]` indices into `points`. The distances are
    `sum_c (q_c - f_c)^2`, element-wise: no matmul (so no TF32 rounding) and no `|q|^2 + |f|^2 - 2 q.f`
    cancellation. Candidates are put in index order first, so `top_k` breaks ties towards the lower index.
    Returns int32 `[B, Q, k]`, nearest first.
    """
    candidates = tf.sort(tf.cast(candidates, tf.int32), axis=-1)
    neighbours = tf.gather(points, candidates, batch_dims=1)  # [B, Q, m, C]
    distances = tf.reduce_sum(tf.square(neighbours - tf.expand_dims(queries, 2)), axis=-1)
    pos = tf.math.top_k(-distances, k=k, sorted=True).indices
    return tf.gather(candidates, pos, batch_dims=2)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {name}={value!r}")


def _static_points_shape(points):
    shape = points.shape
    if shape.rank != 3:
        raise ValueError(f"`points` must have rank 3 [batch, num_points, channels], got shape {shape}")
    if shape[1] is None or shape[2] is None:
        raise ValueError(f"`points` needs static num_points and channels, got shape {shape}")
    return shape[1], shape[2]


def _group_size(num_points, k, largest=32):
    """Largest divisor of `num_points` up to `largest` that leaves at least `k` groups (1: no grouping)."""
    for g in range(min(largest, num_points // k), 3, -1):
        if num_points % g == 0:
            return g
    return 1


@functools.lru_cache(maxsize=None)
def _frame_pair_tables(num_frames):
    """Static index tables of the frame-pair formulation for T frames.

    Returns `(first, second, others, source)`: the P = T(T-1)/2 pairs `first[p] < second[p]`; `others[t]`, the
    T-1 other frames of frame t in increasing order; `source[t, m]`, where the scores of frame t's queries against
    frame `others[t, m]` live: block `p` of the pair scores (`< P`, rows) or `P + p` of their transposes.
    """
    first, second = np.triu_indices(num_frames, 1)
    num_pairs = len(first)
    pair_of = np.zeros((num_frames, num_frames), np.int32)
    pair_of[first, second] = pair_of[second, first] = np.arange(num_pairs)
    others = np.array([[u for u in range(num_frames) if u != t] for t in range(num_frames)], np.int32)
    source = np.array([[pair_of[t, u] + (0 if u > t else num_pairs) for u in others[t]]
                       for t in range(num_frames)], np.int32)
    return first.astype(np.int32), second.astype(np.int32), others, source


def _frame_pair_knn(points, num_frames, k, compiled=False):
    """Exact `cp_knn` from the distance blocks of frame pairs: half the matmul of the dense score matrix.

    The negated squared distance is symmetric and the own frame is excluded, so only the T(T-1)/2 blocks
    `D[p] = -||f_a - f_b||^2` of frame pairs a < b are computed (one batched matmul on points augmented with their
    squared norms). Frame t's queries see frame u > t in the rows of `D[(t, u)]` and u < t in its columns.
    Selection is the two-stage one of `_top_k_indices` over each query's `(T - 1) * S` candidates, kept in
    increasing key index (key frame, then point): group maxima of `g` consecutive keys, the k' = k + RERANK_MARGIN
    best groups, the best k' of their `k' * g` scores, then the exact re-ranking (`_exact_rerank`) of those k'.
    """
    batch = tf.shape(points)[0]
    num_points, channels = points.shape[1], points.shape[2]
    per_frame = num_points // num_frames
    rerank = _tf32_matmuls_possible()
    exact_k, k = k, _num_candidates(k, num_points - per_frame, rerank)  # the matmul stage proposes k candidates
    first, second, others, source = _frame_pair_tables(num_frames)
    num_pairs = len(first)
    f = tf.reshape(_centred(points), [batch, num_frames, per_frame, channels])
    sq_norm = tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)
    ones = tf.ones_like(sq_norm)
    left = tf.concat([2.0 * f, -sq_norm, ones], axis=-1)  # left_i . right_j = -||f_i - f_j||^2
    right = tf.concat([f, ones, -sq_norm], axis=-1)
    if compiled and not rerank and points.dtype == tf.float32 and native.usable():
        # The same selection in one compiled op, on the same scores laid out per first frame: frame a's points
        # against all later frames in one matmul each (no gathered copies; ~10% faster than the batched blocks).
        rows = []
        for a in range(num_frames - 1):
            with tf.control_dependencies(rows[-1:]):  # one after another, each on every core: no oversubscription
                rows.append(_score_matmul(left[:, a], tf.reshape(right[:, a + 1:], [batch, -1, channels + 2])))
        return native.frame_pair_top_k(rows, num_frames, k)
    blocks = _score_matmul(tf.gather(left, first, axis=1), tf.gather(right, second, axis=1))  # [B, P, S, S]

    # Groups never straddle two frames: divisors of S, at least ceil(k / (T - 1)) per frame (k in the T-1 others).
    group = _group_size(per_frame, -(-k // (num_frames - 1)))
    groups = per_frame // group
    if group > 1:  # maxima of g consecutive columns (the rows' groups) and of g consecutive rows (the transposes')
        row_max = tf.reduce_max(tf.reshape(blocks, [batch, num_pairs, per_frame, groups, group]), axis=-1)
        col_max = tf.reduce_max(tf.reshape(blocks, [batch, num_pairs, groups, group, per_frame]), axis=3)
        maxima = tf.concat([row_max, tf.transpose(col_max, [0, 1, 3, 2])], axis=1)
    else:
        maxima = tf.concat([blocks, tf.transpose(blocks, [0, 1, 3, 2])], axis=1)
    maxima = tf.gather(maxima, source, axis=1)  # [B, T, T-1, S, G]
    maxima = tf.reshape(tf.transpose(maxima, [0, 1, 3, 2, 4]), [batch, num_points, (num_frames - 1) * groups])
    query_frame = np.repeat(np.arange(num_frames, dtype=np.int32), per_frame)[:, None]  # [N, 1]
    others = others.reshape(-1)
    if group == 1:  # the maxima are the scores themselves
        best = tf.math.top_k(maxima, k=k, sorted=not rerank).indices
        proposals = tf.gather(others, query_frame * (num_frames - 1) + best // groups) * per_frame + best % groups
        return _exact_rerank(points, points, proposals, exact_k) if rerank else proposals

    best_groups = tf.sort(tf.math.top_k(maxima, k=k, sorted=False).indices, axis=-1)  # in index order
    slot, start = best_groups // groups, best_groups % groups  # which other frame, which group in it
    src = tf.gather(source.reshape(-1), query_frame * (num_frames - 1) + slot)
    local = (np.arange(num_points, dtype=np.int32) % per_frame)[:, None]  # query's point within its frame
    # Score of (query, key) in the flattened blocks: row `local`, column `key` of block `src` (< P), or row `key`,
    # column `local` of block `src - P` (the transposed side), so no transposed copy of the blocks is needed. The g
    # keys of a group lie `step` apart from the first one's score (1 along a row, S down a column), so the
    # [B, N, k, g] index tensor costs one multiply-add; the rest is [B, N, k].
    row_side = src < num_pairs
    first_key = start * group
    base = (src % num_pairs) * per_frame ** 2 + tf.where(row_side, local * per_frame + first_key,
                                                         first_key * per_frame + local)
    step = tf.where(row_side, 1, per_frame)
    flat_index = tf.expand_dims(base, -1) + tf.expand_dims(step, -1) * np.arange(group, dtype=np.int32)
    candidates = tf.gather(tf.reshape(blocks, [batch, -1]), flat_index, batch_dims=1)  # [B, N, k, g]
    pos = tf.math.top_k(tf.reshape(candidates, [batch, num_points, k * group]), k=k, sorted=not rerank).indices
    chosen = pos // group
    key_frame = tf.gather(others, query_frame * (num_frames - 1) + tf.gather(slot, chosen, batch_dims=2))
    proposals = key_frame * per_frame + tf.gather(start, chosen, batch_dims=2) * group + pos % group
    return _exact_rerank(points, points, proposals, exact_k) if rerank else proposals


def _top_k_indices(scores, k, group):
    """Indices of the k largest scores along the last axis, ties to the lower index, like `tf.math.top_k`.

    Two-stage selection when `group > 1`: the last axis is cut into contiguous groups of `group` scores, the k
    groups with the largest maxima are kept (ties: lower group first), and the final top-k runs over their
    `k * group` scores. Exact: an element outside those groups is beaten by the k group maxima, each larger or
    equal with a lower index. Selection, not the distance matmul, dominates a dense kNN on CPU; this reads the
    score block once with a vectorised max instead of running a heap over every row.
    """
    if group == 1:
        return tf.math.top_k(scores, k=k, sorted=True).indices
    lead = tf.shape(scores)[:-1]
    n = scores.shape[-1]
    grouped = tf.reshape(scores, tf.concat([lead, [n // group, group]], axis=0))
    best_groups = tf.math.top_k(tf.reduce_max(grouped, axis=-1), k=k, sorted=False).indices
    best_groups = tf.sort(best_groups, axis=-1)  # candidates in index order, so ties still go to the lower index
    rank = scores.shape.rank
    candidates = tf.gather(grouped, best_groups, batch_dims=rank - 1)  # [..., k, group]
    candidates = tf.reshape(candidates, tf.concat([lead, [k * group]], axis=0))
    pos = tf.math.top_k(candidates, k=k, sorted=True).indices
    return tf.gather(best_groups, pos // group, batch_dims=rank - 1) * group + pos % group


def default_chunk_size(num_points, bytes_per_score=4, budget=None):
    """Query chunk size that keeps one clip's `[chunk, N]` score block under `budget` bytes.

    `budget` defaults to `DENSE_BUDGET_BYTES` (read at call time). Returns `num_points` (dense, one block)
    when the whole `[N, N]` matrix fits the budget; otherwise the smallest number of equal chunks that fit.
    """
    budget = DENSE_BUDGET_BYTES if budget is None else budget
    largest = int(max(1, min(num_points, budget // (bytes_per_score * num_points))))
    num_chunks = math.ceil(num_points / largest)
    return math.ceil(num_points / num_chunks)  # equal blocks rather than full ones and a small remainder


def cp_knn(points, num_frames, k, chunk_size=None, compiled=False):
    """Correspondence proposals: k nearest neighbours in feature space among points of other frames.

    From "Learning Video Representations from Correspondence Proposals" (Liu, Lee, Jin, CVPR 2019), step
    "correspondence embedding" of the CP module (supp. section G for the complexity). For points
    `f_1..f_N` of a clip flattened frame-major (`N = T * S`, point `i` lies in frame `t(i) = i // S`):

        knn(i) = the k indices j with t(j) != t(i) minimising ||f_i - f_j||^2, in increasing distance.

    Ties break towards the lower index, in dense and chunked mode alike. Two exact formulations:

    - Dense (frame pairs): the distance is symmetric and the own frame excluded, so only the `T(T-1)/2` blocks
      `-||f_a - f_b||^2` of frame pairs `a < b` are computed (one batched matmul on points augmented with their
      squared norms, `S x S` per pair, `S = N / T`) and read row-wise and, transposed, column-wise: about half
      the multiply-adds of the full `N x N` score matrix. Memory: `T(T-1) S^2` floats per clip.
    - Chunked queries: the score `2 f_i . f_j - |f_j|^2 - P [t(i) == t(j)]` of `chunk_size` queries against
      all `N` points at a time (the per-row `|f_i|^2` does not change the ranking; the same-frame penalty `P` is
      folded into the matmul by appending `[1, -P onehot(t_i)]` to each query and `[-|f_j|^2, onehot(t_j)]` to
      each key), each block after the previous one (control dependencies), so at most a `[batch, chunk_size, N]`
      score block exists at once: O(chunk x N) memory, not O(N^2).

    Both select in two exact stages (the best groups of up to 32 consecutive candidates by their maximum, then
    the best k inside them) instead of one `tf.math.top_k` over whole rows (`benchmarks/bench_cp_knn.py` times
    both).

    Exactness. The scores come from one matmul on points centred by their per-channel mean (coarsely rounded, so
    that grid-valued points stay exact): the matmul's rounding error grows with `|f|^2`, and centring removes the
    common offset of ReLU-fed features. On a CPU the float32 matmul then ranks directly. Where float32 matmuls
    may run as TF32 (TF's default on Ampere and newer GPUs: inputs rounded to 10 mantissa bits, an error of about
    `2^-11 (|f_i| + |f_j|)^2` per score, which changed 1% of the neighbour sets in a simulation), the rule is:
    the matmul only proposes `k + RERANK_MARGIN` (k + 2) candidates per query, and the k neighbours are chosen
    among them by distances `sum_c (f_ic - f_jc)^2` computed element-wise in the input precision (no matmul, so no
    TF32, and no cancellation), ties to the lower index. That equals the exact kNN whenever the TF32 score error is
    below the gap between the k-th and the (k + 2)-th nearest distance (with simulated TF32: no query wrong with
    k + 1 or k + 2 candidates, 1% with k; 8 x 196 points, C = 128, offsets 0-3). The choice is made when the graph
    is traced (TF32 enabled and a GPU visible: `_tf32_matmuls_possible`).

    With `chunk_size=None` the dense form is used when its blocks fit `DENSE_BUDGET_BYTES` (160 MiB) per clip, as
    at the CPNet sizes up to 8x28x28 points; above it the queries are chunked to stay under the budget.

    Args:
        points: float tensor `[batch, N, C]`, `N = num_frames * S` points ordered frame-major (t, then h,
            then w). No gradient flows through the indices.
        num_frames: `T >= 2`, the number of frames the points are split into.
        k: number of neighbours, `1 <= k <= N - S` (the number of points in other frames).
        chunk_size: queries per block (`>= N`: the dense frame-pair form), or None for the automatic choice.
        compiled: select the neighbours of the dense form with kerasvid's compiled CPU kernel
            (`kerasvid.ops.native`: the same indices, about 3x cheaper than the TF-ops selection) where it is
            available; the graph then needs that library to run, so `CPModule` asks for it when training only.

    Returns:
        int32 tensor `[batch, N, k]` of neighbour indices into the `N` points, nearest first.

    Example:
    >>> pts = tf.constant([[[0.], [5.], [1.], [4.]]])  # 2 frames of 2 points
    >>> cp_knn(pts, num_frames=2, k=1).numpy()[0, :, 0].tolist()
    [2, 3, 0, 1]
    """
    points = tf.convert_to_tensor(points)
    num_points, channels = _static_points_shape(points)
    _check_int(num_frames, "num_frames", 1)
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be >= 2 (correspondences need another frame), got num_frames={num_frames}")
    if num_points % num_frames:
        raise ValueError(f"num_points must be a multiple of `num_frames`, got num_points={num_points} and "
                         f"num_frames={num_frames}")
    _check_int(k, "k", 1)
    per_frame = num_points // num_frames
    candidates = num_points - per_frame
    if k > candidates:
        raise ValueError(f"`k` must be at most the number of points in other frames, got k={k} with "
                         f"{candidates} candidates ({num_frames} frames x {per_frame} points)")
    if chunk_size is not None:
        _check_int(chunk_size, "chunk_size", 1)

    if not points.dtype.is_floating:
        raise ValueError(f"`points` must be a float tensor, got dtype {points.dtype.name}")
    if points.dtype in (tf.float16, tf.bfloat16):
        points = tf.cast(points, tf.float32)  # rankings in half precision would tie far too often
    points = tf.stop_gradient(points)
    dtype = points.dtype

    if chunk_size is None:
        pair_bytes = num_frames * (num_frames - 1) * per_frame ** 2 * dtype.size
        chunk_size = num_points if pair_bytes <= DENSE_BUDGET_BYTES else default_chunk_size(
            num_points, bytes_per_score=dtype.size)
    if chunk_size >= num_points:
        return tf.cast(_frame_pair_knn(points, num_frames, k, compiled), tf.int32)
    return _query_chunk_knn(points, num_frames, k, chunk_size)


def _query_chunk_knn(points, num_frames, k, chunk_size):
    """`cp_knn` by blocks of `chunk_size` queries against all N points (a single block when `chunk_size >= N`)."""
    num_points = points.shape[1]
    per_frame = num_points // num_frames
    dtype = points.dtype
    batch = tf.shape(points)[0]
    rerank = _tf32_matmuls_possible()
    proposals = _num_candidates(k, num_points - per_frame, rerank)
    centred = _centred(points)
    frame_onehot = tf.one_hot(tf.repeat(tf.range(num_frames), per_frame), num_frames, dtype=dtype)  # [N, T]
    frame_onehot = tf.broadcast_to(frame_onehot, [batch, num_points, num_frames])
    sq_norm = tf.reduce_sum(tf.square(centred), axis=-1, keepdims=True)
    keys = tf.concat([centred, -sq_norm, frame_onehot], axis=-1)  # [B, N, C + 1 + T]
    queries = tf.concat([2.0 * centred, tf.ones_like(sq_norm), -_SAME_FRAME_PENALTY * frame_onehot], axis=-1)

    group = _group_size(num_points, proposals)

    def top_k_of(start, query_block):
        best = _top_k_indices(_score_matmul(query_block, keys), proposals, group)  # scores [B, chunk, N]
        return _exact_rerank(points[:, start:start + chunk_size], points, best, k) if rerank else best

    # Query blocks run one after another: each block's matmul waits for the previous block's indices, so at most
    # one [B, chunk, N] score block is alive (the memory guarantee). Unrolled rather than a while loop, so that the
    # graph (and a FLOP profiler) sees every block; there are few blocks at the automatic chunk size.
    blocks = []
    for start in range(0, num_points, chunk_size):
        query_block = queries[:, start:start + chunk_size]
        if blocks:
            with tf.control_dependencies([blocks[-1]]):
                query_block = tf.identity(query_block)
        blocks.append(top_k_of(start, query_block))
    return tf.cast(tf.concat(blocks, axis=1), tf.int32)
