"""Frame-wise 2D layers: a 2D convolution or pooling applied to every frame of a clip `[batch, T, H, W, C]`.

A Conv3D with kernel `(1, k, k)` and temporal stride 1 (the C2D ResNets, CPNet, NL-Net, the Actor-Observer trunk,
BN-Inception over TSN segments, I3D's 1x1x1 units) computes a 2D convolution of each frame. These layers compute it
as one: the frames are folded into the batch (`[B, T, H, W, C] -> [B*T, H, W, C]`, a free reshape), the 2D op runs
(conv2d / max_pool2d / avg_pool2d: the better-optimised kernels on CPUs and GPUs, and TFLite's builtins) and the
frames are unfolded again. The numbers are those of the Conv3D / Pooling3D form with the kernel `(1, k, k, ...)`:
TF's "same" padding has nothing to pad along a temporal extent of 1, so the spatial padding is the same
(`to_3d()` gives that equivalent 3D layer; the tests compare both, outputs and gradients).

Each layer is the Keras 2D layer (same constructor arguments, `get_config`, weights: a `(k, k, C_in, C_out)`
kernel) that takes and returns clips, so it keeps its name and its 2D weight layout (`keras.applications` kernels
copy as they are).
"""
import keras
import numpy as np
import tensorflow as tf

from kerasvid.layers.batch_norm import FusedBatchNormalization

__all__ = ["FrameConv2D", "FrameMaxPooling2D", "FrameAveragePooling2D", "clip_conv", "clip_pooling", "conv3d_form"]


class _FrameWise:
    """Mixin over a Keras 2D layer: calls it on the frames of `[B, T, H, W, C]` folded into the batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(f"{type(self).__name__} takes channels-last clips [batch, T, H, W, C], got "
                             f"data_format={self.data_format!r}")
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _frame_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 5:
            raise ValueError(f"{type(self).__name__} {self.name!r} expects clips [batch, T, H, W, C], got an input "
                             f"of shape {input_shape}")
        return (None,) + input_shape[2:]

    def build(self, input_shape):
        super().build(self._frame_shape(input_shape))
        self.input_spec = keras.layers.InputSpec(ndim=5, axes={-1: input_shape[-1]})

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 4:  # Conv.build checks the frame shape it is given through this method
            return super().compute_output_shape(input_shape)
        frame = super().compute_output_shape(self._frame_shape(input_shape))
        return tuple(input_shape[:2]) + tuple(frame[1:])

    def call(self, inputs):
        # Static sizes where known keep the graph's shapes static (and the reshapes free); tf.shape otherwise.
        dynamic = tf.shape(inputs)
        dims = [d if d is not None else dynamic[i] for i, d in enumerate(inputs.shape)]
        frames = super().call(tf.reshape(inputs, [-1] + dims[2:]))
        out = frames.shape
        dynamic_out = tf.shape(frames)
        return tf.reshape(frames, [-1, dims[1]] + [d if d is not None else dynamic_out[i]
                                                   for i, d in enumerate(out) if i > 0])

    def _config_3d(self, *keys):
        """This layer's config with a temporal extent of 1 prepended to the tuples `keys` (the 3D layer's)."""
        config = self.get_config()
        for key in keys:
            config[key] = (1,) + tuple(config[key])
        return config


@keras.saving.register_keras_serializable(package="kerasvid")
class FrameConv2D(_FrameWise, keras.layers.Conv2D):
    """`keras.layers.Conv2D` applied to every frame of a clip: a Conv3D with kernel `(1, kh, kw)`, computed in 2D.

    Args:
        Those of `keras.layers.Conv2D` (`filters`, `kernel_size`, `strides`, `padding`, `use_bias`,
        `kernel_initializer`, ...); `data_format` must be "channels_last" and `dilation_rate`/`groups` apply per
        frame.

    Call arguments:
        inputs: `[batch, T, H, W, C]`.

    Returns:
        `[batch, T, H', W', filters]`: `Conv3D(filters, (1, kh, kw), strides=(1, sh, sw), padding)` with the kernel
        `kernel[None]` (the kernel is stored as `(kh, kw, C, filters)`).

    Example:
    >>> conv = kerasvid.layers.FrameConv2D(8, 3, strides=2, padding="same")
    >>> conv(np.zeros((2, 4, 16, 16, 3), "float32")).shape
    TensorShape([2, 4, 8, 8, 8])
    """

    def to_3d(self):
        """The equivalent built `keras.layers.Conv3D` (kernel `(1, kh, kw, C, filters)`), holding this layer's
        weights: the form this layer replaces (for tests and benchmarks)."""
        layer = keras.layers.Conv3D.from_config(self._config_3d("kernel_size", "strides", "dilation_rate"))
        layer.build((None, None, None, None, self.kernel.shape[-2]))
        layer.set_weights([np.asarray(self.kernel)[None]] + ([np.asarray(self.bias)] if self.use_bias else []))
        return layer


class _FramePooling(_FrameWise):
    def to_3d(self):
        """The equivalent `keras.layers.{Max,Average}Pooling3D` with pool size and strides `(1, ...)`."""
        return self._POOLING_3D.from_config(self._config_3d("pool_size", "strides"))


# FrameMaxPooling2D and FrameAveragePooling2D share their docstring's shape on purpose: each is a public class that
# help() and the docs show on its own; the code they share is `_FramePooling`.
@keras.saving.register_keras_serializable(package="kerasvid")
class FrameMaxPooling2D(_FramePooling, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` applied to every frame of a clip: `MaxPooling3D((1, ph, pw), (1, sh, sw))`.

    Args:
        Those of `keras.layers.MaxPooling2D` (`pool_size`, `strides`, `padding`); channels-last only.

    Call arguments:
        inputs: `[batch, T, H, W, C]`.

    Returns:
        `[batch, T, H', W', C]`.

    Example:
    >>> pool = kerasvid.layers.FrameMaxPooling2D(3, strides=2, padding="same")
    >>> pool(np.zeros((2, 4, 16, 16, 3), "float32")).shape
    TensorShape([2, 4, 8, 8, 3])
    """

    _POOLING_3D = keras.layers.MaxPooling3D


@keras.saving.register_keras_serializable(package="kerasvid")
class FrameAveragePooling2D(_FramePooling, keras.layers.AveragePooling2D):
    """`keras.layers.AveragePooling2D` applied to every frame of a clip: `AveragePooling3D((1, ph, pw), (1, sh, sw))`.

    Args:
        Those of `keras.layers.AveragePooling2D` (`pool_size`, `strides`, `padding`); channels-last only.

    Call arguments:
        inputs: `[batch, T, H, W, C]`.

    Returns:
        `[batch, T, H', W', C]`.

    Example:
    >>> pool = kerasvid.layers.FrameAveragePooling2D(3, strides=1, padding="valid")
    >>> pool(np.zeros((2, 4, 16, 16, 3), "float32")).shape
    TensorShape([2, 4, 14, 14, 3])
    """

    _POOLING_3D = keras.layers.AveragePooling3D


def _is_frame_wise(size, strides):
    return int(size[0]) == 1 and int(strides[0]) == 1


def clip_conv(filters, kernel_size, strides=(1, 1, 1), **kwargs):
    """A convolution over clips: `FrameConv2D` when the temporal kernel size and stride are 1, else `Conv3D`.

    Args:
        filters: output channels.
        kernel_size: `(kt, kh, kw)`.
        strides: `(st, sh, sw)`.
        **kwargs: further `keras.layers.Conv3D` / `Conv2D` arguments (`padding`, `use_bias`, `name`, ...).

    Returns:
        An unbuilt layer taking `[batch, T, H, W, C]`; its kernel is `(kh, kw, C, filters)` for a `FrameConv2D`,
        `(kt, kh, kw, C, filters)` for a `Conv3D`.
    """
    kernel_size, strides = tuple(kernel_size), tuple(strides)
    if _is_frame_wise(kernel_size, strides):
        return FrameConv2D(filters, kernel_size[1:], strides=strides[1:], **kwargs)
    return keras.layers.Conv3D(filters, kernel_size, strides=strides, **kwargs)


def clip_pooling(kind, pool_size, strides, **kwargs):
    """A "max" or "average" pooling over clips: frame-wise 2D when the temporal pool size and stride are 1.

    Args:
        kind: "max" or "average".
        pool_size: `(pt, ph, pw)`.
        strides: `(st, sh, sw)`.
        **kwargs: further pooling arguments (`padding`, `name`, ...).

    Returns:
        `FrameMaxPooling2D` / `FrameAveragePooling2D`, or `MaxPooling3D` / `AveragePooling3D`.
    """
    if kind not in ("max", "average"):
        raise ValueError(f"`kind` must be 'max' or 'average', got kind={kind!r}")
    pool_size, strides = tuple(pool_size), tuple(strides)
    if _is_frame_wise(pool_size, strides):
        cls = FrameMaxPooling2D if kind == "max" else FrameAveragePooling2D
        return cls(pool_size[1:], strides=strides[1:], **kwargs)
    cls = keras.layers.MaxPooling3D if kind == "max" else keras.layers.AveragePooling3D
    return cls(pool_size, strides=strides, **kwargs)


def conv3d_form(model, keras_batch_norm=False):
    """A copy of `model` with every frame-wise layer replaced by its Conv3D / Pooling3D form (`to_3d()`), with the
    same weights: the layout kerasvid 0.1 built, for comparisons (tests, `benchmarks/peers.py`).

    Args:
        model: a built functional `keras.Model` (nested functional models are converted too).
        keras_batch_norm: also replace every `FusedBatchNormalization` by a `keras.layers.BatchNormalization` of
            the same config (0.1's layers, the composite computation).

    Returns:
        A new `keras.Model` computing the same function.
    """
    def clone(layer):
        if isinstance(layer, _FrameWise):
            return layer.to_3d()
        if keras_batch_norm and isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    # The clone walks the same layers in the same order (names repeat inside layers such as CPModule's "final_bn").
    pairs = list(zip(model._flatten_layers(include_self=False), copy._flatten_layers(include_self=False)))
    for source, layer in pairs:
        if source.name != layer.name:
            raise ValueError(f"conv3d_form: the copy's layer {layer.name!r} stands where {source.name!r} was")
        if not isinstance(source, (_FrameWise, keras.Model)) and source.weights:
            layer.set_weights(source.get_weights())
    return copy
