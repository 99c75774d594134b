"""NonLocalBlock: the embedded-Gaussian non-local block (Wang, Girshick, Gupta, He, CVPR 2018)."""
import keras
import tensorflow as tf

from kerasvid.layers._blocks import batch_norm, pointwise_conv, static_clip_shape

__all__ = ["NonLocalBlock"]


@keras.saving.register_keras_serializable(package="kerasvid")
class NonLocalBlock(keras.layers.Layer):
    """Embedded-Gaussian non-local block over all `T x H x W` positions of a clip, with a residual connection.

    From "Non-local Neural Networks" (Wang, Girshick, Gupta, He, CVPR 2018), Eq. (1), (3) and (6); the baseline
    "NL C2D Net, 6 NL blocks" of the CPNet supplement (Liu et al., CVPR 2019, supp. §C, Table 1):

        y_i = sum_j softmax_j(theta(x_i)^T phi(x_j)) g(x_j)
        z_i = BN(W_z y_i) + x_i

    theta, phi, g and W_z are 1x1x1 convolutions (with bias), the inner width defaults to C/2, and the BN after
    W_z has gamma initialised to 0, so a fresh block is the identity (Wang et al. §4.1). With `subsample=True`,
    phi and g are max-pooled 2x2 in space first (Wang et al. §3.3 "subsampling"), which divides the number of keys
    by 4. Unlike `CPModule`, the `[N, N]` attention matrix is differentiable and is kept for the backward pass.

    Args:
        inner_channels: width of theta, phi and g; None means `C // 2`.
        subsample: whether to max-pool phi and g by 2x2 in space.
        epsilon: BatchNormalization epsilon.
        momentum: BatchNormalization momentum.
        kernel_initializer: initializer of the 1x1 convs; theta, phi, g and W_z each get their own draw, seeded from
            this initializer's seed and the conv's name.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[batch, T, H, W, C]` with static `T`, `H`, `W`, `C` (H, W even when `subsample=True`).
        training: BatchNormalization mode.

    Returns:
        `[batch, T, H, W, C]`: `inputs + BN(W_z y)`.

    Example:
    >>> block = kerasvid.layers.NonLocalBlock()
    >>> x = np.random.rand(2, 4, 7, 7, 32).astype("float32")
    >>> bool(np.all(block(x).numpy() == x))  # identity at initialisation
    True
    """

    def __init__(self, inner_channels=None, subsample=False, epsilon=1e-3, momentum=0.99,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        if inner_channels is not None and (isinstance(inner_channels, bool) or not isinstance(inner_channels, int)
                                           or inner_channels < 1):
            raise ValueError(f"`inner_channels` must be a positive integer or None, got "
                             f"inner_channels={inner_channels!r}")
        if not isinstance(subsample, bool):
            raise ValueError(f"`subsample` must be True or False, got subsample={subsample!r}")
        self.inner_channels = inner_channels
        self.subsample = subsample
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        frames, height, width, channels = static_clip_shape(input_shape, "NonLocalBlock")
        if self.subsample and (height % 2 or width % 2):
            raise ValueError(f"subsample=True needs even H and W, got shape {tuple(input_shape)}")
        inner = self.inner_channels or max(1, channels // 2)
        self._dims = (frames, height, width, channels, inner)
        self.theta = pointwise_conv(self, inner, channels, "theta")
        self.phi = pointwise_conv(self, inner, channels, "phi")
        self.g = pointwise_conv(self, inner, channels, "g")
        self.out_conv = pointwise_conv(self, channels, inner, "out_conv")
        self.out_bn = batch_norm(self, channels, 3, "out_bn", gamma_initializer="zeros")

    def call(self, inputs, training=None):
        frames, height, width, channels, inner = self._dims
        batch = tf.shape(inputs)[0]
        n = frames * height * width
        theta = tf.reshape(self.theta(inputs), [batch, n, inner])
        phi, g = self.phi(inputs), self.g(inputs)
        m = n
        if self.subsample:
            pool = [1, 1, 2, 2, 1]
            phi = tf.nn.max_pool3d(phi, pool, pool, "VALID")
            g = tf.nn.max_pool3d(g, pool, pool, "VALID")
            m = n // 4
        phi = tf.reshape(phi, [batch, m, inner])
        g = tf.reshape(g, [batch, m, inner])
        attention = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True), axis=-1)  # [B, N, M]
        y = tf.matmul(attention, g)
        z = self.out_bn(self.out_conv(y), training=training)
        return inputs + tf.reshape(z, tf.shape(inputs))

    def compute_output_shape(self, input_shape):  # a residual block: CPModule's is the same
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "inner_channels": self.inner_channels,
            "subsample": self.subsample,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
