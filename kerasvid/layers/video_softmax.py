"""VideoSoftmax: a softmax over all frames of a video, computed online (Actor and Observer, CVPR 2018).

The decayed running sums and the distributed rule it shares with the actor-observer loss live in
`kerasvid.ops.distribute`.
"""
import keras
import tensorflow as tf

from kerasvid.ops.distribute import decayed_sum_coefficients, gather_across_replicas

__all__ = ["VideoSoftmax"]

_READ_MODES = ("per_sample", "after_batch")


def _last_in_segment(segment_ids):
    """Index of the last batch sample of each sample's segment, `[B]` int32 (used to read/write the final state)."""
    segment_ids = tf.reshape(segment_ids, [-1])
    positions = tf.range(tf.shape(segment_ids)[0])
    same = tf.equal(segment_ids[:, None], segment_ids[None, :])
    return tf.reduce_max(tf.where(same, positions[None, :], -1), axis=1)


def _check_index_range(index, size, what):
    """Returns `index` (int32) after asserting `0 <= index < size`; the error names `what` and the bad values."""
    index = tf.cast(index, tf.int32)
    if tf.executing_eagerly():
        bad = tf.boolean_mask(index, (index < 0) | (index >= size))
        if tf.size(bad) > 0:
            raise ValueError(f"`{what}` must be in [0, {size}), got out-of-range values {bad.numpy().tolist()}.")
        return index
    checks = [
        tf.debugging.assert_non_negative(index, message=f"`{what}` must be in [0, {size}), got a negative value"),
        tf.debugging.assert_less(index, size, message=f"`{what}` must be in [0, {size}), got a value >= {size}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(index)


def _scatter_last(state, segment_ids, values):
    """Writes `values[i]` into `state[segment_ids[i]]` for the last sample `i` of each segment (others ignored)."""
    num = tf.shape(state)[0]
    positions = tf.range(tf.shape(segment_ids)[0])
    is_last = tf.equal(_last_in_segment(segment_ids), positions)
    # Non-last samples write into a padding slot, so no index is written twice with different values.
    target = tf.where(is_last, segment_ids, num)
    padded = tf.concat([state, tf.zeros([1], state.dtype)], axis=0)
    return tf.tensor_scatter_nd_update(padded, target[:, None], tf.cast(values, state.dtype))[:num]


@keras.saving.register_keras_serializable(package="kerasvid")
class VideoSoftmax(keras.layers.Layer):
    """Softmax over the frames of a video, normalised online with a decayed running sum.

    From "Actor and Observer: Joint Modeling of First and Third-Person Videos" (Sigurdsson et al., CVPR 2018),
    supplement Eq. 1-6. The selector score `f(x)` of a frame should be normalised over all frames of its video `V`,
    `p(x) = exp(f(x)) / sum_{x' in V} exp(f(x'))` (Eq. 1), but the frames of a video arrive across many batches.
    The layer keeps one running normaliser per video, in log space, with `k = 1 - decay`:

        Sigma_N = k * exp(f(x)) + (1 - k) * Sigma_{N-1}          (Eq. 5; the first frame sets Sigma = exp(f))
        p(x) / k = exp(f(x)) / Sigma_N                            (Eq. 6)

    Samples are folded in batch order and the update comes before the read, so a sample is inside its own
    normaliser (`read="per_sample"`, the default). `read="after_batch"` instead reads every sample after the whole
    batch is folded in (what the authors' code does). `Sigma` is a constant for the gradient: `d(p/k)/df = p/k`.
    The state changes only when `training` is true; in inference the same values are returned, computed from the
    stored state and the batch, without writing. It is a layer weight, so it is saved in `.keras` files and in
    `tf.train.Checkpoint`s of the layer or its model.

    Under `tf.distribute` every replica gathers `(f, video_index)` of the global batch and runs the same update, so
    the state after a step equals single-device training on the same global batch.

    Args:
        num_videos: int, number of videos (size of the state).
        decay: float in (0, 1), `1 - k` of Eq. 5 (0.9 in the supplement; the third-to-first-person experiment of
            the reference code uses 0.95).
        read: `"per_sample"` (default) or `"after_batch"`, see above.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        f: float tensor `[B]` or `[B, 1]`, the selector scores.
        video_index: int tensor `[B]` (or `[B, 1]`) in `[0, num_videos)`; out-of-range values are an error.
        training: bool, whether to update the state.

    Returns:
        float32 tensor `[B]`, `p/k = exp(f - log Sigma[video])` (expected value 1).

    Example:

    >>> layer = kerasvid.layers.VideoSoftmax(num_videos=3)
    >>> layer(np.array([0.0, 1.0, 2.0], "float32"), np.array([0, 0, 1]), training=True).numpy().round(3)
    array([1.  , 2.32, 1.  ], dtype=float32)
    """

    def __init__(self, num_videos, decay=0.9, read="per_sample", **kwargs):
        super().__init__(**kwargs)
        # Argument checks of the layers' one kind (TVNet's too): each names its argument and the value.
        if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
            raise ValueError(f"`num_videos` must be a positive int, got num_videos={num_videos!r}")
        if not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"`decay` must be a float in (0, 1), got decay={decay!r}")
        if read not in _READ_MODES:
            raise ValueError(f"`read` must be one of {_READ_MODES}, got read={read!r}")
        self.num_videos = num_videos
        self.decay = float(decay)
        self.read = read

    def build(self, f_shape=None, video_index_shape=None):
        # `only_first_replica`: every replica computes the identical new state from the gathered global batch.
        # `autocast=False`: the state is read in float32 under a mixed dtype policy too (the layer computes in it).
        self.log_sigma = self.add_weight(name="log_sigma", shape=(self.num_videos,), initializer="zeros",
                                         trainable=False, dtype="float32", aggregation="only_first_replica",
                                         autocast=False)
        self.count = self.add_weight(name="count", shape=(self.num_videos,), initializer="zeros",
                                     trainable=False, dtype="int32", aggregation="only_first_replica")

    def call(self, f, video_index, training=None):
        f = tf.cast(f, tf.float32)
        if f.shape.rank == 2:
            f = tf.squeeze(f, axis=-1)
        video_index = _check_index_range(tf.reshape(video_index, [-1]), self.num_videos, "video_index")
        (f_all, index_all), offset, size = gather_across_replicas(tf.stop_gradient(f), video_index)
        log_ratio, new_log_sigma, new_count = self._fold(f_all, index_all)
        if training:
            self.log_sigma.assign(new_log_sigma)
            self.count.assign(new_count)
        log_ratio = log_ratio[offset:offset + size]
        # Value exp(-log_ratio) = exp(f - log Sigma), computed from differences for |f| up to 1e4 and beyond;
        # (f - stop_gradient(f)) is zero but carries d/df = 1, Sigma is a constant.
        return tf.exp((f - tf.stop_gradient(f)) - log_ratio)

    def _fold(self, f, index):
        """Folds the batch into the state; returns `log Sigma_i - f_i` per sample and the new state."""
        prior_log_sigma = tf.gather(self.log_sigma, index)
        prior_seen = tf.gather(self.count, index) > 0
        log_c, log_p = decayed_sum_coefficients(index, prior_seen, self.decay)
        # log Sigma_i - f_i = logsumexp_j(log C_ij + f_j - f_i, log P_i + log Sigma_0 - f_i)
        terms = tf.concat([log_c + (f[None, :] - f[:, None]), (log_p + prior_log_sigma - f)[:, None]], axis=1)
        log_ratio = tf.reduce_logsumexp(terms, axis=1)
        new_log_sigma = _scatter_last(self.log_sigma, index, f + log_ratio)
        new_count = self.count + tf.math.unsorted_segment_sum(tf.ones_like(index), index, self.num_videos)
        if self.read == "after_batch":
            last = _last_in_segment(index)
            log_ratio = tf.gather(log_ratio + f, last) - f
        return log_ratio, new_log_sigma, new_count

    def reset_state(self):
        """Forgets every video's normaliser (e.g. at the start of an epoch or before evaluation)."""
        self.log_sigma.assign(tf.zeros_like(self.log_sigma))
        self.count.assign(tf.zeros_like(self.count))

    def compute_output_shape(self, f_shape, video_index_shape=None):
        return (f_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update({"num_videos": self.num_videos, "decay": self.decay, "read": self.read})
        return config
