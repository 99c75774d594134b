"""The CP module's two-layer MLP and max over the k proposals, fused in kerasvid's compiled kernels (training, CPU).

With the neighbour rows `h[b, n, m] = P[b, idx[b, n, m]] + Q[b, n]` (the first 1x1 conv, evaluated per point and
gathered, its bias left out), `max_rows` computes

    x = relu(BN0(h)),  z = x W,  out[b, n] = relu(max_m BN1(z[b, n, m]))

with both BatchNorms on batch statistics (mean and biased variance over all `M = B N k` rows), as
`CPModule` does when training, without forming the `[B, N, k, U]` tensors `h`, `x`, `z` (the kernels of
`_native/cp_mlp.cc` compute each row from P, Q and W where it is needed). BN1 is the per-channel affine map
`a z + c` with `a = gamma / sqrt(var + eps)`: non-decreasing where `a >= 0` and non-increasing where `a < 0`, so
`max_m (a z_m + c)` is `a max_m z_m + c` or `a min_m z_m + c`, and the kernel keeps both extremes of z per query (in
floating point as well: rounding is monotone). The gradients are those of this formula; where a maximum is shared by
several rows, its gradient goes to the first of them (as TF's max-pool), and where `gamma` of the second norm is
exactly 0 its gradient is taken through the maximum (the TF ops take it through the first row, as all rows tie).

The results equal the composite of TF ops up to float32 rounding: the statistics are centred (per block of queries,
in float64) and the gradients written in centred terms, so their precision does not depend on how large a channel's
mean is against its spread (tests/test_native.py). A NaN or inf in the rows makes every output NaN (TF's max-pool
would skip it). N and k must be static. The function returns None where the kernels cannot run
(`kerasvid.ops.native`), and the caller uses TF ops.
"""
import tensorflow as tf

from kerasvid.ops import native

__all__ = ["max_rows"]


def _zeros_if_none(gradients, outputs):
    """Upstream gradients with zeros for outputs that reached no loss (None)."""
    return tuple(tf.zeros_like(o) if g is None else g for g, o in zip(gradients, outputs))


def _gather_moments(library, per_neighbour, per_query, indices):
    """(mean, variance) over all rows h of the first layer, differentiable in P and Q."""
    k = indices.shape[-1]

    @tf.custom_gradient
    def moments(p, q):
        mean, variance, p_mean, q_mean, gathered_centred = library.kerasvid_gather_moments(p, q, indices)

        def grad(d_mean, d_variance):
            d_mean, d_variance = _zeros_if_none((d_mean, d_variance), (mean, variance))
            # d mean / d h = 1 / M and d variance / d h = 2 (h - mean) / M for every row h = p[j] + q[n]; p[j] is in
            # count[j] rows, q[n] in k rows. With mean = p_mean + q_mean, each part is centred on its own mean (no
            # large terms cancel): sum over p[j]'s rows of (h - mean) = count[j] (p[j] - p_mean) + the sum of
            # (q[n] - q_mean) over those rows, and over q[n]'s rows k (q[n] - q_mean) + gathered_centred[n].
            rows = tf.cast(tf.reduce_prod(tf.shape(indices)), tf.float32)
            first, second = d_mean / rows, 2.0 * d_variance / rows
            count = library.kerasvid_scatter_add_rows(tf.ones_like(q[:, :, None, :1]), indices,
                                                      num_rows=p.shape[1])
            q_sum = library.kerasvid_scatter_add_rows((q - q_mean)[:, :, None, :], indices, num_rows=p.shape[1])
            d_p = count * (first + second * (p - p_mean)) + second * q_sum
            d_q = k * (first + second * (q - q_mean)) + second * gathered_centred
            return d_p, d_q

        return (mean, variance), grad

    return moments(per_neighbour, per_query)


def _extremes(library, per_neighbour, per_query, indices, scale0, center0, offset0, kernel):
    """(z_max, z_min, mean, variance) of the second layer's rows z (`KerasvidCpMlpForward`), differentiable."""
    @tf.custom_gradient
    def extremes(p, q, scale, center, offset, w):
        z_max, z_min, arg_max, arg_min, mean, variance, x_mean = library.kerasvid_cp_mlp_forward(
            p, q, indices, scale, center, offset, w)

        def grad(d_max, d_min, d_mean, d_variance):
            d_max, d_min, d_mean, d_variance = _zeros_if_none((d_max, d_min, d_mean, d_variance),
                                                              (z_max, z_min, mean, variance))
            d_rows, d_q, d_w, d_scale, d_offset = library.kerasvid_cp_mlp_backward(
                p, q, indices, scale, center, offset, w, arg_max, arg_min, d_max, d_min, d_mean, d_variance, x_mean)
            d_p = library.kerasvid_scatter_add_rows(d_rows, indices, num_rows=p.shape[1])
            return d_p, d_q, d_scale, -scale * d_offset, d_offset, d_w  # y = scale (h - center) + offset

        return (z_max, z_min, mean, variance), grad

    return extremes(per_neighbour, per_query, scale0, center0, offset0, kernel)


def max_rows(per_neighbour, per_query, indices, gamma0, beta0, epsilon0, kernel, gamma1, beta1, epsilon1):
    """`relu(max_m BN1(relu(BN0(P[idx] + Q)) W))` on batch statistics (see the module docstring).

    Args:
        per_neighbour, per_query: float32 `[B, N, U0]` (P and Q).
        indices: int32 `[B, N, k]`, the proposals (no gradient).
        gamma0, beta0, epsilon0: the first BatchNorm's scale, offset and epsilon (`[U0]`, `[U0]`, float).
        kernel: `[U0, U1]`, the second 1x1 conv (its bias is cancelled by the second norm's batch mean).
        gamma1, beta1, epsilon1: the second BatchNorm's.

    Returns:
        `(out [B, N, U1], (mean0, variance0), (mean1, variance1))`: the pooled output and each norm's batch
        statistics of its input without the conv biases (for the moving averages), or None where the kernels cannot
        run here or the inputs are not float32.
    """
    library = native.library()
    if library is None or per_neighbour.dtype != tf.float32 or per_query.dtype != tf.float32:
        return None
    mean0, variance0 = _gather_moments(library, per_neighbour, per_query, indices)
    scale0 = tf.cast(gamma0, tf.float32) * tf.math.rsqrt(variance0 + epsilon0)
    z_max, z_min, mean1, variance1 = _extremes(library, per_neighbour, per_query, indices, scale0, mean0,
                                               tf.cast(beta0, tf.float32), tf.cast(kernel, tf.float32))
    scale1 = tf.cast(gamma1, tf.float32) * tf.math.rsqrt(variance1 + epsilon1)
    offset1 = tf.cast(beta1, tf.float32) - scale1 * mean1
    out = tf.nn.relu(scale1 * tf.where(scale1 >= 0.0, z_max, z_min) + offset1)
    return out, (mean0, variance0), (mean1, variance1)
