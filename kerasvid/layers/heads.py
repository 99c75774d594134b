"""Small head layers of the zoo's models: the actor-observer distance and selector score (Sigurdsson et al., CVPR
2018). Registered as `kerasvid>PairwiseDistance` and `kerasvid>SelectorScale`, the names saved `.keras` files use."""
import math

import keras
import tensorflow as tf

__all__ = ["PairwiseDistance", "SelectorScale"]


@keras.saving.register_keras_serializable(package="kerasvid")
class PairwiseDistance(keras.layers.Layer):
    """Euclidean distance between two batches of vectors, `||a - b + epsilon||_2` (torch `pairwise_distance`).

    The `epsilon` inside the norm keeps the gradient finite when `a == b`.

    Args:
        epsilon: float >= 0 (1e-6).

    Call arguments:
        a: `[B, D]`.
        b: `[B, D]`.

    Returns:
        `[B]` distances.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(f"`epsilon` must be a non-negative float, got epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def call(self, a, b):
        return tf.sqrt(tf.reduce_sum(tf.square(a - b + self.epsilon), axis=-1))

    def compute_output_shape(self, a_shape, b_shape=None):
        return tuple(a_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="kerasvid")
class SelectorScale(keras.layers.Layer):
    """Bounded selector score `f = tanh(h) * exp(s)` with a learned scalar `s` (scale kept positive).

    Supp §2: a tanh bounds the VideoSoftmax input and its scale is learned and constrained to be positive; the
    authors' code parameterises the scale as `exp(s)` with `s` initialised to `ln 0.5`.

    Args:
        initial_scale: float > 0, `exp(s)` at initialisation (0.5).

    Call arguments:
        h: `[B, 1]` (or `[B]`), the output of the stream's `Dense(1)`.

    Returns:
        `[B]` selector scores in `(-exp(s), exp(s))`.
    """

    def __init__(self, initial_scale=0.5, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(initial_scale, (int, float)) or initial_scale <= 0:
            raise ValueError(f"`initial_scale` must be a positive float, got initial_scale={initial_scale!r}")
        self.initial_scale = float(initial_scale)

    def build(self, h_shape=None):
        self.log_scale = self.add_weight(name="log_scale", shape=(),
                                         initializer=keras.initializers.Constant(math.log(self.initial_scale)))

    def call(self, h):
        return tf.reshape(tf.tanh(h), [-1]) * tf.exp(self.log_scale)

    def compute_output_shape(self, h_shape):
        return (h_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update({"initial_scale": self.initial_scale})
        return config
