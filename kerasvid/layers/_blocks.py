"""Building blocks shared by the video layers (CPModule, NonLocalBlock, ...): shape checks, built 1x1 convs and
BatchNormalizations that take their settings from an owner layer, and a fused BatchNormalization call."""
import keras
import tensorflow as tf

from kerasvid.layers.initializers import weight_initializer


def static_clip_shape(input_shape, layer_name):
    """Returns `(T, H, W, C)` of a rank-5 clip shape, or raises a ValueError naming the layer and the shape."""
    if len(input_shape) != 5:
        raise ValueError(f"{layer_name} expects a rank-5 input [batch, T, H, W, C], got shape {tuple(input_shape)}")
    if None in tuple(input_shape[1:]):
        raise ValueError(f"{layer_name} needs static T, H, W and C, got shape {tuple(input_shape)}")
    return tuple(int(v) for v in input_shape[1:])


def pointwise_conv(owner, units, in_channels, name):
    """A built 1x1(x1) convolution (a `Dense` on the channel axis) with the owner layer's initializer and dtype.

    Its kernel is its own draw: the owner's initializer with a seed derived from the owner's and `name`.
    """
    layer = keras.layers.Dense(units, kernel_initializer=weight_initializer(owner.kernel_initializer, name),
                               name=name, dtype=owner.dtype_policy)
    layer.build((None, in_channels))
    return layer


def batch_norm(owner, channels, rank, name, gamma_initializer="ones"):
    """A built BatchNormalization over the last axis for inputs of `rank` (which fixes the reduction axes)."""
    layer = keras.layers.BatchNormalization(epsilon=owner.epsilon, momentum=owner.momentum,
                                            gamma_initializer=gamma_initializer, name=name, dtype=owner.dtype_policy)
    layer.build((None,) * (rank - 1) + (channels,))
    return layer


def fused_batch_norm(bn, x, training, shift=None):
    """Applies the built `keras.layers.BatchNormalization` `bn` to `x` with TF's fused kernel, Keras semantics.

    The same numbers and moving-statistics update as `bn(x, training=training)` (batch statistics with the biased
    variance when `training` and `bn.trainable`, the moving ones otherwise; computed in float32, returned in the
    input dtype), but as one `FusedBatchNormV3` op and its fused gradient instead of the dozen element-wise ops of
    the composite (the CP module's MLP normalises `[B, N, k, U]` tensors; timings: `benchmarks/bench_cp_knn.py`).
    `x` is channels-last of any rank >= 2; float64 (no fused kernel) goes through `bn` itself.

    `shift`: optional per-channel vector (a convolution's bias); the result is that of `bn(x + shift)`. With batch
    statistics the shift cancels (`x + shift - mean(x + shift) = x - mean(x)`), so `x + shift` is never formed: the
    moving mean is updated with `mean(x) + shift` and the shift's gradient is exactly zero, its value in exact
    arithmetic (forming it costs a pass over `x` forward and a reduction backward, and yields rounding noise). With
    the moving statistics `x + shift` is normalised as written.
    """
    if shift is not None and not (training and bn.trainable and x.dtype != tf.float64):
        x = x + tf.cast(shift, x.dtype)
        shift = None
    if x.dtype == tf.float64:
        return bn(x, training=training)
    shape = tf.shape(x)
    channels = x.shape[-1]
    x4 = tf.reshape(tf.cast(x, tf.float32), [-1, 1, 1, channels]) if x.shape.rank != 4 else tf.cast(x, tf.float32)
    gamma, beta = tf.cast(bn.gamma, tf.float32), tf.cast(bn.beta, tf.float32)
    if training and bn.trainable:
        if shift is not None:
            shift = tf.cast(shift, tf.float32)
            beta = beta + 0.0 * shift  # the shift's exact (zero) gradient, not None: optimizers warn on None
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=bn.epsilon, is_training=True)
        if shift is not None:
            mean = mean + tf.stop_gradient(shift)
        count = tf.cast(tf.size(x4) // channels, tf.float32)
        update_moving_statistics(bn, mean, variance * tf.maximum(count - 1.0, 0.0) / count)  # op: unbiased
    else:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, mean=tf.cast(bn.moving_mean, tf.float32),
                                                   variance=tf.cast(bn.moving_variance, tf.float32),
                                                   epsilon=bn.epsilon, is_training=False)
    return tf.reshape(tf.cast(y, x.dtype), shape)


def update_moving_statistics(bn, mean, variance):
    """Moves the moving mean and variance of the BatchNormalization `bn` towards a batch's `mean` and biased
    `variance`, as Keras does (`moving = moving * momentum + batch * (1 - momentum)`)."""
    momentum = bn.momentum
    bn.moving_mean.assign(bn.moving_mean * momentum + mean * (1.0 - momentum))
    bn.moving_variance.assign(bn.moving_variance * momentum + variance * (1.0 - momentum))


def sublayer_list(owner, name, sublayers):
    """Returns `sublayers` as a list that both Keras and `tf.train.Checkpoint` see as `owner`'s dependencies.

    Keras 3 tracks a list attribute for `.keras` files and `model.weights`, but TensorFlow's checkpoints do not
    look inside it: a layer that keeps sublayers only in a list loses their weights in every `tf.train.Checkpoint`
    (the trainer's checkpoints, hence eval, export and resume). Each sublayer is therefore also a named TF
    dependency of `owner` (`<name>_<i>`). Assign the result to the attribute: `self.convs = sublayer_list(self,
    "convs", convs)`.
    """
    sublayers = list(sublayers)
    for i, layer in enumerate(sublayers):
        owner._track_trackable(layer, name=f"{name}_{i}", overwrite=True)
    return sublayers
