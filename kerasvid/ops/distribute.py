"""Online state shared by VideoSoftmax and the actor-observer loss (Sigurdsson et al., CVPR 2018).

`decayed_sum_coefficients` is the closed form of the per-sample decayed running sums of supp Eq. 5 and Eq. 15;
`gather_across_replicas` / `replica_sum` are the distributed rule: every replica folds in the whole global batch, in
global batch order, so the state after a step equals single-device training on the same global batch.
"""
import math

import tensorflow as tf

__all__ = ["decayed_sum_coefficients", "gather_across_replicas", "replica_sum"]


def decayed_sum_coefficients(segment_ids, prior_seen, decay):
    """Coefficients of the per-sample decayed running sums of supp Eq. 5 / Eq. 15, in closed form.

    For one segment (a video, or the single global segment of the loss), samples processed in batch order update a
    running sum `S` as: the first sample ever seen sets `S = v`; every later sample sets `S = d * S + (1 - d) * v`.
    Unrolled, the sum right after sample `i` (its own update included) is

        S_i = P_i * S_0 + sum_j C_ij * v_j,

    with `r_i` the 1-based rank of `i` among the batch samples of its segment, `C_ij = d^(r_i - r_j) * c_j` for
    `j <= i` in the same segment (0 otherwise), `c_j = 1` for the first sample of a segment never seen before and
    `1 - d` otherwise, and `P_i = d^r_i` if the segment was seen before (0 otherwise). Evaluating this as a `[B, B]`
    matrix instead of a sequential loop keeps the computation parallel and XLA-friendly.

    Args:
        segment_ids: int tensor `[B]`, the segment (video) of each sample, in processing order.
        prior_seen: bool tensor `[B]`, whether the segment of each sample already has a state.
        decay: python float `d` in (0, 1).

    Returns:
        `(log_c, log_p)`: float32 `[B, B]` and `[B]`, the logarithms of `C` and `P` (`-inf` where zero).
    """
    segment_ids = tf.reshape(segment_ids, [-1])
    batch = tf.shape(segment_ids)[0]
    positions = tf.range(batch)
    same = tf.equal(segment_ids[:, None], segment_ids[None, :])
    causal = same & (positions[None, :] <= positions[:, None])
    rank = tf.reduce_sum(tf.cast(causal, tf.float32), axis=1)  # r_i, 1-based
    log_d = math.log(decay)
    first_new = tf.equal(rank, 1.0) & tf.logical_not(prior_seen)
    log_c_j = tf.where(first_new, 0.0, math.log1p(-decay))
    neg_inf = tf.constant(-math.inf, tf.float32)
    log_c = tf.where(causal, (rank[:, None] - rank[None, :]) * log_d + log_c_j[None, :], neg_inf)
    log_p = tf.where(prior_seen, rank * log_d, neg_inf)
    return log_c, log_p


def _replica_context():
    """The replica context when running under a strategy with more than one replica, else None."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def gather_across_replicas(*tensors):
    """All-gathers per-replica batches into the global batch (replica order = global batch order).

    Under `tf.distribute` with several replicas, `experimental_distribute_dataset` hands replica `r` the `r`-th
    consecutive slice of the global batch, so concatenating the replicas' batches in replica order restores it.
    Outside a multi-replica context the tensors are returned unchanged.

    Args:
        *tensors: tensors with the same leading (batch) dimension.

    Returns:
        `(gathered, offset, size)`: the list of gathered tensors, and the slice `[offset, offset + size)` of the
        global batch that belongs to this replica.
    """
    size = tf.shape(tensors[0])[0]
    ctx = _replica_context()
    if ctx is None:
        return list(tensors), 0, size
    sizes = ctx.all_gather(tf.reshape(size, [1]), axis=0)
    replica = ctx.replica_id_in_sync_group
    offset = tf.reduce_sum(sizes[:replica])
    return [ctx.all_gather(t, axis=0) for t in tensors], offset, size


def replica_sum(x):
    """Sum of `x` over replicas (differentiable); `x` itself outside a multi-replica context."""
    ctx = _replica_context()
    if ctx is None:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)
