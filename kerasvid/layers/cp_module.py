"""CPModule: the correspondence-proposal module of CPNet (Liu, Lee, Jin, CVPR 2019)."""
import keras
import numpy as np
import tensorflow as tf

from kerasvid.layers._blocks import (batch_norm, fused_batch_norm, pointwise_conv, static_clip_shape, sublayer_list,
                                     update_moving_statistics)
from kerasvid.ops import cp_mlp, native
from kerasvid.ops.knn import cp_knn

__all__ = ["CPModule"]


def point_coordinates(num_frames, height, width):
    """Normalised coordinates `(t/T, h/H, w/W)` of a `T x H x W` grid flattened frame-major, float32 `[N, 3]`.

    Divided by the size, not by size - 1, as in the CPNet released code (Liu et al., CVPR 2019).
    """
    grid = np.meshgrid(np.arange(num_frames) / num_frames, np.arange(height) / height, np.arange(width) / width,
                       indexing="ij")
    return np.stack(grid, axis=-1).reshape(-1, 3).astype(np.float32)


def tf1_resize_bilinear(images, size):
    """Bilinear resize of `[batch, H, W, C]` to `size` with TF1's `resize_images` convention, as the CPNet reference.

    `align_corners=False` without half-pixel centres: output pixel `i` samples input position `i * H_in / H_out`
    (edge-clamped). So a 2x shrink of an even size is the subsampling `images[:, ::2, ::2]`, and a 2x expansion
    puts `x[i]` at `2i` and `(x[i] + x[i + 1]) / 2` at `2i + 1`, the last row and column repeating `x[-1]`.
    Returns float32 (as `tf.image.resize`).
    """
    return tf.compat.v1.image.resize_bilinear(images, size, align_corners=False, half_pixel_centers=False)


def _gather_neighbours(values, proposals, compiled=False):
    """`tf.gather(values, proposals, batch_dims=1)`: `[B, N, U]` rows by `[B, N, k]` indices -> `[B, N, k, U]`.

    The gradient sums each neighbour's `k`-fold uses back with one `ScatterNd` on the flattened rows instead of the
    `UnsortedSegmentSum` that `tf.gather`'s own gradient runs (the same sum, about 3x cheaper on CPU;
    `benchmarks/cp_module.py`), or with kerasvid's compiled kernel when `compiled` (`kerasvid.ops.native`; the
    graph then needs that library, as `cp_knn(compiled=True)`). `proposals` gets no gradient.
    """
    @tf.custom_gradient
    def gather(values):
        def grad(upstream):
            if compiled and upstream.dtype == tf.float32:
                summed = native.scatter_add_rows(upstream, proposals, values.shape[1])
                if summed is not None:
                    return summed
            batch, num_points, units = tf.shape(values)[0], tf.shape(values)[1], tf.shape(values)[2]
            rows = proposals + tf.reshape(tf.range(batch) * num_points, [-1, 1, 1])  # row in the flattened batch
            summed = tf.scatter_nd(tf.reshape(rows, [-1, 1]), tf.reshape(upstream, [-1, units]),
                                   tf.stack([batch * num_points, units]))
            return tf.reshape(summed, tf.shape(values))

        return tf.gather(values, proposals, batch_dims=1), grad

    return gather(values)


def _normalised_projection(dense, bn, x, training):
    """`bn(dense(x))` for a 1x1 conv (`Dense`) followed by BatchNormalization, the conv's bias folded into the norm.

    The bias is a per-channel shift that a norm with batch statistics removes again (`fused_batch_norm`'s `shift`),
    so the `[B, N, k, U]` bias addition and its gradient reduction are not run when training.
    """
    return fused_batch_norm(bn, tf.tensordot(x, tf.cast(dense.kernel, x.dtype), 1), training, shift=dense.bias)


def _positive_int(value, name, allow_none=False):
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {name}={value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="kerasvid")
class CPModule(keras.layers.Layer):
    """Correspondence-proposal (CP) module: learns from the k most similar points of the other frames.

    From "Learning Video Representations from Correspondence Proposals" (Liu, Lee, Jin, CVPR 2019; supp. §B
    Figure 1, §D Figure 2, §G), following the computation of the authors' released code. The input is a residual
    block's output after the residual addition and before its ReLU; the module returns `x + g(x)`:

        f = shrink(bn0(conv0(x)))                        optional bottleneck (no activation), optional 2x shrink
        N(i) = k nearest points of f_i, by ||f_i - f_j||^2, among the points of the other frames (`cp_knn`)
        h_i = max_{j in N(i)} MLP([c_j - c_i, f_i, f_j])   c = (t/T, h/H', w/W'); MLP layers = 1x1 conv + BN + ReLU
        g(x) = upsample(BN_gamma0(conv_final(h)))         back to C channels; BN gamma starts at 0

    so a fresh module is exactly the identity and a CPNet at initialisation computes its C2D backbone's output.
    The neighbour indices carry no gradient; gradients reach `x` through the gathered features only, and no
    `[N, N]` tensor is kept for the backward pass (`N = T H' W'`).

    The first MLP layer acts on the concatenation `[c_j - c_i, f_i, f_j]` (its kernel keeps that layout), but is
    evaluated as `W_j f_j + W_c c_j` per point, gathered, plus `W_i f_i - W_c c_i + b` per query: the same numbers
    as the concatenation at 1/k of the cost, and the `[B, N, k, 2C' + 3]` tensor is never formed.

    Args:
        k: number of correspondence proposals per point (8 for Kinetics ResNet-18, 12 for Jester/SSv2 ResNet-34).
        mlp_units: widths of the MLP's hidden layers; None means `(C // 4, C // 2)` of the input channels `C`.
        spatial_shrink: 1, or 2 to propose correspondences on a half-sized map (the released code's res3
            modules). Both resizes follow the reference's TF1 `resize_images` (bilinear, no half-pixel centres,
            `tf1_resize_bilinear`): the shrink subsamples (`x[:, ::2, ::2]` per frame for even H, W) and `g` is
            expanded back by the same rule (even pixels copied, odd ones the mean of their two neighbours).
        bottleneck: None, or the width of a 1x1 conv + BN (no activation) applied before everything else
            (the released code's ResNet-101 modules use C // 8).
        chunk_size: query chunk size of `cp_knn` (None: automatic; the dense frame-pair form below 160 MiB per clip).
        epsilon: BatchNormalization epsilon (1e-3, the reference's `tf.contrib.layers.batch_norm` default).
        momentum: BatchNormalization momentum of the moving statistics.
        coordinate_scale: factor of the coordinates `c` in the MLP input (1: the paper's `(t/T, h/H', w/W')`). At
            initialisation the 3 coordinates are a small part of the `2C + 3` inputs of the first MLP layer; a
            larger scale lets a CPNet trained from scratch use the displacements sooner (the quickstart uses 10).
        kernel_initializer: initializer of the 1x1 convs ("he_normal": the reference's variance scaling); each conv
            gets its own draw, seeded from this initializer's seed and the conv's name.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[batch, T, H, W, C]` with static `T >= 2`, `H`, `W`, `C`.
        training: BatchNormalization mode.

    Returns:
        `[batch, T, H, W, C]`: `inputs + g(inputs)`.

    Example:
    >>> layer = kerasvid.layers.CPModule(k=4)
    >>> x = np.random.rand(2, 4, 7, 7, 32).astype("float32")
    >>> bool(np.all(layer(x).numpy() == x))  # identity at initialisation
    True
    """

    def __init__(self, k=8, mlp_units=None, spatial_shrink=1, bottleneck=None, chunk_size=None, epsilon=1e-3,
                 momentum=0.99, kernel_initializer="he_normal", coordinate_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.k = _positive_int(k, "k")
        if mlp_units is not None:
            if isinstance(mlp_units, (int, np.integer)) or not len(mlp_units):
                raise ValueError(f"`mlp_units` must be None or a non-empty list of positive integers, "
                                 f"got mlp_units={mlp_units!r}")
            mlp_units = tuple(_positive_int(u, "mlp_units entry") for u in mlp_units)
        self.mlp_units = mlp_units
        if spatial_shrink not in (1, 2) or isinstance(spatial_shrink, bool):
            raise ValueError(f"`spatial_shrink` must be 1 or 2, got spatial_shrink={spatial_shrink!r}")
        self.spatial_shrink = int(spatial_shrink)
        self.bottleneck = _positive_int(bottleneck, "bottleneck", allow_none=True)
        self.chunk_size = _positive_int(chunk_size, "chunk_size", allow_none=True)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if isinstance(coordinate_scale, bool) or not isinstance(coordinate_scale, (int, float)) \
                or not 0 < coordinate_scale < float("inf"):
            raise ValueError(f"`coordinate_scale` must be a positive number, "
                             f"got coordinate_scale={coordinate_scale!r}")
        self.coordinate_scale = float(coordinate_scale)

    def build(self, input_shape):
        frames, height, width, channels = static_clip_shape(input_shape, "CPModule")
        if frames < 2:
            raise ValueError(f"CPModule needs at least 2 frames (correspondences come from other frames), "
                             f"got T={frames} in shape {tuple(input_shape)}")
        s = self.spatial_shrink
        if height < s or width < s:
            raise ValueError(f"spatial_shrink={s} needs H and W >= {s}, got shape {tuple(input_shape)}")
        small_h, small_w = height // s, width // s
        candidates = (frames - 1) * small_h * small_w
        if self.k > candidates:
            raise ValueError(f"`k` must be at most the number of points in other frames, got k={self.k} with "
                             f"{candidates} candidates ({frames - 1} other frames x {small_h}x{small_w})")
        feat = self.bottleneck or channels
        units = self.mlp_units or (max(1, channels // 4), max(1, channels // 2))
        self._dims = (frames, height, width, channels, small_h, small_w, feat)
        if self.bottleneck:
            self.bottleneck_conv = pointwise_conv(self, feat, channels, "bottleneck_conv")
            self.bottleneck_bn = batch_norm(self, feat, 5, "bottleneck_bn")
        convs, bns = [], []
        in_channels = 2 * feat + 3
        for i, u in enumerate(units):
            convs.append(pointwise_conv(self, u, in_channels, f"mlp{i}_conv"))
            bns.append(batch_norm(self, u, 4, f"mlp{i}_bn"))
            in_channels = u
        self.mlp_convs = sublayer_list(self, "mlp_convs", convs)
        self.mlp_bns = sublayer_list(self, "mlp_bns", bns)
        self.final_conv = pointwise_conv(self, channels, in_channels, "final_conv")
        self.final_bn = batch_norm(self, channels, 3, "final_bn", gamma_initializer="zeros")
        self._coords = point_coordinates(frames, small_h, small_w) * np.float32(self.coordinate_scale)

    def _resize(self, x, size, batch):
        frames = self._dims[0]
        flat = tf.reshape(x, tf.concat([[batch * frames], tf.shape(x)[2:]], axis=0))
        out = tf1_resize_bilinear(flat, size)
        return tf.reshape(tf.cast(out, x.dtype), tf.concat([[batch, frames], tf.shape(out)[1:]], axis=0))

    def _points(self, inputs, training):
        """The points `f` the correspondences are proposed on (bottleneck, shrink): `[B, N, C']`, N = T H' W'."""
        frames, _, _, _, small_h, small_w, feat = self._dims
        batch = tf.shape(inputs)[0]
        f = inputs
        if self.bottleneck:
            f = _normalised_projection(self.bottleneck_conv, self.bottleneck_bn, f, training)
        if self.spatial_shrink > 1:
            f = self._resize(f, (small_h, small_w), batch)
        return tf.reshape(f, [batch, frames * small_h * small_w, feat])

    def call(self, inputs, training=None):
        frames, height, width, channels, small_h, small_w, feat = self._dims
        for dense in [*self.mlp_convs, self.final_conv] + ([self.bottleneck_conv] if self.bottleneck else []):
            if getattr(dense, "quantization_mode", None):  # its float kernel is read directly below
                raise ValueError(f"CPModule {self.name!r} does not support Keras quantization: its 1x1 conv "
                                 f"{dense.name!r} is in {dense.quantization_mode!r} mode (quantize the other layers "
                                 f"only, e.g. with `Model.quantize(mode, filters=...)`)")
        dtype = inputs.dtype
        batch = tf.shape(inputs)[0]
        points = self._points(inputs, training)
        proposals = cp_knn(points, frames, self.k, chunk_size=self.chunk_size,
                           compiled=bool(training))  # [B, N, k], no gradient; compiled: see cp_knn

        first = self.mlp_convs[0]
        kernel = tf.cast(first.kernel, dtype)
        w_coord, w_query, w_neighbour = kernel[:3], kernel[3:3 + feat], kernel[3 + feat:]
        coord_term = tf.matmul(tf.constant(self._coords, dtype), w_coord)  # [N, U]
        per_neighbour, per_query = tf.split(tf.matmul(points, tf.concat([w_neighbour, w_query], axis=1)), 2, axis=-1)
        per_neighbour = per_neighbour + coord_term
        per_query = per_query - coord_term
        h = self._compiled_mlp(per_neighbour, per_query, proposals) if training else None
        if h is None:
            h = _gather_neighbours(per_neighbour, proposals, bool(training)) + tf.expand_dims(per_query, 2)
            h = fused_batch_norm(self.mlp_bns[0], h, training, shift=first.bias)  # [B, N, k, U]; bias folded
            for conv, bn in zip(self.mlp_convs[1:], self.mlp_bns[1:]):
                h = _normalised_projection(conv, bn, tf.nn.relu(h), training)
            # Max over the k proposals as a [1, k] max-pool (one fused gradient op that routes each channel's
            # gradient to its maximum; reduce_max's gradient takes five passes over [B, N, k, U]), then the last
            # ReLU, on the pooled tensor: max_k relu(h_k) = relu(max_k h_k), since the ReLU is non-decreasing.
            h = tf.nn.relu(tf.squeeze(tf.nn.max_pool2d(h, [1, self.k], [1, self.k], "VALID"), axis=2))
        g = _normalised_projection(self.final_conv, self.final_bn, h, training)
        g = tf.reshape(g, [batch, frames, small_h, small_w, channels])
        if self.spatial_shrink > 1:
            g = self._resize(g, (height, width), batch)
        return inputs + g

    def _compiled_mlp(self, per_neighbour, per_query, proposals):
        """The pooled MLP output `[B, N, U]` of a training step from kerasvid's compiled kernels (`cp_mlp.max_rows`:
        the `[B, N, k, U]` rows are never formed), with the norms' moving statistics updated; None where they do
        not apply (not two MLP layers, a frozen norm, not float32, no kernels here), and the caller uses TF ops."""
        if len(self.mlp_convs) != 2 or not all(bn.trainable for bn in self.mlp_bns):
            return None
        (first, second), (bn0, bn1) = self.mlp_convs, self.mlp_bns
        # The convs' biases cancel in the norms (their gradient is exactly zero, given as such: optimizers warn on
        # None) and move the moving means, as in `fused_batch_norm(shift=...)`.
        fused = cp_mlp.max_rows(per_neighbour, per_query, proposals, bn0.gamma, bn0.beta + 0.0 * first.bias,
                                bn0.epsilon, second.kernel, bn1.gamma, bn1.beta + 0.0 * second.bias, bn1.epsilon)
        if fused is None:
            return None
        h, (mean0, variance0), (mean1, variance1) = fused
        update_moving_statistics(bn0, mean0 + tf.stop_gradient(first.bias), variance0)
        update_moving_statistics(bn1, mean1 + tf.stop_gradient(second.bias), variance1)
        return tf.cast(h, per_neighbour.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "k": self.k,
            "mlp_units": list(self.mlp_units) if self.mlp_units is not None else None,
            "spatial_shrink": self.spatial_shrink,
            "bottleneck": self.bottleneck,
            "chunk_size": self.chunk_size,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "coordinate_scale": self.coordinate_scale,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
